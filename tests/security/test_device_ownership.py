"""One agent cannot speak for another's devices (issue 17, hole 2): a real gateway on the
shipped broker config (deploy/mosquitto.conf + deploy/acl), agents with their own accounts.
The ACL binds each agent to its topic; the gateway then refuses, per event, a device the
topic's agent does not serve (gateway/ownership.py), as dead letter `not_owner`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.service import Gateway
from tests.security.test_mqtt_acl import Client, SecureBroker, _close, _session, secure_broker  # noqa: F401 - fixture
from warden import topics
from warden.clock import ManualClock
from warden.config import SiteConfig
from warden.events import DeviceState, DeviceStatus, Event, Reading, encode_events, stable_event_id

T0 = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc)
SITE = SiteConfig.model_validate({
    "id": "riverside", "timezone": "Europe/Berlin",
    "buildings": [{"id": "A", "rooms": [{"id": "A-101", "devices": ["ac-a101"]}, {"id": "A-204", "devices": ["ac-a204"]}]}],
})


def _reading(device: str, minute: int) -> Reading:
    at = T0 + timedelta(minutes=minute)
    return Reading(id=stable_event_id("riverside", device, minute), site="riverside", device=device, event_time=at,
                   quantity="power", value=100.0, unit="W")


def _status(device: str, state: DeviceState, minute: int) -> DeviceStatus:
    return DeviceStatus(id=stable_event_id("riverside", device, state, minute), site="riverside", device=device,
                        event_time=T0 + timedelta(minutes=minute), state=state)


def _send(agent: Client, agent_id: str, *events: Event) -> None:
    agent.publish(topics.events_topic("riverside", agent_id), encode_events(list(events)))


@pytest.fixture
def gateway(secure_broker: SecureBroker, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = GatewayConfig.model_validate({
        "site_file": str(tmp_path / "site.yaml"),
        "broker": secure_broker.as_user("gateway").model_dump(),
        "historian": {"type": "sqlite", "path": str(tmp_path / "history.db")},
        "state_db": str(tmp_path / "state.db"),
        # Which agent serves which device: the site's deadman map (docs/security.md).
        "rules": {"deadman": {"agents": {"agent-a": ["ac-a101"], "agent-b": ["ac-a204"]}}},
    })
    gw = Gateway(config, SITE, ManualClock(T0 + timedelta(hours=1)))
    gw.start()
    assert gw.subscribed.wait(10), "gateway did not subscribe with the shipped ACL"
    yield gw
    gw.stop()


def test_an_agent_cannot_speak_for_another_agents_devices(gateway: Gateway, secure_broker: SecureBroker) -> None:
    a = _session(secure_broker.as_user("riverside/agent-a"), "warden-agent-riverside-agent-a")
    b = _session(secure_broker.as_user("riverside/agent-b"), "warden-agent-riverside-agent-b")
    try:
        _send(b, "agent-b", _status("agent-b", DeviceState.HEARTBEAT, 0))  # B speaks for itself
        # A, on its own topic (the only one the ACL lets it write): one batch with its own
        # meter, B's configured meter, and a heartbeat in B's name (which would hide B's silence).
        _send(a, "agent-a", _reading("ac-a101", 1), _reading("ac-a204", 1), _status("agent-b", DeviceState.HEARTBEAT, 1))
        # A device no map names: the first agent heard for it (A) keeps it; B is refused.
        _send(a, "agent-a", _reading("meter-x", 2))
        _send(b, "agent-b", _reading("meter-x", 3), _reading("ac-a204", 3))
        # Stored: A's ac-a101 and meter-x, B's ac-a204 = 3 readings, B's heartbeat = 1 status.
        # Refused: A's ac-a204 and agent-b heartbeat, B's meter-x = 3 not_owner.
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) >= 3
                                  and gateway.counts().get("rejected", 0) >= 3, timeout=15), gateway.counts()
    finally:
        _close(a)
        _close(b)
    counts = gateway.counts()
    assert counts.get("rejected_not_owner") == 3 and counts.get("rejected") == 3, counts
    assert counts.get("events_stored_reading") == 3 and counts.get("events_stored_status") == 1, counts
    refused = sorted(row["reason"].split(": ", 1)[1] for row in gateway.store.dead_letters())
    assert refused == [
        "device 'ac-a204' is served by agent 'agent-b', not 'agent-a'",
        "device 'agent-b' is served by agent 'agent-b', not 'agent-a'",
        "device 'meter-x' is served by agent 'agent-a', not 'agent-b'",
    ]
