"""Prometheus gauges of the gateway's state (issue 19): open alerts by severity and rule,
silent devices, agents online; read at scrape time from the store and the agents'
availability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics
from tests.gateway.alerting import START, door, gateway_config, publish, start_gateway, wait_for_alert
from warden.clock import ManualClock
from warden.events import DoorAction


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition.decode()) for s in family.samples}  # fmt: skip


def test_gauges_count_what_the_sources_say() -> None:
    metrics = GatewayMetrics(lambda: 0, dict)
    alerts = [("critical", "door_forced", "door-back"), ("warning", "deadman", "meter-7"), ("warning", "deadman", "meter-8"),
              ("warning", "deadman_agent", "agent-b"), ("critical", "door_forced", "gate-main")]  # fmt: skip
    agents = {"riverside/agent-a": "online", "riverside/agent-b": "heartbeat", "riverside/agent-c": "offline"}
    metrics.watch_state(lambda: alerts, lambda: agents)
    got = samples(metrics.exposition())
    p = "warden_gateway_"
    # door_forced: door-back and gate-main, both critical -> 2; deadman: meter-7, meter-8 -> 2.
    assert got[(p + "open_alerts", (("rule", "door_forced"), ("severity", "critical")))] == 2
    assert got[(p + "open_alerts", (("rule", "deadman"), ("severity", "warning")))] == 2
    assert got[(p + "open_alerts", (("rule", "deadman_agent"), ("severity", "warning")))] == 1
    assert got[(p + "silent_devices", ())] == 2  # meter-7, meter-8
    # agent-a online; agent-b's heartbeat is its latest state but it has a deadman_agent
    # alert; agent-c offline: 1 online of 3 known.
    assert got[(p + "agents_online", ())] == 1
    assert got[(p + "agents_known", ())] == 3


def test_a_running_gateway_exports_its_open_alert(broker_config: Any, tmp_path: Path) -> None:
    gateway = start_gateway(gateway_config(broker_config, tmp_path, {}), ManualClock(START))
    try:
        before = samples(gateway.metrics.exposition())
        publish(broker_config, door(START, DoorAction.FORCED, "door-back"))
        alert_id = wait_for_alert(gateway, "door_forced")
        opened = samples(gateway.metrics.exposition())
        gateway.resolve(alert_id, by="sam", note="closed")
        after = samples(gateway.metrics.exposition())
    finally:
        gateway.stop()
    key = ("warden_gateway_open_alerts", (("rule", "door_forced"), ("severity", "critical")))
    assert key not in before
    assert opened[key] == 1
    assert opened[("warden_gateway_silent_devices", ())] == 0
    assert key not in after  # resolved: no longer open
