"""Water meters and leak sensors: day use, near-zero nights, injected leaks, a meter
replaced mid-night, a register-only meter, and their MQTT payloads read by the real
`mqtt_json` driver with the agent's field mappings."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from agent.drivers.mqtt_json import MqttJsonDevice, MqttJsonDriver
from simulators.base import epoch
from simulators.timeline import Night
from simulators.water_meter import WATER_FIELDS, WaterMeterSim
from simulators.wet_sensor import WET_FIELDS
from tests.support.scenarios import scenario
from warden.clock import ManualClock
from warden.events import Event, Reading


def local(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def water(*incidents: dict[str, object], **spec: object) -> WaterMeterSim:
    night = scenario(devices=[{"type": "water_meter", "device": "wm-a", "room": "A-WC", **spec}], incidents=list(incidents))
    return Night(night).water["wm-a"]


def flows(sim: WaterMeterSim, a: float, b: float) -> list[float]:
    return [sim.profile.flow(t) for t in range(int(a), int(b), 60)]


def test_use_follows_the_day_and_stops_at_night() -> None:
    sim = water(night_uses=0)
    assert sum(flows(sim, local(17, 16), local(17, 18))) > 0  # the afternoon's taps and flushes
    assert set(flows(sim, local(18, 1), local(18, 5))) == {0.0}  # utilities look for leaks here


def test_leaks_add_their_flow_for_their_time() -> None:
    sim = water(
        {"type": "water_leak", "device": "wm-a", "kind": "steady", "at": "01:10", "flow_l_per_min": 2.0},
        {"type": "water_leak", "device": "wm-a", "kind": "burst", "at": "03:20"},
        night_uses=0,
    )
    assert set(flows(sim, local(18, 0, 30), local(18, 1, 10))) == {0.0}
    assert set(flows(sim, local(18, 1, 10), local(18, 3, 20))) == {2.0}
    assert set(flows(sim, local(18, 3, 20), local(18, 3, 40))) == {152.0}  # a burst lasts 20 min by default
    assert set(flows(sim, local(18, 3, 40), local(18, 5))) == {2.0}


def test_the_register_through_the_mqtt_json_driver_gives_the_litres_used() -> None:
    sim = water({"type": "water_leak", "device": "wm-a", "kind": "drip", "at": "16:00", "flow_l_per_min": 0.12})
    emitted: list[Event] = []
    config = MqttJsonDevice.model_validate({"driver": "mqtt_json", "id": "wm-a", "topic": "t", "fields": WATER_FIELDS})
    driver = MqttJsonDriver(config, "riverside", emitted.append, ManualClock(sim.scenario.start_utc))
    emissions = list(sim.emissions("t", 60.0))
    for e in emissions:
        driver.handle(e.payload)
    volumes = [r for r in emitted if isinstance(r, Reading)]
    assert len(volumes) == len(emissions) == 961 and all(r.cumulative and r.unit == "m3" for r in volumes)
    litres = [(b.value - a.value) * 1000 for a, b in zip(volumes, volumes[1:])]
    assert all(l >= 0 for l in litres)
    assert abs(sum(litres) - sum(sim.profile.flow_lpm[:960])) < 0.02
    night = [l for l, r in zip(litres, volumes) if local(18, 2) <= epoch(r.event_time) < local(18, 5)]
    assert min(night) > 0.1  # the drip never stops: a small ultrasonic meter sees it


def test_a_wet_sensor_reports_periodically_and_at_once_on_change() -> None:
    night = scenario(
        devices=[{"type": "wet_sensor", "device": "wet-a", "room": "A-WC", "report_minutes": 5}],
        incidents=[{"type": "wet", "device": "wet-a", "at": "03:22", "until": "04:31"}],
    )
    emissions = list(Night(night).emissions())
    emitted: list[Event] = []
    config = MqttJsonDevice.model_validate({"driver": "mqtt_json", "id": "wet-a", "topic": "t", "fields": WET_FIELDS})
    driver = MqttJsonDriver(config, "riverside", emitted.append, ManualClock(night.start_utc))
    for e in emissions:
        driver.handle(e.payload)
    states = [(epoch(r.event_time), r.value) for r in emitted if isinstance(r, Reading)]
    assert (local(18, 3, 22), 1.0) in states and (local(18, 4, 31), 0.0) in states
    wet = [t for t, v in states if v == 1.0]
    assert min(wet) == local(18, 3, 22) and max(wet) < local(18, 4, 31)
    assert len(states) == 16 * 12 + 1 + 2  # every 5 minutes, and the two changes


def test_a_replaced_meters_register_restarts_at_the_new_base_and_its_flow_stays_true() -> None:
    leak = {"type": "water_leak", "device": "wm-a", "kind": "steady", "at": "02:40", "flow_l_per_min": 1.5}
    swap = {"type": "meter_replaced", "device": "wm-a", "at": "03:10", "new_base_m3": 0.0}
    old, new = water(leak, night_uses=0), water(leak, swap, night_uses=0)
    assert new.profile.flow_lpm == old.profile.flow_lpm  # the water runs as before
    # before the swap, the old register; at 03:10 the new one reads 0.0 m3,
    # then 10 min of 1.5 L/min later 15 L = 0.015 m3, and at 05:00 (110 min) 165 L = 0.165 m3
    assert new.profile.volume_m3(local(18, 3, 9)) == old.profile.volume_m3(local(18, 3, 9)) > 1000
    assert new.profile.volume_m3(local(18, 3, 10)) == 0.0
    assert abs(new.profile.volume_m3(local(18, 3, 20)) - 0.015) < 1e-9
    assert abs(new.profile.volume_m3(local(18, 5, 0)) - 0.165) < 1e-9
    payloads = {e.t: json.loads(e.payload) for e in new.emissions("t", 60.0)}
    assert payloads[local(18, 3, 10)] == {"ts": "2026-11-18T02:10:00Z", "volume_m3": 0.0, "flow_lpm": 1.5}


def test_a_register_only_meter_sends_its_volume_alone() -> None:
    sim = water({"type": "water_leak", "device": "wm-a", "kind": "steady", "at": "02:40", "flow_l_per_min": 1.5},
                night_uses=0, register_only=True)
    emitted: list[Event] = []
    config = MqttJsonDevice.model_validate({"driver": "mqtt_json", "id": "wm-a", "topic": "t", "fields": WATER_FIELDS})
    driver = MqttJsonDriver(config, "riverside", emitted.append, ManualClock(sim.scenario.start_utc))
    for e in sim.emissions("t", 60.0):
        assert set(json.loads(e.payload)) == {"ts", "volume_m3"}
        driver.handle(e.payload)
    volumes = {epoch(r.event_time): r.value for r in emitted if isinstance(r, Reading)}
    # 02:40 -> 05:00 is 140 min of 1.5 L/min: 210 L = 0.210 m3 more on the register
    assert abs(volumes[local(18, 5)] - volumes[local(18, 2, 40)] - 0.210) < 2e-5
