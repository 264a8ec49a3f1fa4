"""A shipped scenario's night through real processes on loopback, for the fault suite:

    NightSimulation (MQTT devices, serial devices on ptys) -> `warden agent` process
        -> private Mosquitto -> `warden gateway` process -> historian (SQLite, or the
           InfluxDB API of a real VictoriaMetrics) -> alerts read from the HTTP API

Time. Everything runs on the simulation's accelerated PausableClock: it publishes itself
to a file the two processes read (`--sim-clock`), and stands still while a fault is
injected (a real second of restarting must not be an hour of the night). The pipeline
lags an accelerated clock, so the rules must not judge the night's deadlines while it is
played: the gateway's `rules.allowed_lateness_seconds` is a day (its periodic ticks act on
clock - lateness). Two clock moves, with the clock paused, replace the demo's two
explicit ticks:

- before the night: the gateway starts on a clock standing at start + lateness, so its
  first periodic tick, the rules' first sight of time, lands exactly on the night's start
  (where patrol rounds and silence start counting); then the clock is set back to the
  start. Until the end every tick acts on a time before the night: nothing to judge.
- after the night, once every event is stored: the clock jumps to end + lateness, so the
  next tick judges the night at its end, on complete data.

A large lateness changes no verdict here: readings and taps are only held longer before
use (the water rule re-orders readings within it; nothing is "too late"), and the end
tick releases them all, as the demo's end tick does.

Counting. `ProducedEvents` puts what the devices really put on the wire through the
agent's own drivers, in-process: the ids of every event the agent must deliver. The
historian must hold each exactly once. Status events stored under ids the devices did not
produce are the agent's own (its heartbeats, its online/offline status): counted apart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.historian.points import Point, event_points, to_epoch_ns
from simulators.clock import PausableClock
from simulators.ground_truth import GroundTruthCheck, compare
from simulators.night import Interruption, NightSimulation
from simulators.replay import ProducedEvents
from simulators.scenario import load_scenario
from simulators.wiring import write_gateway_config, write_yaml
from tests.support.agent_process import AgentProcess, outbox_ids, outbox_rows
from tests.support.gateway_process import GatewayProcess
from tests.support.proxy import TcpProxy
from tests.support.victoria import VictoriaMetrics, find_binary
from tests.support.wait import wait_for
from warden.broker import MosquittoBroker, free_port
from warden.config import AgentConfig, BrokerConfig, load_config

log = logging.getLogger(__name__)

SCENARIO = os.environ.get("WARDEN_FAULT_SCENARIO", "fault-drill")
SPEED = float(os.environ.get("WARDEN_FAULT_SPEED", "6000"))  # simulated seconds per real second
LATENESS = timedelta(days=1)
WAIT = 60.0  # real seconds any one stage may take before the test fails

#: Where the historian keeps one event: its id (SQLite), or its series and millisecond
#: (VictoriaMetrics keeps no event id; its series are `<measurement>_<field>`).
Key = str | tuple[str, tuple[tuple[str, str], ...], int]


@dataclass(frozen=True)
class Step:
    """One part of a fault, run at a local time of the night with the clock paused."""

    at: time
    run: Callable[[Drill], None]


@dataclass
class Row:
    fault: str
    seed: int
    produced: int = 0
    stored: int = 0
    duplicates: int = 0
    lost: int = 0
    unexpected: int = 0  # stored device events the devices did not produce
    agent_own: int = 0  # the agent's heartbeats and status, not device events
    alerts_expected: int = 0
    alerts_found: int = 0
    check: GroundTruthCheck | None = None
    notes: list[str] = field(default_factory=list)


class Drill:
    """One night with one fault: build, `start()`, `play()`, `settle()`, `judge()`, `count()`."""

    def __init__(
        self, tmp: Path, steps: Sequence[Step], *, seed: int = 1, influx: bool = False, proxy: bool = False,
        unplug: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.seed = seed
        self.scenario = load_scenario(SCENARIO)
        if self.scenario.duration >= LATENESS:
            raise ValueError(f"{SCENARIO}: a night must be shorter than the drill's lateness ({LATENESS})")
        self.start_utc, self.end_utc = self.scenario.start_utc, self.scenario.end_utc
        self.notes: list[str] = []
        self.marks: dict[str, float] = {}  # real (monotonic) times a fault's steps share
        self.agents: list[AgentProcess] = []
        self.gateways: list[GatewayProcess] = []
        self.symlinks: dict[str, Path] = {}
        self._cleanup: list[Callable[[], object]] = []
        try:
            self._build(steps, influx, proxy, unplug)
        except BaseException:
            self.close()
            raise

    def _build(self, steps: Sequence[Step], influx: bool, proxy: bool, unplug: str | None) -> None:
        self.mosquitto = MosquittoBroker(workdir=self.tmp / "mosquitto")
        self._cleanup.append(self.mosquitto.stop)
        # Everyone reconnects within a fraction of a real second after a broker restart.
        self.broker = BrokerConfig(
            host=self.mosquitto.host, port=self.mosquitto.port, reconnect_min_seconds=0.05, reconnect_max_seconds=0.5
        )
        self.victoria: VictoriaMetrics | None = None
        if influx:
            binary = find_binary()
            if binary is None or not binary.exists():
                pytest.fail("victoria-metrics is not installed; the historian outage needs it", pytrace=False)
            (self.tmp / "victoria").mkdir()
            self.victoria = VictoriaMetrics(binary, self.tmp / "victoria")
            self.victoria.start()
            self._cleanup.append(self.victoria.stop)
        self.network = TcpProxy(self.mosquitto.host, self.mosquitto.port) if proxy else None
        if self.network is not None:
            self._cleanup.append(self.network.close)
        self.clock_file = self.tmp / "night.clock"
        self.clock = PausableClock(self.start_utc + LATENESS, speed=SPEED, publish=self.clock_file)
        interruptions = [
            Interruption(self.scenario.instant(step.at), f"{step.run.__name__} at {step.at:%H:%M}", lambda s=step: s.run(self))
            for step in steps
        ]  # fmt: skip
        self.simulation = NightSimulation(
            self.scenario, self.broker, self.clock, seed=self.seed, workdir=self.tmp / "devices", interruptions=interruptions
        )
        self._cleanup.append(self.simulation.close)
        self.produced = ProducedEvents(self.simulation.night, self.tmp / "mirror")
        self.simulation.on_wire = self.produced.add
        self.agent_config = self._write_agent_config(unplug)
        self.api_port = free_port()
        historian = self._influx() if self.victoria else {"type": "sqlite", "path": "history.db"}
        self.gateway_config = write_gateway_config(
            self.tmp / "gateway.yaml", self.scenario, self.broker, historian=historian, state_db="state.db",
            api_port=self.api_port, rules={"allowed_lateness_seconds": LATENESS.total_seconds()},
        )  # fmt: skip

    def _write_agent_config(self, unplug: str | None) -> Path:
        config: dict[str, Any] = self.simulation.agent_config(self.tmp / "outbox.db").model_dump(mode="json", exclude_none=True)
        if self.network is not None:  # the uplink through a network that can stop; devices straight to the broker
            config["device_broker"] = dict(config["broker"])
            config["broker"]["port"] = self.network.port
        for device in config["devices"]:
            if device["id"] == unplug:  # like /dev/serial/by-id/...: the name follows the adapter
                self.symlinks[unplug] = self.tmp / f"tty-{unplug}"
                self.symlinks[unplug].symlink_to(device["port"])
                device["port"] = str(self.symlinks[unplug])
        if unplug is not None and unplug not in self.symlinks:
            raise ValueError(f"{SCENARIO} has no serial device {unplug}")
        path = write_yaml(self.tmp / "agent.yaml", config)
        load_config(path, AgentConfig)  # fails here, not in the agent's log
        return path

    def _influx(self) -> dict[str, Any]:
        assert self.victoria is not None
        return {
            "type": "influxdb", "url": self.victoria.url, "token": "t", "org": "warden", "bucket": "warden",
            "spool_path": str(self.tmp / "influx-spool.db"),
            "flush_interval_ms": 100, "retry_interval_ms": 100, "max_retry_delay_ms": 1000, "timeout_ms": 2000,
        }  # fmt: skip

    # ----------------------------------------------------------------- processes

    @property
    def gateway(self) -> GatewayProcess:
        return self.gateways[-1]

    @property
    def agent(self) -> AgentProcess:
        return self.agents[-1]

    @property
    def serial_ports(self) -> int:
        return len(self.simulation.links)

    def start_gateway(self) -> GatewayProcess:
        sim_clock = ("--sim-clock", str(self.clock_file))
        self.gateways.append(GatewayProcess(self.gateway_config, self.api_port, self.tmp / "gateway.log", *sim_clock))
        return self.gateway

    def start_agent(self) -> AgentProcess:
        """Start the agent and return once it reads every serial port and MQTT topic."""
        self.agents.append(AgentProcess(self.agent_config, "--sim-clock", str(self.clock_file)))
        self.agent.wait_log("port open", count=self.serial_ports, timeout=WAIT)
        if self.simulation.night.topics:
            self.agent.wait_log("device topics subscribed", timeout=WAIT)
        return self.agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        for gateway in self.gateways:
            gateway.stop()
        for step in reversed(self._cleanup):
            step()

    # ----------------------------------------------------------------- the night

    def start(self) -> None:
        """Gateway first, its rules starting at the night's start; then the agent."""
        self.start_gateway()
        wait_for(lambda: self.gateway.last_tick() == self.start_utc, timeout=WAIT, what="the rules' first tick at the night's start")
        self.clock.jump(self.start_utc)
        self.start_agent()

    def play(self) -> None:
        self.clock.run()
        self.simulation.run()  # returns with the clock paused at the night's end

    def settle(self) -> None:
        """Until every produced event is stored and nothing is left to re-send."""
        wanted = self.produced.ids()
        wait_for(lambda: not self.unstored(wanted), timeout=WAIT, what="every produced event stored")
        wait_for(lambda: outbox_rows(self.tmp / "outbox.db") == 0, timeout=WAIT, what="the agent's outbox emptied")
        if self.victoria is not None:
            wait_for(lambda: self.gateway.health().get("historian", {}).get("points_pending") == 0,
                     timeout=WAIT, what="the historian spool drained")  # fmt: skip

    def judge(self) -> GroundTruthCheck:
        """Let the rules reach the night's end (see the module docstring), then compare
        the alerts the API lists with the scenario's ground truth."""
        self.clock.jump(self.end_utc + LATENESS)
        wait_for(lambda: self.gateway.last_tick() == self.end_utc, timeout=WAIT, what="the rules' tick at the night's end")
        truth = self.simulation.ground_truth()
        return compare(self.gateway.alerts(), [(a["rule"], a["subject"]) for a in truth["expected_alerts"]])

    # ----------------------------------------------------------------- what is where

    def wait_agent_read(self) -> None:
        """Until the agent has taken in everything the devices said so far (it is in its
        outbox or already stored): MQTT messages still at the broker for the agent's clean
        session, or bytes in a pty, are the devices' side, not the pipeline's."""
        wanted = self.produced.ids()
        wait_for(lambda: not (self.unstored(wanted) - self.queued()), timeout=WAIT, what="the agent reading every device")

    def queued(self) -> set[str]:
        """Event ids in the agent's outbox: taken in, not yet acknowledged by the broker."""
        return outbox_ids(self.tmp / "outbox.db")

    def unstored(self, ids: set[str]) -> set[str]:
        keys = self._keys()
        stored = self._stored_keys()
        return {i for i in ids if keys[i] not in stored}

    def count(self, fault: str, check: GroundTruthCheck) -> Row:
        """Produced, stored once, stored twice, lost, and what else the historian holds."""
        keys = self._keys()
        expected = Counter(keys.values())  # two events could share a VictoriaMetrics key
        stored = self._stored_keys()
        produced = set(keys)
        row = Row(fault, self.seed, produced=len(produced), check=check, notes=self.notes)
        row.stored = sum(1 for i in produced if stored[keys[i]] >= 1)
        row.lost = row.produced - row.stored
        row.duplicates = sum(max(0, stored[k] - n) for k, n in expected.items())
        others = [k for k in stored if k not in expected]
        status = self._status_keys(others)
        row.agent_own = sum(stored[k] for k in others if k in status)
        row.unexpected = sum(stored[k] for k in others if k not in status)
        row.alerts_expected, row.alerts_found = len(check.expected), len(check.found)
        return row

    def _keys(self) -> dict[str, Key]:
        points = event_points(list(self.produced.events.values()), self.scenario.site)
        if self.victoria is None:
            return {p.event_id: p.event_id for p in points}
        return {p.event_id: _series_key(p) for p in points}

    def _stored_keys(self) -> Counter[Key]:
        if self.victoria is not None:
            names = {key[0] for key in self._keys().values() if isinstance(key, tuple)} | {"device_status_count"}
            samples = self.victoria.samples(f'{{__name__=~"{"|".join(sorted(names))}",site="{self.scenario.site.id}"}}')
            return Counter((s.name, tuple(sorted(s.labels.items())), s.timestamp_ms) for s in samples)
        history = self.tmp / "history.db"
        if not history.exists():
            return Counter()
        db = sqlite3.connect(history, timeout=10)
        try:
            return Counter(event_id for (event_id,) in db.execute("SELECT event_id FROM points"))
        finally:
            db.close()

    def _status_keys(self, keys: list[Key]) -> set[Key]:
        """Of `keys`, those of device status points (heartbeats, online/offline)."""
        if self.victoria is not None:
            return {k for k in keys if isinstance(k, tuple) and k[0] == "device_status_count"}
        db = sqlite3.connect(self.tmp / "history.db", timeout=10)
        try:
            rows = db.execute("SELECT event_id FROM points WHERE measurement = 'device_status'")
            return {event_id for (event_id,) in rows} & set(keys)
        finally:
            db.close()

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.info("fault drill: %s", text)


def _series_key(point: Point) -> Key:
    """A point as VictoriaMetrics keeps it: `<measurement>_<field>`, the tags, the millisecond."""
    field_name = "value" if "value" in point.fields else "count"
    return (f"{point.measurement}_{field_name}", tuple(sorted(point.tags.items())), to_epoch_ns(point.time) // 1_000_000)

