"""The fault suite (issue 9): one short stream of patrol taps, written by a simulated
reader on a pseudo-terminal, read by a real `warden agent` process, published to a
private Mosquitto, ingested by a real `warden gateway` process and stored by its
historian. One fault is injected mid-stream per test; at the end every tap the device
produced must be stored exactly once (count per event id == 1).

Faults: broker restart, historian (VictoriaMetrics) outage, gateway kill -9 and
restart, agent kill -9 and restart, serial port unplugged and back.

A serial line has no acknowledgement: what the reader writes while nobody has the
port open is lost at the device side (pyserial also clears the input buffer on open).
So "produced" counts the taps written while the agent had the port open; taps written
while unplugged are reported apart and never asserted on.

`WARDEN_FAULT_EVENTS` (default 60) sets the taps per fault, for a longer run.
The table of results is printed when the module finishes (docs/faults.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from simulators.patrol_reader import PatrolReaderSim
from tests.support.agent_process import AgentProcess, outbox_rows, warden_command
from tests.support.proxy import TcpProxy
from tests.support.victoria import VictoriaMetrics, find_binary
from tests.support.wait import wait_for
from warden.broker import MosquittoBroker, free_port
from warden.events import stable_event_id

SITE_ID = "riverside"
DEVICE = "reader-1"
READER = "R01"
EVENTS = int(os.environ.get("WARDEN_FAULT_EVENTS", "60"))
if EVENTS < 6:
    raise ValueError("WARDEN_FAULT_EVENTS must be at least 6")
WAIT = 30.0 + EVENTS / 20  # seconds for a whole phase to land; grows with a longer run
UNPLUGGED_TAPS = 3  # written while the port is unplugged: lost at the device by nature

SITE = {
    "id": SITE_ID,
    "timezone": "Europe/Berlin",
    "buildings": [{"id": "A", "rooms": [{"id": "A-hall", "devices": [DEVICE]}]}],
}

# Tap n happens at BASE + n s: each tap has its own second (VictoriaMetrics keys on time),
# all in the past so the gateway's real clock never finds one in the future.
BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=EVENTS + 600)


def tap_time(n: int) -> datetime:
    return BASE + timedelta(seconds=n)


def tap_id(n: int) -> str:
    return stable_event_id(SITE_ID, DEVICE, "tap", READER, n, tap_time(n).isoformat())


ID_OF_MS = {int(tap_time(n).timestamp() * 1000): tap_id(n) for n in range(EVENTS)}


@dataclass
class Row:
    fault: str
    produced: int = 0
    stored: int = 0
    duplicates: int = 0
    lost: int = 0
    unexpected: int = 0
    note: str = ""
    alerts: str = "n/a (taps, no route)"


RESULTS: list[Row] = []


def format_table(rows: list[Row]) -> list[str]:
    header = ("fault", "produced", "stored", "duplicates", "lost", "alerts exp/found", "note")
    body = [(r.fault, str(r.produced), str(r.stored), str(r.duplicates), str(r.lost), r.alerts, r.note) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |"  # noqa: E731
    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)]


@pytest.fixture(scope="module", autouse=True)
def fault_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lines = [f"fault suite: {EVENTS} taps per fault (WARDEN_FAULT_EVENTS)", *format_table(RESULTS)]
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    for line in ["", *lines]:
        reporter.write_line(line) if reporter else print(line)


# --------------------------------------------------------------------------- processes


class GatewayProcess:
    def __init__(self, config: Path, api_port: int, log: Path) -> None:
        self.api_port = api_port
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [*warden_command(), "gateway", "--config", str(config), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip
        wait_for(lambda: self._alive() and bool(self.health().get("connected")), timeout=30, what="gateway connected")

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited with {self.process.returncode}; see {self._log.name}")
        return True

    def health(self) -> dict:
        try:
            return httpx.get(f"http://127.0.0.1:{self.api_port}/api/health", timeout=1).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Rig:
    """reader (pty behind a symlink) -> agent process -> Mosquitto -> gateway process -> historian."""

    def __init__(self, tmp_path: Path, fault: str, *, influx: bool = False, proxy: bool = False) -> None:
        self.tmp = tmp_path
        self.fault = fault
        self.produced: set[str] = set()
        self.unplugged: set[str] = set()
        self.cleanup: list[Callable[[], object]] = []
        self.agents: list[AgentProcess] = []
        self.gateways: list[GatewayProcess] = []
        try:
            self._build(tmp_path, influx, proxy)
        except BaseException:
            self.close()
            raise

    def _build(self, tmp_path: Path, influx: bool, proxy: bool) -> None:
        self.mosquitto = MosquittoBroker(workdir=tmp_path / "mosquitto")
        self.cleanup.append(self.mosquitto.stop)
        self.victoria: VictoriaMetrics | None = None
        if influx:
            binary = find_binary()
            if binary is None or not binary.exists():
                pytest.fail("victoria-metrics is not installed; the historian outage needs it", pytrace=False)
            (tmp_path / "victoria").mkdir()
            self.victoria = VictoriaMetrics(binary, tmp_path / "victoria")
            self.victoria.start()
            self.cleanup.append(self.victoria.stop)
        self.network: TcpProxy | None = None
        agent_port = self.mosquitto.port
        if proxy:
            self.network = TcpProxy(self.mosquitto.host, self.mosquitto.port)
            self.cleanup.append(self.network.close)
            agent_port = self.network.port
        self.reader = PatrolReaderSim(READER)
        self.cleanup.append(lambda: self.reader.close())
        self.link = tmp_path / "ttyPATROL"  # like /dev/serial/by-id/...: follows the adapter
        self.link.symlink_to(self.reader.port)
        self.agent_config = self._write_agent_config(agent_port)
        self.gateway_config, self.api_port = self._write_gateway_config()

    # -- configs
    def _write_agent_config(self, port: int) -> Path:
        config = {
            "id": "agent-a",
            "site": SITE_ID,
            "broker": {"host": "127.0.0.1", "port": port, "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 1},
            "buffer_path": "outbox.db",
            "heartbeat_seconds": 3600,
            "devices": [{"driver": "patrol_line", "id": DEVICE, "port": str(self.link), "reconnect_seconds": 0.2}],
        }
        path = self.tmp / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _write_gateway_config(self) -> tuple[Path, int]:
        (self.tmp / "site.yaml").write_text(yaml.safe_dump(SITE))
        if self.victoria is not None:
            historian = {
                "type": "influxdb", "url": self.victoria.url, "token": "t", "org": "warden", "bucket": "warden",
                "spool_path": str(self.tmp / "influx-spool.db"),
                "flush_interval_ms": 100, "retry_interval_ms": 100, "max_retry_delay_ms": 1000, "timeout_ms": 2000,
            }  # fmt: skip
        else:
            historian = {"type": "sqlite", "path": str(self.tmp / "history.db")}
        api_port = free_port()
        config = {
            "id": f"gw-{self.fault}",
            "site_file": str(self.tmp / "site.yaml"),
            "broker": {"host": self.mosquitto.host, "port": self.mosquitto.port},
            "historian": historian,
            "state_db": str(self.tmp / "state.db"),
            "api": {"host": "127.0.0.1", "port": api_port},
        }
        path = self.tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        return path, api_port

    # -- processes
    def start_gateway(self) -> GatewayProcess:
        gateway = GatewayProcess(self.gateway_config, self.api_port, self.tmp / "gateway.log")
        self.gateways.append(gateway)
        return gateway

    def start_agent(self) -> AgentProcess:
        agent = AgentProcess(self.agent_config)
        self.agents.append(agent)
        agent.wait_log("port open")
        return agent

    @property
    def gateway(self) -> GatewayProcess:
        return self.gateways[-1]

    @property
    def agent(self) -> AgentProcess:
        return self.agents[-1]

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        for gateway in self.gateways:
            gateway.stop()
        for step in reversed(self.cleanup):
            step()

    # -- the stream
    def tap(self, numbers: range, *, produced: bool = True) -> None:
        for n in numbers:
            assert self.reader.seq == n
            self.reader.tap(f"cp-{n % 12}", "guard-lee", tap_time(n))
            (self.produced if produced else self.unplugged).add(tap_id(n))

    def stored(self) -> Counter[str]:
        """Count per event id of the taps in the historian."""
        if self.victoria is not None:
            samples = self.victoria.samples(f'{{__name__="patrol_tap_count",site="{SITE_ID}"}}')
            return Counter(ID_OF_MS.get(s.timestamp_ms, f"unknown@{s.timestamp_ms}") for s in samples)
        history = self.tmp / "history.db"
        if not history.exists():
            return Counter()
        db = sqlite3.connect(history, timeout=10)
        try:
            return Counter(row[0] for row in db.execute("SELECT event_id FROM points WHERE measurement = 'patrol_tap'"))
        finally:
            db.close()

    def wait_stored(self, at_least: int) -> None:
        wait_for(lambda: len(self.stored().keys() & self.produced) >= at_least, timeout=WAIT, what=f"{at_least} taps stored")

    def settle_and_check(self) -> Row:
        """Wait for every produced tap, and for the agent's outbox to be empty (nothing left to
        re-send), then count: every produced id exactly once, nothing else."""
        wait_for(lambda: self.produced <= self.stored().keys(), timeout=WAIT, what="every produced tap stored")
        wait_for(lambda: outbox_rows(self.tmp / "outbox.db") == 0, timeout=WAIT, what="the agent's outbox emptied")
        if self.victoria is not None:
            wait_for(lambda: self.gateway.health().get("historian", {}).get("points_pending") == 0,
                     timeout=WAIT, what="the historian spool drained")  # fmt: skip
        counts = self.stored()
        row = Row(
            self.fault,
            produced=len(self.produced),
            stored=len(counts.keys() & self.produced),
            duplicates=sum(c - 1 for c in counts.values() if c > 1),
            lost=len(self.produced - counts.keys()),
            unexpected=len(counts.keys() - self.produced - self.unplugged),
        )
        if self.unplugged:
            row.note = f"{len(self.unplugged)} written while unplugged (lost at the device), {len(counts.keys() & self.unplugged)} stored"
        return row


# --------------------------------------------------------------------------- faults
# Each runs phase 1 (taps 0..a), injects its fault mid-stream, and finishes the stream.


def broker_restart(rig: Rig, a: int, b: int) -> None:
    rig.tap(range(0, a))
    rig.wait_stored(1)  # the stream is flowing ...
    rig.mosquitto.restart()  # ... when the broker goes (persistence keeps sessions and queues)
    rig.tap(range(a, b))  # read while the agent reconnects: kept in its outbox


def historian_outage(rig: Rig, a: int, b: int) -> None:
    assert rig.victoria is not None
    rig.tap(range(0, a))
    rig.wait_stored(a)
    rig.victoria.stop()  # a real outage: the server process is gone
    rig.tap(range(a, b))

    def down_a_while() -> bool:
        stats = rig.gateway.health().get("historian", {})
        return (stats.get("points_pending", 0) >= b - a and stats.get("failed_attempts", 0) >= 3
                and stats.get("oldest_pending_age_seconds", 0) >= 3)  # fmt: skip

    wait_for(down_a_while, timeout=WAIT, what="taps spooled and the historian down for a few seconds")
    rig.victoria.start()  # same port, same data


def gateway_kill(rig: Rig, a: int, b: int) -> None:
    rig.tap(range(0, a))
    rig.wait_stored(1)
    assert rig.gateway.kill() == -9  # mid-stream: messages in flight, some unacknowledged
    rig.tap(range(a, b))  # the broker queues them for the gateway's persistent session
    wait_for(lambda: outbox_rows(rig.tmp / "outbox.db") == 0, timeout=WAIT, what="the broker holding phase 2")
    rig.start_gateway()


def agent_kill(rig: Rig, a: int, b: int) -> None:
    assert rig.network is not None
    rig.tap(range(0, a))
    rig.wait_stored(a)
    rig.network.pause()  # PUBLISHes leave the agent, no PUBACK comes back
    rig.tap(range(a, b))
    wait_for(lambda: outbox_rows(rig.tmp / "outbox.db") == b - a, timeout=WAIT, what="phase 2 read and on disk")
    assert rig.agent.kill() == -9  # with everything of phase 2 unacknowledged
    rig.network.resume()  # what was stuck in the network arrives too: duplicates on the wire
    rig.start_agent()  # waits for "port open": the port is read again


def serial_unplug(rig: Rig, a: int, b: int) -> None:
    rig.tap(range(0, a))
    rig.wait_stored(a)  # what the agent read before the plug is pulled
    rig.reader.close()  # the USB adapter is pulled
    rig.agent.wait_log("cannot read port", timeout=WAIT)  # the agent saw the line go
    rig.reader = PatrolReaderSim(READER, first_seq=a)  # ... and plugged in again (seq goes on)
    rig.tap(range(a, a + UNPLUGGED_TAPS), produced=False)  # nobody has this port open yet
    staging = rig.tmp / "next"
    staging.symlink_to(rig.reader.port)
    os.replace(staging, rig.link)
    rig.agent.wait_log("port open", count=2, timeout=WAIT)
    rig.tap(range(a + UNPLUGGED_TAPS, b))


FAULTS: dict[str, tuple[Callable[[Rig, int, int], None], dict[str, bool]]] = {
    "broker restart": (broker_restart, {}),
    "historian outage": (historian_outage, {"influx": True}),
    "gateway kill -9": (gateway_kill, {}),
    "agent kill -9": (agent_kill, {"proxy": True}),
    "serial unplug": (serial_unplug, {}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_produced_event_is_stored_exactly_once(fault: str, tmp_path: Path) -> None:
    inject, options = FAULTS[fault]
    rig = Rig(tmp_path, fault.replace(" ", "-").replace("-9", "9"), **options)
    a, b = EVENTS // 3, 2 * EVENTS // 3
    try:
        rig.start_gateway()
        rig.start_agent()
        inject(rig, a, b)
        rig.tap(range(b, EVENTS))  # phase 3, after the fault
        row = rig.settle_and_check()
    finally:
        rig.close()
    row.fault = fault
    RESULTS.append(row)
    assert (row.lost, row.duplicates, row.unexpected) == (0, 0, 0), row
    assert row.stored == row.produced > 0
