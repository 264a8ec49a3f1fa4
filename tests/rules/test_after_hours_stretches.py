"""Issue 16, energy: one alert per room and circuit kind per unscheduled stretch.

Every expected number is worked out by hand from the scenario's facts (rated power,
minutes on) and the arithmetic is written next to it; none comes from the rule.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rules.ac_after_hours import AFTER_HOURS_RULES, AcAfterHoursConfig, AcAfterHoursRule
from rules.alerts import AlertSignal, SignalAction
from rules.config import ALERT_RULES
from warden.config import SiteConfig
from warden.events import Quantity, Reading, stable_event_id

BERLIN = ZoneInfo("Europe/Berlin")
RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

SITE = SiteConfig.model_validate(
    {
        "id": "school",
        "timezone": "Europe/Berlin",
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [
            {
                "id": "A",
                "rooms": [
                    {"id": "A-204", "schedule": "school-day", "devices": ["ac-204"], "circuits": {"light-204": "lighting"}},
                    {"id": "A-206", "schedule": "school-day", "circuits": {"pump-206": "other"}},
                    {"id": "W-1", "schedule": "school-day", "circuits": {"boiler-1": "water_heating"}},
                    {"id": "K-cold", "circuits": {"fridge-1": "refrigeration"}},
                ],
            }
        ],
        "tariff": {"energy_per_kwh": 0.30, "currency": "EUR"},
    }
)
# Defaults: standby 60 W, grace 15 min (summed), max gap 10 min, min duty 25 % over 60 min,
# off 60 min ends the stretch, at most one update per 5 min.
DEFAULTS = AcAfterHoursConfig()


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(timezone.utc)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def reading(device: str, at: datetime, watts: float) -> Reading:
    return Reading(
        id=stable_event_id("school", device, at.isoformat(), watts),
        site="school",
        device=device,
        event_time=at,
        quantity=Quantity.POWER,
        value=watts,
        unit="W",
    )


def feed(rule: AcAfterHoursRule, device: str, start: datetime, profile: list[tuple[float, float]]) -> list[AlertSignal]:
    """Readings at `start` + minutes with watts."""
    signals: list[AlertSignal] = []
    for minutes, watts in profile:
        signals += rule.on_event(reading(device, start + timedelta(minutes=minutes), watts))
    return signals


def cycling(on: int, off: int, minutes: int, watts: float = 1200) -> list[tuple[float, float]]:
    """A thermostat: `on` min at `watts`, `off` min at 0 W, a reading every minute for `minutes`."""
    return [(m, watts if m % (on + off) < on else 0.0) for m in range(minutes)]


def actions(signals: list[AlertSignal]) -> list[SignalAction]:
    return [s.action for s in signals]


@pytest.fixture
def rule() -> AcAfterHoursRule:
    return AcAfterHoursRule(SITE, DEFAULTS)


# --------------------------------------------------------------------------- thermostat cycling


def test_ac_cycling_12_on_8_off_all_night_is_one_alert_with_all_its_kwh(rule: AcAfterHoursRule) -> None:
    # Tuesday 18:30 to Wednesday 07:30 (school starts) = 13 h = 780 min = 39 cycles of 20 min.
    signals = feed(rule, "ac-204", local("2026-03-03 18:30"), cycling(12, 8, 780))
    signals += rule.on_tick(local("2026-03-04 07:30"))

    # Raised at 18:53: on 18:30-18:42 (12 min) + 18:50-18:53 (3 min) = 15 min, duty 15/23 min = 65 %.
    # Then an update every 5 min: 18:58 ... 07:28 = (07:28 - 18:53) / 5 = 755 / 5 = 151 updates.
    assert actions(signals) == [RAISE] + [UPDATE] * 151 + [RESOLVE]
    assert {s.key for s in signals} == {("school", "ac_after_hours", "A-204")}
    raised, resolved = signals[0], signals[-1]
    assert raised.at == local("2026-03-03 18:53")
    assert raised.details["wasted_kwh"] == pytest.approx(0.3)  # 15 min x 1.2 kW
    assert resolved.at == local("2026-03-04 07:30")
    assert resolved.details["reason"] == "schedule_started"
    # 39 cycles x 12 min = 468 min = 7.8 h on; 7.8 h x 1.2 kW = 9.36 kWh; x 0.30 = 2.808 EUR.
    assert resolved.details["wasted_kwh"] == pytest.approx(9.36)
    assert resolved.details["cost"] == pytest.approx(2.808)
    assert resolved.details["on_minutes"] == pytest.approx(468)
    # The last run ends at 07:10 + 12 min = 07:22: the span is 18:30-07:22 = 772 min, 468/772 on.
    assert resolved.details["since"] == local("2026-03-03 18:30").isoformat()
    assert resolved.details["until"] == local("2026-03-04 07:22").isoformat()
    assert resolved.details["stretch_minutes"] == pytest.approx(772)
    assert resolved.details["duty"] == pytest.approx(468 / 772, abs=1e-4)
    assert resolved.details["kind"] == "ac"
    assert resolved.message == (
        "Schedule of A-204 started at 07:30; AC was on after hours for 12 h 52 min "
        "(cycling: on 7 h 48 min of it), 9.36 kWh wasted (2.81 EUR)"
    )


def test_ac_cycling_20_on_10_off_all_night_is_one_alert(rule: AcAfterHoursRule) -> None:
    # 780 min = 26 cycles of 30 min, 20 min on each: 520 min = 8 h 40 min x 1.2 kW = 10.4 kWh.
    signals = feed(rule, "ac-204", local("2026-03-03 18:30"), cycling(20, 10, 780))
    signals += rule.on_tick(local("2026-03-04 07:30"))

    # Raised at 18:45 (15 min of the first run); updates 18:50 ... 07:25: 760 / 5 = 152.
    assert actions(signals) == [RAISE] + [UPDATE] * 152 + [RESOLVE]
    assert signals[0].at == local("2026-03-03 18:45")
    assert signals[-1].details["wasted_kwh"] == pytest.approx(10.4)
    assert signals[-1].details["cost"] == pytest.approx(3.12)  # 10.4 x 0.30
    assert signals[-1].details["until"] == local("2026-03-04 07:20").isoformat()  # last run 07:00-07:20


def test_low_duty_cycling_is_not_flagged(rule: AcAfterHoursRule) -> None:
    # 5 min on / 25 min off: 15 min summed by 19:35, but any 60 min holds 10 min on = 17 % < 25 %.
    signals = feed(rule, "ac-204", local("2026-03-03 18:30"), cycling(5, 25, 780))
    signals += rule.on_tick(local("2026-03-04 07:30"))
    assert signals == []


def test_lost_readings_mid_stretch_count_nothing_and_keep_one_alert(rule: AcAfterHoursRule) -> None:
    # 12/8 from 18:30, readings of minutes 100-129 (20:10-20:39) lost: 20:09 -> 20:40 is a
    # 31 min gap (> 10), so the on-minutes in it are not counted: 100-111 (12) + 120-129 (10)
    # = 22 min. 468 - 22 = 446 min on x 1.2 kW = 8.92 kWh. A late copy of an old reading is
    # ignored.
    profile = [p for p in cycling(12, 8, 780) if not 100 <= p[0] < 130]
    signals = feed(rule, "ac-204", local("2026-03-03 18:30"), profile)
    signals += feed(rule, "ac-204", local("2026-03-03 18:30"), [(300, 5000)])  # out of order
    signals += rule.on_tick(local("2026-03-04 07:30"))
    assert actions(signals).count(RAISE) == 1
    assert signals[-1].action is RESOLVE
    assert signals[-1].details["wasted_kwh"] == pytest.approx(8.92)
    assert signals[-1].details["on_minutes"] == pytest.approx(446)
    assert rule.stats["gaps"] == 1
    assert rule.stats["out_of_order"] == 1


def test_restart_from_a_snapshot_mid_stretch_keeps_one_alert(rule: AcAfterHoursRule) -> None:
    start, profile = local("2026-03-03 18:30"), cycling(12, 8, 780)
    first = feed(rule, "ac-204", start, profile[:200])  # to 21:49, raised at 18:53
    restored = AcAfterHoursRule(SITE, DEFAULTS)
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    rest = feed(restored, "ac-204", start, profile[200:]) + restored.on_tick(local("2026-03-04 07:30"))

    assert actions(first + rest).count(RAISE) == 1
    assert RAISE not in actions(rest)
    assert rest[-1].action is RESOLVE
    assert rest[-1].details["wasted_kwh"] == pytest.approx(9.36)  # as without the restart
    assert rest[-1].details["since"] == start.isoformat()


def test_restart_inside_the_grace_keeps_the_on_time(rule: AcAfterHoursRule) -> None:
    start, profile = local("2026-03-03 18:30"), cycling(12, 8, 60)
    assert feed(rule, "ac-204", start, profile[:16]) == []  # to 18:45: 12 min on
    restored = AcAfterHoursRule(SITE, DEFAULTS)
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    signals = feed(restored, "ac-204", start, profile[16:24])  # 18:46 ... 18:53
    assert actions(signals) == [RAISE]
    assert signals[0].at == local("2026-03-03 18:53")  # 12 + 3 min, not 15 min from the restart


def test_a_version_1_snapshot_carries_the_open_alert_on(rule: AcAfterHoursRule) -> None:
    # Written by the previous rule: A-204's AC on since 18:00 at 1.2 kW, raised, last read at
    # 18:30 (0.6 kWh so far). After the upgrade the same alert goes on: an UPDATE at 18:35
    # with 35 min x 1.2 kW = 0.7 kWh, since still 18:00.
    old = {
        "version": 1,
        "meters": {
            "ac-204": {
                "last_time": local("2026-03-03 18:30").isoformat(),
                "power_w": 1200.0,
                "run_start": local("2026-03-03 18:00").isoformat(),
                "run_kwh": 0.6,
            }
        },
        "episodes": {
            "A-204": {"since": local("2026-03-03 18:00").isoformat(), "meters": ["ac-204"], "closed_kwh": 0.0, "raised": True}
        },
    }
    rule.restore(json.loads(json.dumps(old)))
    [signal] = feed(rule, "ac-204", local("2026-03-03 18:35"), [(0, 1200)])
    assert signal.action is UPDATE
    assert signal.key == ("school", "ac_after_hours", "A-204")
    assert signal.details["wasted_kwh"] == pytest.approx(0.7)
    assert signal.details["since"] == local("2026-03-03 18:00").isoformat()
    assert rule.state_snapshot()["version"] == 3  # carried on as the current version


# --------------------------------------------------------------------------- short genuine use


def test_ten_minutes_of_genuine_use_after_hours_does_not_page(rule: AcAfterHoursRule) -> None:
    # A teacher: on 18:30-18:40 (10 min < 15), then off; and again 21:00-21:10.
    profile = [(m, 1200 if m < 10 or 150 <= m < 160 else 0) for m in range(0, 240)]
    signals = feed(rule, "ac-204", local("2026-03-03 18:30"), profile)
    signals += rule.on_tick(local("2026-03-03 23:00"))
    assert signals == []
    assert rule.state_snapshot()["episodes"] == {}  # both stretches ended 60 min after the use


# --------------------------------------------------------------------------- off, then on again


def test_on_again_after_off_minutes_is_a_new_alert(rule: AcAfterHoursRule) -> None:
    # On 18:00-19:00 (Tuesday), off until 23:00, on 23:00-23:30, off; a reading every 5 min.
    profile = [(m, 1200 if m < 60 or 300 <= m < 330 else 0) for m in range(0, 360, 5)]
    signals = feed(rule, "ac-204", local("2026-03-03 18:00"), profile)
    signals += rule.on_tick(local("2026-03-04 00:30"))

    raises = [s for s in signals if s.action is RAISE]
    resolves = [s for s in signals if s.action is RESOLVE]
    assert [s.at for s in raises] == [local("2026-03-03 18:15"), local("2026-03-03 23:15")]
    assert [s.at for s in resolves] == [local("2026-03-03 20:00"), local("2026-03-04 00:30")]  # off + 60 min
    assert resolves[0].details["wasted_kwh"] == pytest.approx(1.2)  # 1 h x 1.2 kW
    assert resolves[1].details["wasted_kwh"] == pytest.approx(0.6)  # 30 min x 1.2 kW
    assert resolves[1].details["since"] == local("2026-03-03 23:00").isoformat()
    assert resolves[1].message == (
        "AC in A-204 off since 23:30 on 2026-03-03 after 30 min on after hours, 0.60 kWh wasted (0.18 EUR)"
    )


def test_on_again_within_off_minutes_continues_the_alert(rule: AcAfterHoursRule) -> None:
    # On 18:00-19:00, off 19:00-19:30 (< 60 min), on 19:30-20:00, off.
    profile = [(m, 1200 if m < 60 or 90 <= m < 120 else 0) for m in range(0, 125, 5)]
    signals = feed(rule, "ac-204", local("2026-03-03 18:00"), profile)
    signals += rule.on_tick(local("2026-03-03 21:00"))
    assert actions(signals).count(RAISE) == 1
    assert actions(signals)[-1] is RESOLVE
    assert signals[-1].at == local("2026-03-03 21:00")  # off 20:00 + 60 min
    assert signals[-1].details["wasted_kwh"] == pytest.approx(1.8)  # (60 + 30) min x 1.2 kW
    assert signals[-1].details["on_minutes"] == pytest.approx(90)
    assert signals[-1].details["stretch_minutes"] == pytest.approx(120)  # 18:00-20:00


# --------------------------------------------------------------------------- circuit kinds


def test_lights_and_ac_in_one_room_are_two_alerts_named_by_kind(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 19:00")
    signals: list[AlertSignal] = []
    for minutes in range(0, 20, 5):
        signals += feed(rule, "ac-204", start, [(minutes, 1200)])
        signals += feed(rule, "light-204", start, [(minutes, 400)])
    ac, lights = signals
    assert (ac.action, lights.action) == (RAISE, RAISE)
    assert ac.key == ("school", "ac_after_hours", "A-204")
    assert lights.key == ("school", "lights_after_hours", "A-204")
    assert (ac.details["kind"], lights.details["kind"]) == ("ac", "lighting")
    assert (ac.details["device"], lights.details["device"]) == ("ac-204", "light-204")
    # 1.2 kW x 0.25 h = 0.30 kWh, 0.09 EUR; 0.4 kW x 0.25 h = 0.10 kWh, 0.03 EUR.
    assert ac.message == "AC in A-204 on after hours for 15 min, 0.30 kWh wasted (0.09 EUR)"
    assert lights.message == "Lights in A-204 on after hours for 15 min, 0.10 kWh wasted (0.03 EUR)"


def test_water_heating_and_other_circuits_have_their_own_rules(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 19:00")
    [boiler] = feed(rule, "boiler-1", start, [(m, 2000) for m in range(0, 20, 5)])
    [pump] = feed(rule, "pump-206", start, [(m, 800) for m in range(0, 20, 5)])
    assert boiler.key == ("school", "water_heating_after_hours", "W-1")
    assert pump.key == ("school", "power_after_hours", "A-206")
    # 2 kW x 0.25 h = 0.50 kWh, 0.15 EUR; 0.8 kW x 0.25 h = 0.20 kWh, 0.06 EUR.
    assert boiler.message == "Water heating in W-1 on after hours for 15 min, 0.50 kWh wasted (0.15 EUR)"
    assert pump.message == "Equipment in A-206 on after hours for 15 min, 0.20 kWh wasted (0.06 EUR)"


def test_refrigeration_on_all_night_never_raises(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 18:00")
    signals = feed(rule, "fridge-1", start, [(m, 300) for m in range(0, 14 * 60, 5)])  # 18:00-08:00
    signals += rule.on_tick(local("2026-03-04 08:00"))
    assert signals == []
    assert rule.stats["always_on"] == 14 * 12  # every reading was seen and left alone
    assert rule.stats["unlocated"] == 0


def test_every_judged_kind_has_a_known_alert_rule() -> None:
    assert set(AFTER_HOURS_RULES) == {"ac", "lighting", "water_heating", "other"}
    assert set(AFTER_HOURS_RULES.values()) <= ALERT_RULES


def test_circuits_make_their_meters_devices_of_the_room() -> None:
    room = SITE.buildings[0].rooms[0]
    assert room.devices == ["ac-204", "light-204"]
    assert SITE.locate("light-204") is not None
    assert (SITE.circuit_kind("light-204"), SITE.circuit_kind("ac-204")) == ("lighting", "ac")


def test_an_unknown_circuit_kind_is_refused_naming_the_key() -> None:
    bad = {"id": "s", "timezone": "UTC", "buildings": [{"id": "A", "rooms": [{"id": "1", "circuits": {"m": "heater"}}]}]}
    with pytest.raises(ValidationError, match=r"buildings\.0\.rooms\.0\.circuits\.m"):
        SiteConfig.model_validate(bad)


def test_a_circuit_listed_in_two_rooms_is_refused() -> None:
    rooms = [{"id": "1", "devices": ["m"]}, {"id": "2", "circuits": {"m": "lighting"}}]
    with pytest.raises(ValidationError, match="already in room 1"):
        SiteConfig.model_validate({"id": "s", "timezone": "UTC", "buildings": [{"id": "A", "rooms": rooms}]})


# --------------------------------------------------------------------------- daylight saving


def test_a_stretch_across_the_fall_back_night_counts_elapsed_time(rule: AcAfterHoursRule) -> None:
    # Saturday 2026-10-24 18:30 CEST (16:30 UTC) to Sunday 08:00 CET (07:00 UTC): the wall
    # clock shows 13 h 30 min, but 14 h 30 min = 870 min elapse (02:00-03:00 happens twice).
    start = utc("2026-10-24 16:30")
    profile = [(m, 1200.0) for m in range(0, 870, 5)] + [(870.0, 0.0)]
    signals = feed(rule, "ac-204", start, profile)
    signals += rule.on_tick(utc("2026-10-25 08:00"))

    assert actions(signals).count(RAISE) == 1
    resolved = signals[-1]
    assert resolved.action is RESOLVE
    assert resolved.at == utc("2026-10-25 08:00")  # off at 07:00 UTC + 60 min
    assert resolved.details["wasted_kwh"] == pytest.approx(17.4)  # 14.5 h x 1.2 kW
    assert resolved.details["cost"] == pytest.approx(5.22)  # 17.4 x 0.30
    assert resolved.details["stretch_minutes"] == pytest.approx(870)
    # The clocks changed that day, so the time carries its offset.
    assert resolved.message == (
        "AC in A-204 off since 08:00+01:00 after 14 h 30 min on after hours, 17.40 kWh wasted (5.22 EUR)"
    )


# --------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(on=st.integers(min_value=1, max_value=40), off=st.integers(min_value=1, max_value=59))
def test_any_thermostat_cycle_gives_at_most_one_alert_per_night(on: int, off: int) -> None:
    """Off phases shorter than off_minutes never split a night into several alerts, and the
    resolve carries rated power x minutes on (counted here from the pattern, not the rule)."""
    rule = AcAfterHoursRule(SITE, DEFAULTS)
    profile = cycling(on, off, 780)
    signals = feed(rule, "ac-204", local("2026-03-03 18:30"), profile) + rule.on_tick(local("2026-03-04 07:30"))
    assert actions(signals).count(RAISE) <= 1
    assert actions(signals).count(RESOLVE) == actions(signals).count(RAISE)
    if signals:
        # Each reading holds for 1 min (the 07:29 one until the 07:30 schedule start).
        minutes_on = sum(1 for _, watts in profile if watts > 0)
        assert signals[-1].details["wasted_kwh"] == pytest.approx(1.2 * minutes_on / 60)
