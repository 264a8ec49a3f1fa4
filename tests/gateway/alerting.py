"""Shared setup of the alert lifecycle tests: a site with doors, a gateway on the real
Mosquitto with a ManualClock, and door events that raise alerts at once."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.service import Gateway
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import DoorAction, DoorEvent, encode_events, stable_event_id
from warden.mqtt import make_client

SITE_ID = "riverside"
START = datetime(2026, 11, 17, 21, 0, tzinfo=timezone.utc)  # the gateway's clock at start
ALERTS_TOPIC = topics.alerts_topic(SITE_ID)

SITE = SiteConfig.model_validate(
    {
        "id": SITE_ID,
        "timezone": "Europe/Berlin",
        "buildings": [{"id": "A", "rooms": [{"id": "A-hall", "devices": ["ctl-gate"]}]}],
    }
)


def door(at: datetime, action: DoorAction, door_id: str = "gate-main") -> DoorEvent:
    """A controller's door event; HELD_OPEN raises a warning, FORCED a critical alert, at once."""
    return DoorEvent(
        id=stable_event_id(SITE_ID, "ctl-gate", door_id, action, at.isoformat()),
        site=SITE_ID, device="ctl-gate", event_time=at, action=action, door=door_id,
    )


def publish(broker: BrokerConfig, *events: DoorEvent) -> None:
    client = make_client(broker, f"test-doors-{id(events)}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topics.events_topic(SITE_ID, "agent-a"), encode_events(list(events)), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "backoff_seconds": 0.01, **extra}


def gateway_config(broker: BrokerConfig, tmp_path: Path, alerts: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "id": f"gw-{tmp_path.name}"[:60],
            "site_file": str(tmp_path / "site.yaml"),
            "broker": broker.model_dump(),
            "historian": {"type": "sqlite", "path": str(tmp_path / "history.db")},
            "state_db": str(tmp_path / "state.db"),
            "rules": {"deadman": {"enabled": False}},  # ticks over hours must raise nothing else
            "alerts": alerts,
        }
    )


def start_gateway(config: GatewayConfig, clock: ManualClock) -> Gateway:
    """Ticks (and escalation checks) every 50 ms of real time, on the manual clock's time."""
    gateway = Gateway(config, SITE, clock, tick_every=0.05)
    gateway.start()
    assert gateway.subscribed.wait(10), "gateway did not subscribe"
    return gateway


def checked(gateway: Gateway, clock: ManualClock) -> None:
    """Return once the gateway ran an escalation check at the clock's current time."""
    now = clock.now()
    done = gateway.wait_until(lambda: gateway.escalation_checked_at is not None and gateway.escalation_checked_at >= now, timeout=10)
    assert done, f"no escalation check at {now.isoformat()}"


def wait_for_alert(gateway: Gateway, rule: str = "door_held_open", timeout: float = 10.0) -> int:
    assert gateway.wait_until(lambda: bool(gateway.store.alerts(rule=rule)), timeout), f"no {rule} alert"
    return gateway.store.alerts(rule=rule)[0].id


def history_actions(gateway: Gateway, alert_id: int) -> list[str]:
    return [step["action"] for step in gateway.store.alert_history(alert_id)]


def changes_on_topic(messages: list[Any]) -> list[tuple[str, str]]:
    """(change, rule) of MQTT alert messages."""
    return [(doc["change"], doc["alert"]["rule"]) for doc in (json.loads(m.payload) for m in messages)]


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
