"""rules/cold_room.py: a cold room too warm for too long, defrost cycles tolerated.
Temperatures are fed as a sensor reporting every minute; expected minutes and peaks are
worked out by hand from the profile beside each test."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from rules.alerts import AlertSignal, SignalAction
from rules.cold_room import ColdRoomConfig, ColdRoomRule
from rules.config import ALERT_RULES, RulesConfig
from rules.engine import RuleEngine, build_rules
from warden.config import SiteConfig
from warden.events import Quantity, Reading, stable_event_id

SHANGHAI = ZoneInfo("Asia/Shanghai")
RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

SITE = SiteConfig.model_validate({
    "id": "chenguang",
    "timezone": "Asia/Shanghai",
    "buildings": [{"id": "K", "rooms": [
        {"id": "K-COLD", "devices": ["temp-1", "temp-2"]},
        {"id": "K-FREEZE", "devices": ["temp-f"]},
        {"id": "K-STORE", "devices": ["temp-s"]},  # a food store nobody listed: not judged
    ]}],
})
CONFIG = ColdRoomConfig(rooms={"K-COLD": {}, "K-FREEZE": {"max_c": -12, "warm_minutes": 30}})
START = datetime(2026, 11, 19, 1, 0, tzinfo=SHANGHAI).astimezone(timezone.utc)


def reading(device: str, minute: float, value: float, unit: str = "C") -> Reading:
    at = START + timedelta(minutes=minute)
    return Reading(id=stable_event_id("chenguang", device, at.isoformat(), value), site="chenguang", device=device,
                   event_time=at, quantity=Quantity.TEMPERATURE, value=value, unit=unit)


def feed(rule: ColdRoomRule, device: str, profile: list[tuple[float, float]], unit: str = "C") -> list[AlertSignal]:
    return [s for minute, value in profile for s in rule.on_event(reading(device, minute, value, unit))]


def door_left_open() -> list[tuple[float, float]]:
    """3 °C; door open minutes 0-20 warms 0.5 °C/min to 13 °C; then cools 0.1 °C/min:
    above 8 °C from minute 11 (8.5) to minute 69 (8.1), back to 8.0 at minute 70."""
    out = []
    for m in range(0, 100):
        value = 3 + 0.5 * min(m, 20) - 0.1 * max(0, m - 20)
        out.append((m, round(max(value, 3.0), 2)))
    return out


def test_door_left_open_raises_after_45_min_and_resolves_with_duration_and_peak() -> None:
    signals = feed(ColdRoomRule(SITE, CONFIG), "temp-1", door_left_open())
    actions = [s.action for s in signals]
    assert actions[0] == RAISE and actions[-1] == RESOLVE and set(actions[1:-1]) == {UPDATE}
    raised, resolved = signals[0], signals[-1]
    # warm from minute 11; 45 min later, minute 56 (01:56), it is raised
    assert raised.at == START + timedelta(minutes=56)
    assert raised.details["minutes"] == 45
    # back to 8.0 (not above 8) at minute 70: 70 - 11 = 59 min warm, peak 13 at minute 20
    assert resolved.at == START + timedelta(minutes=70)
    assert (resolved.details["minutes"], resolved.details["peak_c"]) == (59, 13)
    assert resolved.details["peak_at"] == (START + timedelta(minutes=20)).isoformat()
    assert resolved.details["reason"] == "back_in_range"
    assert resolved.message == ("Cold room K-COLD back to 8.0 °C at 02:10 after 59 min above 8 °C since 01:11 "
                                "(peak 13.0 °C)")
    # updates every 5 min between: minutes 61, 66
    assert [s.at for s in signals[1:-1]] == [START + timedelta(minutes=m) for m in (61, 66)]


def test_a_defrost_cycle_is_tolerated() -> None:
    """Defrost: up 0.7 °C/min to 10 °C over 10 min, down again over 10: above 8 °C for
    minutes 8-12 only, far under 45."""
    profile = [(m, 3 + 0.7 * (m if m <= 10 else 20 - m)) for m in range(0, 21)] + [(m, 3.0) for m in range(21, 90)]
    assert feed(ColdRoomRule(SITE, CONFIG), "temp-1", profile) == []


def test_a_freezer_has_its_own_limit_and_fahrenheit_is_converted() -> None:
    # -10 °F = -23.3 °C (fine); 14 °F = -10 °C, above -12 °C, for 30 min: raised at minute 30.
    rule = ColdRoomRule(SITE, CONFIG)
    assert feed(rule, "temp-f", [(0, -10.0)], unit="F") == []
    signals = feed(rule, "temp-f", [(m, 14.0) for m in range(1, 32)], unit="F")
    assert [(s.action, s.at) for s in signals] == [(RAISE, START + timedelta(minutes=31))]
    assert signals[0].details["max_c"] == -12 and signals[0].details["temperature_c"] == -10


def test_unlisted_rooms_other_units_and_out_of_order_readings_are_ignored() -> None:
    rule = ColdRoomRule(SITE, CONFIG)
    assert feed(rule, "temp-s", [(m, 20.0) for m in range(0, 90)]) == []
    assert feed(rule, "temp-1", [(0, 20.0)], unit="%") == []
    assert rule.stats["unsupported_unit"] == 1
    feed(rule, "temp-1", [(10, 3.0)])
    assert feed(rule, "temp-1", [(5, 20.0)]) == [] and rule.stats["out_of_order"] == 1


def test_one_sensor_back_in_range_does_not_resolve_while_another_is_warm() -> None:
    rule = ColdRoomRule(SITE, CONFIG)
    signals = []
    for m in range(0, 60):  # both warm from minute 0; temp-2 recovers at minute 50
        signals += rule.on_event(reading("temp-1", m, 12.0))
        signals += rule.on_event(reading("temp-2", m, 12.0 if m < 50 else 4.0))
    assert [s.action for s in signals if s.action != UPDATE] == [RAISE]
    assert signals[0].details["device"] == "temp-1,temp-2"
    # both in range from minute 60; confirmed once in range clear_minutes (10): the reading at
    # minute 70 resolves, dated minute 60 (changed with clear_minutes: it resolved at once)
    signals = [s for m in range(60, 71) for s in rule.on_event(reading("temp-1", m, 4.0))]
    assert [(s.action, s.at, s.details["minutes"]) for s in signals] == [(RESOLVE, START + timedelta(minutes=60), 60)]


def test_a_restart_continues_the_warm_timer() -> None:
    """The duration is not restarted by a gateway restart (domain.md: known failures)."""
    rule = ColdRoomRule(SITE, CONFIG)
    assert feed(rule, "temp-1", [(m, 10.0) for m in range(0, 30)]) == []
    again = ColdRoomRule(SITE, CONFIG)
    again.restore(json.loads(json.dumps(rule.state_snapshot())))
    signals = feed(again, "temp-1", [(m, 10.0) for m in range(30, 46)])
    assert [(s.action, s.at) for s in signals] == [(RAISE, START + timedelta(minutes=45))]
    with pytest.raises(ValueError, match="snapshot version"):
        again.restore({"version": 99})


def test_the_engine_runs_the_family_only_for_sites_with_cold_rooms() -> None:
    assert "cold_room_warm" in ALERT_RULES
    assert "cold_room" not in {r.name for r in build_rules(SITE, RulesConfig())}
    config = RulesConfig.model_validate({"cold_room": {"rooms": {"K-COLD": {}}}})
    engine = RuleEngine(SITE, config)
    signals = []
    for minute, value in door_left_open():
        signals += engine.on_event(reading("temp-1", minute, value))
    assert [s.rule for s in signals if s.action == RAISE] == ["cold_room_warm"]
    assert "cold_room" in engine.snapshot()


def test_a_silent_sensor_is_the_deadman_rules() -> None:
    """The family judges temperatures only; a sensor gone silent is the deadman rule's
    (the door left open, the doors rule's: scenario cold-room-door)."""
    config = RulesConfig.model_validate({"cold_room": {"rooms": {"K-COLD": {}}}})  # deadman: 15 min by default
    engine = RuleEngine(SITE, config)
    for minute in range(0, 11):
        engine.on_event(reading("temp-1", minute, 3.0))
        assert engine.on_tick(START + timedelta(minutes=minute)) == []  # the gateway ticks as it goes
    assert engine.on_tick(START + timedelta(minutes=24)) == []
    [silent] = engine.on_tick(START + timedelta(minutes=26))
    # last reading at minute 10, silent 15 min: raised at minute 25
    assert (silent.rule, silent.subject, silent.at) == ("deadman", "temp-1", START + timedelta(minutes=25))


def test_a_modbus_temperature_transmitter_is_configured_as_a_register() -> None:
    """Modbus sensors need no code: a register mapped to `temperature` in °C (tenths)."""
    from agent.drivers.modbus_rtu import ModbusRtuDevice

    device = ModbusRtuDevice.model_validate({
        "driver": "modbus_rtu", "id": "temp-2", "port": "/dev/ttyUSB0", "unit_id": 3,
        "registers": [{"name": "temperature", "address": 1, "data_type": "int16", "scale": 0.1,
                       "quantity": "temperature", "unit": "C"}],
    })
    assert device.registers[0].quantity == Quantity.TEMPERATURE
