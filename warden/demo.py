"""`warden demo`: a whole simulated night, end to end, with nothing installed by hand.

Simulated devices -> (pseudo-terminals, TCP device servers, Modbus RTU, MQTT, spool
folders) -> the real agent -> MQTT broker -> the real gateway (validation, SQLite
historian, rules, alert store) -> HTTP API. The demo reads the alerts back through the
API, like any client, compares them with the scenario's ground truth, and writes both to
the output folder with the configuration files it generated.

The pipeline lags an accelerated clock by hours of simulated time, so the rules are not
ticked by it: they are ticked at the start of the night and, once every event is stored,
at its end. Everything the agent queued is known (by event id), so "every event is
stored" is checked exactly, not guessed from a quiet period.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from agent.drivers.modbus_rtu import ModbusRtuDriver
from agent.drivers.patrol_line import PatrolLineDriver
from agent.drivers.patrol_wand import PatrolWandDriver
from agent.outbox import Stored
from agent.runner import Agent
from gateway.api import ApiServer, create_app
from gateway.service import Gateway
from simulators.clock import PausableClock
from simulators.ground_truth import GroundTruthCheck, compare, write_ground_truth
from simulators.night import NightSimulation, SimulationTotals, pending_devices
from simulators.scenario import Scenario
from simulators.wiring import write_gateway_config, write_yaml
from warden.broker import MosquittoBroker, start_embedded_broker
from warden.config import AgentConfig, BrokerConfig, GatewayConfig, SiteConfig, load_config
from warden.events import Event
from warden.report import write_morning_report

log = logging.getLogger(__name__)

#: Real seconds to wait for each stage (connections, delivery) before giving up.
STAGE_TIMEOUT = 60.0


@dataclass(frozen=True)
class DemoResult:
    totals: SimulationTotals
    alerts: list[dict[str, Any]]
    gateway_counts: dict[str, float]
    out_dir: Path
    check: GroundTruthCheck
    ground_truth: dict[str, Any]
    report: Path  # the morning report's HTML page


def run_demo(
    scenario: Scenario,
    out_dir: Path,
    *,
    speed: float = 2400.0,
    seed: int = 1,
    broker_kind: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> DemoResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    broker = start_embedded_broker(broker_kind)
    # The pipeline reconnects within a fraction of a real second after a broker restart.
    broker_config = BrokerConfig(host=broker.host, port=broker.port, reconnect_min_seconds=0.05, reconnect_max_seconds=0.5)
    clock = PausableClock(scenario.start_utc, speed=speed)
    outage = _BrokerOutage(broker) if isinstance(broker, MosquittoBroker) else None
    simulation = NightSimulation(scenario, broker_config, clock, seed=seed, workdir=out_dir / "devices", outage=outage)
    gateway = agent = api = None
    try:
        site, gateway_config, agent_config = _write_configs(scenario, simulation, broker_config, out_dir)
        gateway = Gateway(gateway_config, site, clock, tick_every=None)
        gateway.start()
        api = ApiServer(create_app(gateway), gateway_config.api.host, gateway_config.api.port)
        api.start()
        agent = Agent(agent_config, clock)
        queued = _QueuedIds(agent)
        agent.start()
        if outage is not None:
            outage.attach(agent, gateway)
        _wait_ready(gateway, agent)
        _tick(gateway, scenario.start_utc)  # the rules' first sight of time: the night starts here
        clock.run()
        totals = simulation.run(progress)
        clock.pause()  # the night is over: no poll, scan or heartbeat beyond it while the agent catches up
        _final_reads(agent, clock.now())
        _wait_for(lambda: not pending_devices(agent.drivers, totals.handled), "the agent to read every device")
        _wait_stored(gateway, queued)
        _tick(gateway, scenario.end_utc)  # with every event in, the night's deadlines are judged on complete data
        alerts = httpx.get(f"{api.url}/api/alerts", params={"limit": 5000}, timeout=10).raise_for_status().json()
        truth = simulation.ground_truth()
        check = compare(alerts, [(a["rule"], a["subject"]) for a in truth["expected_alerts"]])
        (out_dir / "alerts.json").write_text(json.dumps(alerts, indent=2))
        write_ground_truth(out_dir / "ground-truth.json", truth)
        (out_dir / "ground-truth-check.json").write_text(json.dumps(check.as_dict(), indent=2) + "\n")
        report = write_morning_report(
            gateway_config.state_db, gateway.historian, site, scenario.local(scenario.start).date(),
            out_dir / "report", rules=gateway_config.rules,
        )
        return DemoResult(totals, alerts, gateway.counts(), out_dir, check, truth, report.html)
    finally:
        for part in (agent, api, gateway):
            if part is not None:
                part.stop()
        simulation.close()
        broker.stop()


def _write_configs(
    scenario: Scenario, simulation: NightSimulation, broker: BrokerConfig, out_dir: Path
) -> tuple[SiteConfig, GatewayConfig, AgentConfig]:
    """Write the configuration a real installation would have, then load it back through
    the same validation `warden agent` and `warden gateway` use."""
    data = out_dir / "data"
    for name in ("history.db", "state.db", "agent-outbox.db"):
        for stale in data.glob(f"{name}*"):
            stale.unlink()  # a fresh night each run
    write_gateway_config(out_dir / "gateway.yaml", scenario, broker, historian={"type": "sqlite", "path": "data/history.db"})
    agent = simulation.agent_config(Path("data/agent-outbox.db"))
    write_yaml(out_dir / "agent.yaml", agent.model_dump(mode="json", exclude_none=True))
    gateway_config = load_config(out_dir / "gateway.yaml", GatewayConfig)
    site = load_config(gateway_config.site_file, SiteConfig)
    return site, gateway_config, load_config(out_dir / "agent.yaml", AgentConfig)


class _QueuedIds:
    """Every event id the agent puts in its outbox: the demo waits until the gateway has
    stored exactly these, instead of guessing from a quiet period."""

    def __init__(self, agent: Agent) -> None:
        self._ids: list[str] = []
        self._lock = threading.Lock()
        submit = agent.outbox.submit  # every event goes through it, put() included

        def recording_submit(topic: str, event: Event, on_stored: Stored | None = None) -> int:
            with self._lock:
                self._ids.append(event.id)
            return submit(topic, event, on_stored)

        agent.outbox.submit = recording_submit  # type: ignore[method-assign]

    def take(self) -> list[str]:
        with self._lock:
            ids, self._ids = self._ids, []
        return ids


class _BrokerOutage:
    """Restarts the demo's Mosquitto for a scenario's broker_restart incident."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.agent: Agent | None = None
        self.gateway: Gateway | None = None

    def attach(self, agent: Agent, gateway: Gateway) -> None:
        self.agent, self.gateway = agent, gateway

    def broker_down(self, totals: SimulationTotals) -> None:
        agent, gateway = self._parts()
        # What devices sent before the outage reached the agent (a device's message is lost
        # only while there is no broker, never because the demo stopped it mid-flight).
        _wait_for(lambda: not pending_devices(agent.drivers, totals.handled), "the agent to read every device")
        gateway.subscribed.clear()
        agent.devices_subscribed.clear()
        self.broker.stop()
        log.info("broker stopped for the scenario's outage", extra={"port": self.broker.port})

    def broker_up(self) -> None:
        agent, gateway = self._parts()
        self.broker.start()
        for what, ready in (
            ("gateway resubscribed", gateway.subscribed),
            ("agent reconnected", agent.uplink_flag.connected),
            ("agent resubscribed its MQTT devices", agent.devices_subscribed),
        ):
            if not ready.wait(STAGE_TIMEOUT):
                raise RuntimeError(f"demo: after the broker restart, {what} did not happen within {STAGE_TIMEOUT}s")
        log.info("broker back for the scenario's outage", extra={"port": self.broker.port})

    def _parts(self) -> tuple[Agent, Gateway]:
        if self.agent is None or self.gateway is None:
            raise RuntimeError("the broker outage needs the agent and the gateway attached")
        return self.agent, self.gateway


