"""`warden demo`: a whole simulated night, end to end, with nothing installed by hand.

Simulated devices -> (pseudo-terminal, MQTT) -> the real agent -> MQTT broker -> the
real gateway (validation, SQLite historian, rules, alert store) -> HTTP API. The demo
reads the alerts back through the API, like any client, and writes them to the
output folder with the configuration files it generated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import httpx
import yaml

from agent.runner import Agent
from gateway.api import ApiServer, create_app
from gateway.service import Gateway
from simulators.night import NightSimulation, SimulationTotals
from simulators.scenario import Scenario
from warden.broker import start_embedded_broker
from warden.clock import SimClock
from warden.config import AgentConfig, BrokerConfig, GatewayConfig, SiteConfig, load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    totals: SimulationTotals
    alerts: list[dict[str, Any]]
    gateway_counts: dict[str, float]
    out_dir: Path


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
    broker_config = BrokerConfig(host=broker.host, port=broker.port)
    clock = SimClock(scenario.start_utc, speed=speed, running=False)
    simulation = NightSimulation(scenario, broker_config, clock, seed=seed)
    gateway = agent = api = None
    try:
        site, gateway_config, agent_config = _write_configs(scenario, simulation, broker_config, out_dir)
        # The pipeline lags the accelerated clock by hours of simulated time, so the rules
        # are not ticked by it; they see the night's end once every event is in.
        gateway = Gateway(gateway_config, site, clock, tick_every=None)
        gateway.start()
        api = ApiServer(create_app(gateway), gateway_config.api.host, gateway_config.api.port)
        api.start()
        agent = Agent(agent_config, clock)
        agent.start()
        _wait_ready(gateway, agent)
        clock.run()
        totals = simulation.run(progress)
        _wait_delivered(gateway, agent, totals)
        _close_the_night(gateway, scenario.end_utc)
        alerts = httpx.get(f"{api.url}/api/alerts", timeout=10).raise_for_status().json()
        (out_dir / "alerts.json").write_text(json.dumps(alerts, indent=2))
        return DemoResult(totals, alerts, gateway.counts(), out_dir)
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
    files = {
        "site.yaml": scenario.site.model_dump(mode="json"),
        "gateway.yaml": {
            "site_file": "site.yaml",
            "broker": broker.model_dump(mode="json", exclude_none=True),
            "historian": {"type": "sqlite", "path": "data/history.db"},
            "state_db": "data/state.db",
            "api": {"host": "127.0.0.1", "port": 0},
            "rules": scenario.rules.model_dump(mode="json"),
        },
        "agent.yaml": simulation.agent_config(Path("data/agent-outbox.db")).model_dump(mode="json", exclude_none=True),
    }
    for name, document in files.items():
        (out_dir / name).write_text(yaml.safe_dump(document, sort_keys=False))
    gateway_config = load_config(out_dir / "gateway.yaml", GatewayConfig)
    site = load_config(gateway_config.site_file, SiteConfig)
    return site, gateway_config, load_config(out_dir / "agent.yaml", AgentConfig)


def _wait_ready(gateway: Gateway, agent: Agent, timeout: float = 15.0) -> None:
    for what, ready in (
        ("gateway subscribed at the broker", gateway.subscribed),
        ("agent connected to the broker", agent.uplink_flag.connected),
        ("agent subscribed to its MQTT devices", agent.devices_subscribed),
    ):
        if not ready.wait(timeout):
            raise RuntimeError(f"demo: {what} did not happen within {timeout}s")


def _close_the_night(gateway: Gateway, end: datetime, timeout: float = 30.0) -> None:
    """With every event in, let the rules see the night to its end: deadlines that fell
    while the pipeline lagged the accelerated clock are judged now, on complete data."""
    gateway.tick(end)
    if not gateway.wait_until(lambda: gateway.last_tick is not None and gateway.last_tick >= end, timeout):
        raise RuntimeError(f"demo: the rules did not reach the end of the night within {timeout}s")


def _wait_delivered(gateway: Gateway, agent: Agent, totals: SimulationTotals, timeout: float = 60.0) -> None:
    """Wait until every simulated reading and tap is stored by the gateway."""
    expected = {"reading": totals.readings, "patrol_tap": totals.taps}
    delivered = lambda: all(gateway.counts().get(f"events_stored_{kind}", 0) >= n for kind, n in expected.items())  # noqa: E731
    if not gateway.wait_until(delivered, timeout):
        stored = {kind: gateway.counts().get(f"events_stored_{kind}", 0) for kind in expected}
        raise RuntimeError(f"demo: not everything arrived within {timeout}s: expected {expected}, stored {stored}")
