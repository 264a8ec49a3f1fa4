"""`warden gateway` started as a user starts it, on a machine where things are not ready:
no broker reachable yet, the API port already taken, a guard token for no route."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.auth import hash_token
from simulators.broker import MosquittoBroker, free_port
from tests.support.agent_process import AgentProcess
from tests.support.scripts import console_script

SITE = {"id": "riverside", "timezone": "Europe/Berlin", "buildings": [{"id": "A", "rooms": [{"id": "A-101"}]}]}


def write_config(tmp_path: Path, broker_port: int, api_port: int = 0, **api: Any) -> Path:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(SITE))
    config = {
        "id": "gw-startup",
        "site_file": "site.yaml",
        # Fast retries, so the test sees several failed attempts within a second or two.
        "broker": {"host": "127.0.0.1", "port": broker_port, "reconnect_min_seconds": 0.05, "reconnect_max_seconds": 0.2},
        "historian": {"type": "sqlite", "path": "history.db"},
        "state_db": "state.db",
        "api": {"host": "127.0.0.1", "port": api_port, **api},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "gateway.yaml"


@pytest.fixture
def gateway_command() -> list[str]:
    return [console_script("warden"), "gateway"]


def test_an_unreachable_broker_is_logged_once_with_host_and_port_then_each_change(
    tmp_path: Path, gateway_command: list[str]
) -> None:
    port = free_port()  # bound and closed again: nothing listens there
    gateway = AgentProcess(write_config(tmp_path, port), "--log-level", "DEBUG", command=gateway_command)
    try:
        gateway.wait_log("MQTT broker still unreachable", count=3, timeout=60)  # three retries after the first failure
        warned = [line for line in gateway.lines if "WARNING" in line and "cannot reach the MQTT broker" in line]
        assert len(warned) == 1, gateway.lines
        assert "host=127.0.0.1" in warned[0] and f"port={port}" in warned[0]
        assert any("dashboard on http://127.0.0.1:" in line for line in gateway.lines)  # the banner names the dashboard at /

        broker = MosquittoBroker(port=port, workdir=tmp_path / "mosquitto")
        try:
            gateway.wait_log("MQTT broker connection back", timeout=60)
            [back] = [line for line in gateway.lines if "MQTT broker connection back" in line]
            assert "WARNING" in back and f"port={port}" in back and "was=unreachable" in back
        finally:
            assert gateway.terminate() == 0
            broker.stop()
    finally:
        gateway.stop()
    stopped = [line for line in gateway.lines if "gateway stopped" in line]
    assert stopped and "messages=0 " in stopped[0] + " "  # counters as integers, never 0.0


class CountingListener:
    """A TCP server socket that never answers: stands for a broker and tells afterwards
    how many connections were made to it (the kernel completes them without accept)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def connections(self) -> int:
        self.sock.setblocking(False)
        made = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return made
            conn.close()
            made += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_broker() -> Iterator[CountingListener]:
    listener = CountingListener()
    yield listener
    listener.close()


def test_a_taken_api_port_exits_2_with_one_line_before_any_broker_connection(
    tmp_path: Path, gateway_command: list[str], fake_broker: CountingListener
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        api_port = int(taken.getsockname()[1])
        done = subprocess.run(
            [*gateway_command, "--config", str(write_config(tmp_path, fake_broker.port, api_port))],
            capture_output=True, text=True, timeout=120, env={"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb", "PATH": ""},
        )  # fmt: skip
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert len(lines) == 1 and f"127.0.0.1:{api_port}" in lines[0] and lines[0].startswith("error:"), lines
    assert fake_broker.connections() == 0  # the running gateway's MQTT session was never touched


def test_a_guard_token_for_a_guard_no_route_names_is_warned_at_start(tmp_path: Path, gateway_command: list[str]) -> None:
    token = {"name": "night-guard", "role": "guard", "guard": "guard-nobody", "sha256": hash_token("secret-for-the-test")}
    config = write_config(tmp_path, free_port(), tokens=[token])
    gateway = AgentProcess(config, "--log-level", "WARNING", command=gateway_command)
    try:
        gateway.wait_log("guard token sees no patrol route", timeout=60)
        [line] = [line for line in gateway.lines if "guard token sees no patrol route" in line]
        assert "WARNING" in line and "token=night-guard" in line and "guard=guard-nobody" in line
    finally:
        gateway.terminate()
        gateway.stop()
