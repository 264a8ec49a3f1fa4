"""The MQTT door driver: the documented payloads, refusals by reason, and a simulated
controller's night through the real agent and a real Mosquitto."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.drivers.mqtt_door import MqttDoorDevice, MqttDoorDriver
from agent.runner import Agent
from simulators.base import MQTT
from simulators.timeline import Night
from tests.support.mqtt import Collector
from tests.support.scenarios import scenario
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig
from warden.events import DeviceState, DeviceStatus, DoorAction, DoorEvent, Event, stable_event_id
from warden.mqtt import make_client

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "door-mqtt.md"
PAYLOADS = [line.encode() for line in re.findall(r"^\{.*\}$", DOC.read_text(), re.MULTILINE)]
RECEIVED = datetime(2026, 11, 17, 19, 20, tzinfo=timezone.utc)
CONFIG = MqttDoorDevice(driver="mqtt_door", id="ctl-gate", topic="devices/riverside/ctl-gate/events", doors=["gate-main"])


def driver(emitted: list[Event]) -> MqttDoorDriver:
    return MqttDoorDriver(CONFIG, "riverside", emitted.append, ManualClock(RECEIVED))


def test_the_documented_payloads_become_door_events_and_a_heartbeat() -> None:
    emitted: list[Event] = []
    door = driver(emitted)
    for payload in PAYLOADS:
        door.handle(payload)
    granted, opened, beat = emitted
    assert isinstance(granted, DoorEvent) and isinstance(opened, DoorEvent) and isinstance(beat, DeviceStatus)
    assert (granted.action, granted.door, granted.card) == (DoorAction.GRANTED, "gate-main", "004711")
    assert granted.event_time == datetime(2026, 11, 17, 19, 12, tzinfo=timezone.utc)
    assert granted.id == stable_event_id("riverside", "ctl-gate", "door", 118, "gate-main", "granted", granted.event_time.isoformat())
    assert (opened.action, opened.card) == (DoorAction.OPENED, None)
    assert beat.state is DeviceState.HEARTBEAT and beat.counters["events"] == 2
    assert door.counters.events == 3 and not door.counters.errors


def test_a_message_sent_twice_is_one_event_id() -> None:
    emitted: list[Event] = []
    door = driver(emitted)
    door.handle(PAYLOADS[0])
    door.handle(PAYLOADS[0])
    door.handle(PAYLOADS[0].replace(b'"seq": 118', b'"seq": 121'))
    assert emitted[0].id == emitted[1].id != emitted[2].id


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"ts": "yesterday", "door": "gate-main", "event": "opened"}', "bad_time"),
        (b'{"ts": "2026-11-17T19:12:00Z", "door": "gate-main", "event": "exploded"}', "bad_event"),
        (b'{"ts": "2026-11-17T19:12:00Z", "door": "gate-main"}', "bad_event"),
        (b'{"ts": "2026-11-17T19:12:00Z", "event": "opened"}', "bad_field"),
        (b'{"ts": "2026-11-17T19:12:00Z", "door": "gate-main", "event": "granted", "card": "a b"}', "bad_field"),
        (b'{"ts": "2026-11-17T19:12:00Z", "seq": -1, "door": "gate-main", "event": "opened"}', "bad_field"),
        (b'{"ts": "2026-11-17T19:12:00Z", "door": "vault", "event": "opened"}', "unknown_door"),
        (b"{" + b" " * 20_000 + b"}", "too_large"),
    ],
)
def test_refused_payloads_are_counted_by_reason_and_emit_nothing(payload: bytes, reason: str) -> None:
    emitted: list[Event] = []
    door = driver(emitted)
    door.handle(payload)
    assert emitted == [] and door.counters.errors == {reason: 1}


def test_a_simulated_controller_night_through_the_agent(broker_config: BrokerConfig, tmp_path: Path) -> None:
    night = scenario(
        devices=[{"type": "door_controller", "device": "ctl-gate", "room": "A-GATE", "doors": ["gate-main", "gate-side"],
                  "traffic_per_hour": 10}],
        incidents=[{"type": "door_held_open", "device": "ctl-gate", "door": "gate-side", "at": "22:40"}],
        faults=[{"type": "mqtt_malformed", "device": "ctl-gate", "every_minutes": 60},
                {"type": "duplicates", "device": "ctl-gate", "every_minutes": 60}],
    )
    simulated = Night(night)
    emissions = [e for e in simulated.emissions() if e.channel == MQTT]
    config = AgentConfig.model_validate({
        "id": "agent-a", "site": "riverside", "broker": broker_config.model_dump(), "heartbeat_seconds": 3600,
        "buffer_path": str(tmp_path / "outbox.db"),
        "devices": [{"driver": "mqtt_door", "id": "ctl-gate", "topic": simulated.topics["ctl-gate"], "doors": ["gate-main", "gate-side"]}],
    })
    collector = Collector(broker_config, topics.events_topic("riverside", "agent-a"))
    agent = Agent(config, ManualClock(night.start_utc))
    agent.start()
    device = make_client(broker_config, "test-door-controller")
    try:
        assert agent.devices_subscribed.wait(10)
        device.connect(broker_config.host, broker_config.port)
        device.loop_start()
        for e in emissions:
            device.publish(e.topic, e.payload, qos=1).wait_for_publish(5)
        good = [e for e in emissions if e.events]
        events = collector.events(len(good), timeout=20)
    finally:
        device.disconnect()
        device.loop_stop()
        agent.stop()
        collector.close()
    doors = {e.id: e for e in events if isinstance(e, DoorEvent)}.values()
    sent = [json.loads(e.payload) for e in emissions if e.kind == "data"]
    assert [(d.door, d.action.value, d.card) for d in doors] == [(s["door"], s["event"], s.get("card")) for s in sent]
    assert any(d.action is DoorAction.HELD_OPEN and d.door == "gate-side" for d in doors)
    malformed = sum(1 for e in emissions if e.kind == "malformed")
    assert malformed and sum(agent.drivers[0].counters.errors.values()) == malformed
