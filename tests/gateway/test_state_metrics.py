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


def test_overdue_repair_requests_are_counted_by_category(broker_config: Any, tmp_path: Path) -> None:
    from datetime import timedelta

    from gateway.workorders import WorkOrderConfig

    orders = WorkOrderConfig.model_validate({"categories": {"plumbing": {"take_hours": 1, "resolve_hours": 4},
                                                            "electrical": {"take_hours": 2, "resolve_hours": 8}},
                                             "priorities": {}})  # fmt: skip
    config = gateway_config(broker_config, tmp_path, {}).model_copy(update={"work_orders": orders})
    clock = ManualClock(START)
    gateway = start_gateway(config, clock)
    try:
        # At START: leak (plumbing, take by +1 h), socket (electrical, take by +2 h), tap (plumbing,
        # taken at once: resolve by +4 h).
        gateway.work_orders.create(room="A-204", text="leak", by="desk", category="plumbing")
        gateway.work_orders.create(room="A-204", text="socket", by="desk", category="electrical")
        tap = gateway.work_orders.create(room="A-204", text="tap", by="desk", category="plumbing").order
        gateway.work_orders.act(tap.id, "take", "sam")
        at_start = samples(gateway.metrics.exposition())
        clock.advance(timedelta(hours=1, minutes=30))  # +1.5 h: only the leak is past its take-by (+1 h)
        early = samples(gateway.metrics.exposition())
        clock.advance(timedelta(hours=3))  # +4.5 h: the leak, the socket (+2 h) and the tap (resolve by +4 h)
        late = samples(gateway.metrics.exposition())
    finally:
        gateway.stop()
    key = "warden_gateway_overdue_work_orders"
    assert (at_start[(key, (("category", "plumbing"),))], at_start[(key, (("category", "electrical"),))]) == (0, 0)
    assert (early[(key, (("category", "plumbing"),))], early[(key, (("category", "electrical"),))]) == (1, 0)
    assert (late[(key, (("category", "plumbing"),))], late[(key, (("category", "electrical"),))]) == (2, 1)
