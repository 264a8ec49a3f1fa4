"""An MQTT broker on a free loopback port, for the demo and the tests.

Mosquitto when it is installed (the broker real sites run); otherwise amqtt, a pure-Python
broker from PyPI (`pip install warden[embedded]`), so the demo needs no server set up by hand.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

from warden.process import terminate

log = logging.getLogger(__name__)

_SBIN_DIRS = "/usr/sbin:/usr/local/sbin:/sbin"


class Broker(Protocol):
    host: str
    port: int

    def stop(self) -> None: ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until a TCP server accepts on host:port, or raise TimeoutError. The pause
    between tries grows from 2 ms to 50 ms: Mosquitto listens within a few milliseconds of
    its start, and the suite starts brokers hundreds of times."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout}s") from None
            time.sleep(pause)  # polling a port: there is no event to wait on
            pause = min(2 * pause, 0.05)


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=_SBIN_DIRS)


class MosquittoBroker:
    """A private Mosquitto process; `restart()` keeps its port and persistence file."""

    def __init__(self, port: int | None = None, workdir: Path | None = None, extra_config: str = "", *, no_delay: bool = True) -> None:
        """`no_delay`: TCP_NODELAY on the clients' sockets, as deploy/mosquitto.conf sets it
        (False only for bench/burst.py's baseline)."""
        binary = find_mosquitto()
        if binary is None:
            raise FileNotFoundError("mosquitto not found on PATH or in /usr/sbin (apt-get install mosquitto)")
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="warden-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            # As root Mosquitto would switch to user "mosquitto", who cannot write our folder.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            f"set_tcp_nodelay {'true' if no_delay else 'false'}\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            + extra_config
        )
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.host, self.port)
        except TimeoutError:
            self._process.kill()
            _, err = self._process.communicate()
            raise RuntimeError(f"mosquitto did not start: {err.decode(errors='replace')}") from None
        log.info("mosquitto started", extra={"port": self.port, "pid": self._process.pid})

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, timeout=10)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class AmqttBroker:
    """amqtt running its asyncio loop in a daemon thread."""

    def __init__(self, port: int | None = None) -> None:
        from amqtt.broker import Broker as _AmqttBroker  # optional dependency

        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._thread.start()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def _start() -> _AmqttBroker:
            broker = _AmqttBroker(config)
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout=10)
        wait_for_port(self.host, self.port)
        log.info("amqtt broker started", extra={"port": self.port})

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def start_embedded_broker(prefer: str = "auto") -> Broker:
    """Mosquitto if found, else amqtt; `prefer` may force "mosquitto" or "amqtt"."""
    if prefer == "amqtt" or (prefer == "auto" and find_mosquitto() is None):
        return AmqttBroker()
    return MosquittoBroker()
