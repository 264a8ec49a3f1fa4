"""Faults rewrite what devices put on the wire; the real drivers must absorb every one of
them: each good sentence still decoded, each malformed payload refused whole."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from agent.drivers.mqtt_door import MqttDoorDevice, MqttDoorDriver
from agent.drivers.mqtt_json import MqttJsonDevice, MqttJsonDriver
from agent.drivers.patrol_line import PatrolLineDevice, PatrolLineDriver
from simulators.ac_meter import POWER_FIELDS
from simulators.base import MODBUS, Emission, epoch
from simulators.faults import CLEAR_OF_INCIDENTS
from simulators.scenario import Scenario
from simulators.timeline import Night
from simulators.water_meter import WATER_FIELDS
from simulators.wet_sensor import WET_FIELDS
from tests.support.scenarios import ROUTE, scenario
from warden.clock import ManualClock
from warden.events import Event

DEVICES = [
    {"type": "patrol_reader", "device": "reader-1", "room": "A-GATE"},
    {"type": "power_meter", "device": "ac-a101", "room": "A-101"},
    {"type": "power_meter", "device": "light-a101", "room": "A-101", "transport": "modbus", "circuit": "lighting"},
    {"type": "water_meter", "device": "wm-a", "room": "A-WC"},
    {"type": "wet_sensor", "device": "wet-a", "room": "A-WC"},
    {"type": "door_controller", "device": "ctl-gate", "room": "A-GATE", "doors": ["gate-main"]},
]


def night(*faults: dict[str, object], incidents: list[dict[str, object]] | None = None) -> Scenario:
    return scenario(
        devices=DEVICES,
        guards=[{"id": "guard-lee", "route": "night-round", "reader": "reader-1"}],
        rules={"patrol": {"routes": [ROUTE]}, "deadman": {"heartbeats_count": False}},
        faults=list(faults),
        incidents=incidents or [],
    )


def of(s: Scenario, device: str) -> list[Emission]:
    return [e for e in Night(s, 5).emissions() if e.device == device]


def test_line_noise_of_every_kind_costs_no_good_sentence() -> None:
    emissions = of(night({"type": "line_noise", "device": "reader-1", "every_minutes": 10}), "reader-1")
    emitted: list[Event] = []
    config = PatrolLineDevice(driver="patrol_line", id="reader-1", port="unused")
    driver = PatrolLineDriver(config, "riverside", emitted.append, ManualClock(night().start_utc))
    for e in emissions:
        driver.feed(e.payload)
    good = [e for e in emissions if e.events]
    assert driver.counters.events == len(good) == len(emitted)
    assert set(driver.counters.errors) == {"garbage", "bad_checksum", "truncated", "too_long"}
    assert Counter(e.kind for e in emissions)["duplicate"] > 0  # resent lines, byte for byte
    assert len({e.id for e in emitted}) == len([e for e in good if e.kind != "duplicate"])


FIELDS: dict[str, dict[str, dict[str, object]]] = {"ac-a101": POWER_FIELDS, "wm-a": WATER_FIELDS, "wet-a": WET_FIELDS}


@pytest.mark.parametrize("device", ["ac-a101", "wm-a", "wet-a", "ctl-gate"])
def test_malformed_payloads_are_refused_whole_by_the_real_driver(device: str) -> None:
    s = night({"type": "mqtt_malformed", "device": device, "every_minutes": 20})
    malformed = [e for e in of(s, device) if e.kind == "malformed"]
    assert len(malformed) >= 40
    emitted: list[Event] = []
    driver: MqttJsonDriver | MqttDoorDriver
    if device == "ctl-gate":
        driver = MqttDoorDriver(MqttDoorDevice(driver="mqtt_door", id=device, topic="t"), "riverside", emitted.append, ManualClock(s.start_utc))
    else:
        config = MqttJsonDevice.model_validate({"driver": "mqtt_json", "id": device, "topic": "t", "fields": FIELDS[device]})
        driver = MqttJsonDriver(config, "riverside", emitted.append, ManualClock(s.start_utc))
    for e in malformed:
        driver.handle(e.payload)
    assert emitted == [] and sum(driver.counters.errors.values()) == len(malformed)


def test_duplicates_repeat_a_real_message_and_reordering_keeps_every_message() -> None:
    plain = of(night(), "wm-a")
    dup = of(night({"type": "duplicates", "device": "wm-a", "every_minutes": 30}), "wm-a")
    copies = [e for e in dup if e.kind == "duplicate"]
    assert len(copies) == 32 and all(c.payload in {e.payload for e in plain} for c in copies)
    moved = of(night({"type": "out_of_order", "device": "wm-a", "every_minutes": 30}), "wm-a")
    assert sorted(e.payload for e in moved) == sorted(e.payload for e in plain)
    stamps = [json.loads(e.payload)["ts"] for e in moved]
    late = [(a, b) for a, b in zip(stamps, stamps[1:]) if b < a]
    assert len(late) >= 30  # a reading arriving after a newer one


def test_clock_skew_shifts_the_device_time_not_the_wire_time() -> None:
    skewed = of(night({"type": "clock_skew", "device": "ac-a101", "seconds": -90}), "ac-a101")
    first = skewed[0]
    assert first.t == epoch(night().start_utc)
    assert json.loads(first.payload)["ts"] == "2026-11-17T14:58:30Z"


def test_dropouts_and_a_silent_device_say_nothing_for_their_time() -> None:
    s = night({"type": "dropout", "device": "ac-a101", "at": "21:00", "minutes": 10},
              incidents=[{"type": "device_silent", "device": "wm-a", "at": "03:00"}])
    a = epoch(s.instant(s.faults[0].at))  # type: ignore[union-attr, arg-type]
    times = [e.t for e in of(s, "ac-a101")]
    assert not [t for t in times if a <= t < a + 600] and [t for t in times if t >= a + 600]
    silent = epoch(s.instant(s.incidents[0].at))  # type: ignore[union-attr, arg-type]
    assert max(e.t for e in of(s, "wm-a")) < silent


def test_modbus_faults_are_controls_of_the_simulated_meter() -> None:
    s = night({"type": "modbus_fault", "device": "light-a101", "at": "22:00", "minutes": 10},
              {"type": "modbus_fault", "device": "light-a101", "at": "01:00", "minutes": 5, "mode": "exception", "code": 2})
    controls = [(e.at.astimezone(s.site.zone).strftime("%H:%M"), e.action) for e in of(s, "light-a101")]
    assert controls == [("22:00", "mute"), ("22:10", "clear"), ("01:00", "refuse:2"), ("01:05", "clear")]
    assert all(e.channel == MODBUS for e in of(s, "light-a101"))


def test_faults_keep_clear_of_an_incident_starting_or_ending() -> None:
    s = night({"type": "duplicates", "device": "wm-a", "every_minutes": 5},
              {"type": "out_of_order", "device": "wm-a", "every_minutes": 7},
              incidents=[{"type": "water_leak", "device": "wm-a", "kind": "burst", "at": "03:20"}])
    burst = epoch(s.instant(s.incidents[0].at))  # type: ignore[union-attr, arg-type]
    rewritten = [e for e in of(s, "wm-a") if e.kind == "duplicate"]
    assert rewritten and all(abs(e.t - burst) >= CLEAR_OF_INCIDENTS - 60 and abs(e.t - burst - 1200) >= CLEAR_OF_INCIDENTS - 60 for e in rewritten)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"type": "dropout", "device": "ac-a101", "at": "21:00", "minutes": 15}, "deadman"),
        ({"type": "modbus_fault", "device": "light-a101", "at": "21:00", "minutes": 14}, "deadman"),
        ({"type": "modbus_fault", "device": "ac-a101", "at": "21:00", "minutes": 5}, "not a Modbus meter"),
        ({"type": "line_noise", "device": "ac-a101"}, "expected a patrol_reader or door_controller"),
        ({"type": "mqtt_malformed", "device": "light-a101"}, "does not publish over MQTT"),
        ({"type": "duplicates", "device": "nothing"}, "no device 'nothing'"),
    ],
)
def test_a_fault_that_would_be_an_incident_or_cannot_apply_is_refused(fault: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        night(fault)