def _wait_ready(gateway: Gateway, agent: Agent) -> None:
    for what, ready in (
        ("gateway subscribed at the broker", gateway.subscribed),
        ("agent connected to the broker", agent.uplink_flag.connected),
        ("agent subscribed to its MQTT devices", agent.devices_subscribed),
        *((f"agent opened {d.config.port}", d.port_open) for d in agent.drivers if isinstance(d, PatrolLineDriver)),
    ):
        if not ready.wait(STAGE_TIMEOUT):
            raise RuntimeError(f"demo: {what} did not happen within {STAGE_TIMEOUT}s")


def _final_reads(agent: Agent, at: datetime) -> None:
    """What the clock-driven drivers would do at the end of the night, done once by hand
    with the clock stopped: every Modbus meter polled (a poll slot the accelerated clock
    skipped must not look like a silent meter) and every wand spool folder scanned."""
    for driver in agent.drivers:
        if isinstance(driver, ModbusRtuDriver):
            driver.poll(at)
        elif isinstance(driver, PatrolWandDriver):
            driver.scan()


def _wait_stored(gateway: Gateway, queued: _QueuedIds) -> None:
    """Until every event the agent queued is stored by the gateway."""
    remaining: set[str] = set()

    def stored() -> bool:
        remaining.update(queued.take())
        remaining.intersection_update(gateway.store.unseen(remaining))
        return not remaining

    if not gateway.wait_until(stored, STAGE_TIMEOUT):
        raise RuntimeError(f"demo: {len(remaining)} events the agent queued were not stored within {STAGE_TIMEOUT}s")


def _tick(gateway: Gateway, at: datetime) -> None:
    gateway.tick(at)
    if not gateway.wait_until(lambda: gateway.last_tick is not None and gateway.last_tick >= at, STAGE_TIMEOUT):
        raise RuntimeError(f"demo: the rules did not reach {at.isoformat()} within {STAGE_TIMEOUT}s")


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition that has no event to wait on (driver counters)."""
    deadline = time.monotonic() + STAGE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo: timed out after {STAGE_TIMEOUT}s waiting for {what}")
        time.sleep(0.02)

