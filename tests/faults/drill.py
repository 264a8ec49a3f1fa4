"""A shipped scenario's night through real processes on loopback, for the fault suite:

    NightSimulation (MQTT devices, serial devices on ptys) -> `warden agent` process
        -> private Mosquitto -> `warden gateway` process -> historian (SQLite, or the
           InfluxDB API of a real VictoriaMetrics) -> alerts read from the HTTP API

Time. The devices and the agent run on the simulation's accelerated PausableClock: it
publishes itself to a file the agent reads (`--sim-clock`), and stands still while a
fault is injected (a real second of restarting must not be an hour of the night).

The gateway is judged live, with the scenario's normal allowed lateness: it reads a second
clock, the *rules clock*, which the drill moves every `LIVE_STEP` of simulated time with
the night's clock paused, once the gateway has taken in everything the devices produced
so far (unless a fault is under way: then nothing is awaited, as nothing would be on a
real site). The gateway ticks every few real milliseconds on that clock, so the rules
act on time exactly as a live gateway whose pipeline keeps up, and what it pages while a
broker, a historian, a gateway or an agent is down is what a live gateway would page.
Every alert the gateway opened (from the API, resolved ones included) is compared with
the ground truth: an alert the truth does not name is a false page, even if withdrawn.

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
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from gateway.historian.points import Point, event_points, to_epoch_ns
from simulators.broker import MosquittoBroker, free_port
from simulators.catalogue import load_scenario
from simulators.clock import PausableClock
from simulators.ground_truth import GroundTruthCheck, compare_history
from simulators.night import Interruption, NightSimulation
from simulators.replay import ProducedEvents
from simulators.wiring import write_gateway_config, write_yaml
from tests.support.agent_process import AgentProcess, outbox_ids, outbox_rows
from tests.support.gateway_process import GatewayProcess
from tests.support.proxy import TcpProxy
from tests.support.victoria import VictoriaMetrics, find_binary
from tests.support.wait import wait_for
from warden.config import BrokerConfig, load_config

log = logging.getLogger(__name__)

SCENARIO = os.environ.get("WARDEN_FAULT_SCENARIO", "fault-drill")
SPEED = float(os.environ.get("WARDEN_FAULT_SPEED", "6000"))  # simulated seconds per real second
LIVE_STEP = timedelta(minutes=float(os.environ.get("WARDEN_FAULT_TICK_MINUTES", "10")))
TICK_SECONDS = 0.02  # the gateway's real tick interval: a moved rules clock is acted on at once
WAIT = 60.0  # real seconds any one stage may take before the test fails
#: The agent's `ack_timeout_seconds` (real seconds): what the gateway has not confirmed is
#: sent again after this long (agent/uplink.py), doubling while nothing is confirmed.
#: "off": rows go on the broker's PUBACK, as before issue 17 (to see the delivery rows fail).
_ACK = os.environ.get("WARDEN_FAULT_ACK_TIMEOUT", "1")
ACK_TIMEOUT = None if _ACK == "off" else float(_ACK)

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
    pages_during_fault: list[str] = field(default_factory=list)  # rule/subject opened while a fault was under way
    check: GroundTruthCheck | None = None
    notes: list[str] = field(default_factory=list)


class Drill:
    """One night with one fault: build, `start()`, `play()`, `settle()`, `judge()`, `count()`."""

    def __init__(
        self, tmp: Path, steps: Sequence[Step], *, seed: int = 1, influx: bool = False, proxy: bool = False,
        unplug: str | None = None, late_gateway: bool = False,
    ) -> None:
        self.tmp = tmp
        self.seed = seed
        self.scenario = load_scenario(SCENARIO)
        self.start_utc, self.end_utc = self.scenario.start_utc, self.scenario.end_utc
        self.lateness = timedelta(seconds=self.scenario.rules.allowed_lateness_seconds)
        self.faulty = False  # a fault is under way: the pipeline is not expected to keep up
        self.gateway_alive = False  # a gateway process is there to tick (not frozen, not dead)
        self.late_gateway = late_gateway  # the agent starts first; a step starts the gateway
        #: While set, a gateway that is not alive does not see the rules clock move: events
        #: only the agent holds come back after its ack timeout, seconds of real time that
        #: are hours of this accelerated night but within the allowed lateness on a site.
        self.hold_rules = False
        self.held_tick: datetime | None = None  # the live tick held back meanwhile
        self.fault_window: tuple[datetime, datetime] | None = None  # first and last step, simulated
        self.history: list[dict[str, Any]] = []  # every alert opened, once judged
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
        self.clock = PausableClock(self.start_utc, speed=SPEED, publish=self.clock_file)
        # Standing still but for the drill's moves; its first tick lands on the night's start.
        self.rules_clock_file = self.tmp / "rules.clock"
        self.rules_clock = PausableClock(self.start_utc + self.lateness, speed=SPEED, publish=self.rules_clock_file)
        interruptions = [
            Interruption(self.scenario.instant(step.at), f"{step.run.__name__} at {step.at:%H:%M}", lambda s=step: s.run(self))
            for step in steps
        ]  # fmt: skip
        if steps:
            at = [self.scenario.instant(step.at) for step in steps]
            self.fault_window = (min(at), max(at))
        live = int((self.end_utc - self.start_utc) / LIVE_STEP)
        ticks = [self.start_utc + n * LIVE_STEP for n in range(1, live + 1)]
        interruptions += [Interruption(at, "live tick", lambda at=at: self.live_tick(at)) for at in ticks]
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
            api_port=self.api_port, rules={"tick_seconds": TICK_SECONDS},
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
        config["ack_timeout_seconds"] = ACK_TIMEOUT
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
        sim_clock = ("--sim-clock", str(self.rules_clock_file))
        self.gateways.append(GatewayProcess(self.gateway_config, self.api_port, self.tmp / "gateway.log", *sim_clock))
        self.gateway_alive = True
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
        """Gateway first, its rules starting at the night's start; then the agent. With
        `late_gateway`, only the agent: a step starts the gateway (`first_gateway_start`)."""
        if self.late_gateway:
            self.faulty, self.hold_rules = True, True
            self.start_agent()
            return
        self.first_gateway_start()
        self.start_agent()

    def first_gateway_start(self) -> None:
        self.start_gateway()
        wait_for(lambda: self.gateway.last_tick() == self.start_utc, timeout=WAIT, what="the rules' first tick at the night's start")

    def catch_up_held(self) -> None:
        """The gateway is back: once it has taken in every event produced so far (the
        agent re-sends what it never confirmed), the rules clock moves to the live tick
        held back meanwhile."""
        wanted = self.produced.ids()
        wait_for(lambda: not wanted - self.taken_in(wanted), timeout=WAIT, what="the gateway taking in what only the agent held")
        self.hold_rules, self.faulty, self.gateway_alive = False, False, True
        if self.held_tick is not None:
            self._move_rules_clock(self.held_tick)
            self.held_tick = None

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

    def judge(self, fault_pages: Sequence[tuple[str, str, str]] = ()) -> GroundTruthCheck:
        """Let the rules reach the night's end on complete data, then compare every alert
        the gateway opened during the night with the scenario's ground truth and the
        pages the fault itself may cause (rule, subject, why)."""
        self._move_rules_clock(self.end_utc + self.lateness)
        truth = self.simulation.ground_truth()
        # Allowed, not required: whether the page comes depends on where the agent's last
        # heartbeat fell against the live ticks, as it would on a real site.
        truth["expected_alerts"] += [
            {"rule": rule, "subject": subject, "why": why, "borderline": True} for rule, subject, why in fault_pages
        ]
        self.history = self.alert_history()
        return compare_history(self.history, truth)

    def alert_history(self) -> list[dict[str, Any]]:
        """Every alert the gateway opened, in the demo's alert-history.json form."""
        history = []
        for alert in sorted(self.gateway.alerts(), key=lambda a: a["id"]):
            changes = [{"action": h["action"], "at": h["at"], "message": h["message"]} for h in self.gateway.alert(alert["id"])["history"]]
            history.append({**{k: alert[k] for k in ("id", "rule", "subject", "severity", "state", "opened_at", "message", "details")},
                            "raised_at": alert.get("raised_at"), "changes": changes})  # fmt: skip
        return history

    def pages_during_fault(self, history: list[dict[str, Any]]) -> list[str]:
        """Alerts opened (on the gateway's clock) between the fault's first step and one live step after its last."""
        if self.fault_window is None:
            return []
        start, end = self.fault_window[0], self.fault_window[1] + LIVE_STEP
        return [f"{a['rule']} {a['subject']}" for a in history
                if a.get("raised_at") and start <= datetime.fromisoformat(a["raised_at"]) <= end]  # fmt: skip

    def live_tick(self, at: datetime) -> None:
        """The rules clock moves to `at` (every emission before it is out; the night's
        clock may stand past it) once the gateway has taken in what the devices sent."""
        if not self.faulty:
            wanted = self.produced.ids()
            wait_for(lambda: not wanted - self.taken_in(wanted), timeout=WAIT, what="the gateway taking in every produced event")
        if self.gateway_alive:
            self._move_rules_clock(at)
        elif self.hold_rules:
            self.held_tick = at
        else:
            self.rules_clock.jump(at)  # a dead or frozen gateway reads it when it is back

    def _move_rules_clock(self, to: datetime) -> None:
        self.rules_clock.jump(to)
        tick = to - self.lateness
        wait_for(lambda: (self.gateway.last_tick() or tick) >= tick, timeout=WAIT, what=f"the rules' tick at {tick.isoformat()}")

    def taken_in(self, ids: set[str]) -> set[str]:
        """Of `ids`, those the gateway has committed (its seen-event tables)."""
        path = self.tmp / "state.db"
        if not path.exists():
            return set()
        db = sqlite3.connect(path, timeout=10)
        try:
            found: set[str] = set()
            for table in ("seen_events", "seen_events_previous"):
                found |= {i for (i,) in db.execute(f"SELECT id FROM {table}")} & ids
            return found
        finally:
            db.close()

    # ----------------------------------------------------------------- what is where

    def wait_agent_read(self) -> None:
        """Until the agent has taken in everything the devices said so far (it is in its
        outbox or already stored): MQTT messages still at the broker for the agent's clean
        session, or bytes in a pty, are the devices' side, not the pipeline's."""
        wanted = self.produced.ids()
        wait_for(lambda: not (self.unstored(wanted) - self.queued()), timeout=WAIT, what="the agent reading every device")

    def queued(self) -> set[str]:
        """Event ids in the agent's outbox: taken in, not yet confirmed by the gateway."""
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
        row.pages_during_fault = self.pages_during_fault(self.history)
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

