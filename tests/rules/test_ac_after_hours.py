from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.ac_after_hours import AcAfterHoursConfig, AcAfterHoursRule
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import is_scheduled
from warden.config import SiteConfig
from warden.events import DoorAction, DoorEvent, Quantity, Reading, stable_event_id

BERLIN = ZoneInfo("Europe/Berlin")
RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

SITE = SiteConfig.model_validate(
    {
        "id": "school",
        "timezone": "Europe/Berlin",
        "holidays": ["2026-03-05"],
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [
            {
                "id": "A",
                "rooms": [
                    {"id": "A-204", "schedule": "school-day", "devices": ["ac-204"]},
                    {"id": "A-205", "schedule": "school-day", "devices": ["ac-205a", "ac-205b"]},
                    {"id": "A-server", "devices": ["ac-srv"]},
                ],
            }
        ],
        "tariff": {"energy_per_kwh": 0.30, "currency": "EUR"},
    }
)
DEFAULTS = AcAfterHoursConfig()  # standby 60 W, grace 15 min, max gap 10 min


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(timezone.utc)


def reading(device: str, at: datetime, value: float, unit: str = "W", site: str = "school") -> Reading:
    return Reading(
        id=stable_event_id(site, device, at.isoformat(), value),
        site=site,
        device=device,
        event_time=at,
        quantity=Quantity.POWER,
        value=value,
        unit=unit,
    )


def feed(rule: AcAfterHoursRule, device: str, start: datetime, profile: list[tuple[float, float]]) -> list[AlertSignal]:
    """Readings at `start` + minutes with watts, e.g. [(0, 1200), (5, 1200), (10, 0)]."""
    signals: list[AlertSignal] = []
    for minutes, watts in profile:
        signals += rule.on_event(reading(device, start + timedelta(minutes=minutes), watts))
    return signals


def every(step: float, until: float, watts: float) -> list[tuple[float, float]]:
    """A constant power profile from minute 0 to `until` (exclusive) every `step` minutes."""
    count = int(until / step)
    return [(i * step, watts) for i in range(count)]


def actions(signals: list[AlertSignal]) -> list[SignalAction]:
    return [s.action for s in signals]


@pytest.fixture
def rule() -> AcAfterHoursRule:
    return AcAfterHoursRule(SITE, DEFAULTS)


# --------------------------------------------------------------------------- grace and raise


def test_grace_period_is_respected_to_the_second(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 18:20")  # Tuesday, after school
    assert feed(rule, "ac-204", start, [(0, 1200), (5, 1200), (10, 1200)]) == []
    assert rule.on_event(reading("ac-204", start + timedelta(minutes=15, seconds=-1), 1200)) == []
    [signal] = rule.on_event(reading("ac-204", start + timedelta(minutes=15), 1200))

    assert signal.action is RAISE
    assert signal.severity is Severity.WARNING
    assert signal.key == ("school", "ac_after_hours", "A-204")
    assert signal.at == start + timedelta(minutes=15)
    assert signal.details["wasted_kwh"] == pytest.approx(0.3)  # 1.2 kW for 15 min
    assert signal.details["cost"] == pytest.approx(0.09)
    assert signal.details["currency"] == "EUR"
    assert signal.details["power_w"] == 1200
    assert signal.details["since"] == "2026-03-03T17:20:00+00:00"
    assert (signal.details["device"], signal.details["building"], signal.details["room"]) == ("ac-204", "A", "A-204")
    assert signal.message == "AC in A-204 on after hours for 15 min, 0.30 kWh wasted (0.09 EUR)"


def test_worked_example_from_the_docs(rule: AcAfterHoursRule) -> None:
    """docs/rules.md: on at 18:20, a reading every 5 min, down to 40 W at 19:20.

    Changed by issue 16: updates come at most every update_minutes (5), and the alert
    resolves once the AC has been off for off_minutes (60), at 20:20, not at 19:20."""
    signals = feed(rule, "ac-204", local("2026-03-03 18:20"), [*every(5, 60, 1200), (60, 40)])

    assert actions(signals) == [RAISE] + [UPDATE] * 9  # 18:35; 18:40 ... 19:20 every 5 min
    raised = signals[0]
    assert raised.at == local("2026-03-03 18:35")
    assert raised.details["wasted_kwh"] == pytest.approx(0.3)
    assert [s.details["wasted_kwh"] for s in signals[1:3]] == pytest.approx([0.4, 0.5])
    assert signals[-1].details["until"] == local("2026-03-03 19:20").isoformat()
    assert rule.on_tick(local("2026-03-03 20:19:59")) == []
    [resolved] = rule.on_tick(local("2026-03-03 20:25"))
    assert resolved.action is RESOLVE
    assert resolved.at == local("2026-03-03 20:20")  # off at 19:20 + 60 min
    assert resolved.details["wasted_kwh"] == pytest.approx(1.2)  # 1.2 kW x 1 h
    assert resolved.details["cost"] == pytest.approx(0.36)
    assert resolved.details["power_w"] == 40
    assert resolved.details["reason"] == "power_off"
    assert resolved.details["until"] == local("2026-03-03 19:20").isoformat()
    assert resolved.message == "AC in A-204 off since 19:20 after 1 h 00 min on after hours, 1.20 kWh wasted (0.36 EUR)"



def test_worked_example_with_lost_readings(rule: AcAfterHoursRule) -> None:
    profile = [p for p in [*every(5, 60, 1200), (60, 40)] if p[0] not in (30, 35)]  # 18:50, 18:55 lost
    signals = feed(rule, "ac-204", local("2026-03-03 18:20"), profile)
    assert signals[-1].details["wasted_kwh"] == pytest.approx(0.9)
    assert signals[-1].details["cost"] == pytest.approx(0.27)

def test_two_hours_at_1200_watts_wastes_2_4_kwh(rule: AcAfterHoursRule) -> None:
    signals = feed(rule, "ac-204", local("2026-03-03 19:00"), [*every(1, 120, 1200), (120, 0)])
    assert actions(signals) == [RAISE] + [UPDATE] * 21  # 19:15, then 19:20 ... 21:00 every 5 min
    [resolved] = rule.on_tick(local("2026-03-03 22:00"))  # off at 21:00 + 60 min
    assert resolved.details["wasted_kwh"] == pytest.approx(2.4)
    assert resolved.details["cost"] == pytest.approx(0.72)


def test_left_rectangle_integration() -> None:
    # 1000 W for 6 min, then 2000 W for 6 min: 0.1 + 0.2 kWh (trapezoid would give 0.25).
    # No grace and no minimum waste, so every reading shows the running total.
    config = AcAfterHoursConfig(grace_minutes=0, min_kwh=0)
    rule = AcAfterHoursRule(SITE, config)
    signals = feed(rule, "ac-204", local("2026-03-03 19:00"), [(0, 1000), (6, 2000), (12, 0)])
    signals += rule.on_tick(local("2026-03-03 20:12"))
    assert actions(signals) == [RAISE, UPDATE, UPDATE, RESOLVE]
    assert [s.details["wasted_kwh"] for s in signals] == pytest.approx([0.0, 0.1, 0.3, 0.3])


def test_kilowatts_are_converted(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 19:00")
    for minutes in (0, 5, 10):
        rule.on_event(reading("ac-204", start + timedelta(minutes=minutes), 1.2, unit="kW"))
    [signal] = rule.on_event(reading("ac-204", start + timedelta(minutes=15), 1.2, unit="kW"))
    assert signal.details["wasted_kwh"] == pytest.approx(0.3)
    assert signal.details["power_w"] == 1200


def test_unsupported_unit_and_other_readings_are_ignored(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 19:00")
    assert rule.on_event(reading("ac-204", start, 1200, unit="VA")) == []
    assert rule.on_event(reading("unknown-meter", start, 1200)) == []
    door = DoorEvent(id="door-event-1", site="school", device="ac-204", event_time=start, action=DoorAction.OPENED, door="d1")
    assert rule.on_event(door) == []
    assert rule.stats["unsupported_unit"] == 1
    assert rule.stats["unlocated"] == 1
    assert rule.state_snapshot()["episodes"] == {}


def test_standby_power_is_not_a_run(rule: AcAfterHoursRule) -> None:
    signals = feed(rule, "ac-204", local("2026-03-03 19:00"), every(5, 120, 60))  # exactly standby
    assert signals == []
    assert rule.state_snapshot()["episodes"] == {}


# --------------------------------------------------------------------------- gaps and ordering


def test_interval_longer_than_max_gap_is_not_integrated(rule: AcAfterHoursRule) -> None:
    # 19:05 -> 19:25 is 20 min of silence (> 10): those 20 min count nothing, so the 15 min
    # of on-time are 19:00-19:05, 19:25-19:30 and 19:30-19:35, reached at the 19:35 reading.
    signals = feed(rule, "ac-204", local("2026-03-03 19:00"), [(0, 1200), (5, 1200), (25, 1200), (30, 1200), (35, 0)])
    assert actions(signals) == [RAISE]
    assert signals[0].at == local("2026-03-03 19:35")
    assert signals[0].details["wasted_kwh"] == pytest.approx(0.3)  # 15 of 35 minutes at 1.2 kW
    assert signals[0].details["on_minutes"] == pytest.approx(15)
    assert signals[0].details["stretch_minutes"] == pytest.approx(35)  # the stretch itself spans the gap
    [resolved] = rule.on_tick(local("2026-03-03 20:35"))
    assert resolved.details["wasted_kwh"] == pytest.approx(0.3)
    assert rule.stats["gaps"] == 1


def test_interval_of_exactly_max_gap_is_integrated() -> None:
    rule = AcAfterHoursRule(SITE, AcAfterHoursConfig(grace_minutes=0))
    signals = feed(rule, "ac-204", local("2026-03-03 19:00"), [(0, 1200), (10, 1200), (20, 0)])
    assert signals[-1].details["wasted_kwh"] == pytest.approx(0.4)
    assert rule.stats["gaps"] == 0


def test_out_of_order_reading_is_ignored_and_counted(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 19:00")
    feed(rule, "ac-204", start, [(0, 1200), (10, 1200)])
    assert rule.on_event(reading("ac-204", start + timedelta(minutes=5), 3000)) == []
    assert rule.stats["out_of_order"] == 1
    assert feed(rule, "ac-204", start, [(12, 0)]) == []  # 12 min on: under the 15 min grace
    assert rule.state_snapshot()["meters"]["ac-204"]["power_w"] == 0
    # On again at 19:30, inside off_minutes: the same stretch, so on-time adds up (issue 16):
    # 12 + 10 = 22 min at 19:40, duty 22 of 40 min = 55 % >= 25 %: RAISE.
    signals = feed(rule, "ac-204", start, [(30, 1200), (40, 1200), (45, 1200), (50, 0)])
    assert actions(signals) == [RAISE, UPDATE, UPDATE]
    assert signals[0].at == start + timedelta(minutes=40)
    assert signals[0].details["wasted_kwh"] == pytest.approx(1.2 * 22 / 60)
    assert signals[-1].details["wasted_kwh"] == pytest.approx(1.2 * 32 / 60)  # 12 + 20 min, 3000 W ignored


def test_out_of_order_reading_does_not_disturb_the_totals(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 19:00")
    feed(rule, "ac-204", start, [(0, 1200), (10, 1200), (15, 1200)])
    assert rule.on_event(reading("ac-204", start + timedelta(minutes=12), 3000)) == []
    [resolved] = feed(rule, "ac-204", start, [(20, 0)])
    assert resolved.details["wasted_kwh"] == pytest.approx(0.4)  # 1200 W throughout, 3000 W ignored


# --------------------------------------------------------------------------- resolving at schedule start


def test_resolves_when_the_schedule_starts_on_the_next_reading(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-04 06:00")  # Wednesday morning, school starts 07:30
    signals = feed(rule, "ac-204", start, every(5, 90, 1200))  # last reading 07:25
    assert actions(signals) == [RAISE] + [UPDATE] * 14

    [resolved] = rule.on_event(reading("ac-204", local("2026-03-04 07:35"), 1200))
    assert resolved.action is RESOLVE
    assert resolved.at == local("2026-03-04 07:30")
    assert resolved.details["wasted_kwh"] == pytest.approx(1.8)  # 06:00-07:30, not past 07:30
    assert resolved.details["reason"] == "schedule_started"
    assert "07:30" in resolved.message and "1.80 kWh" in resolved.message
    # AC on during school hours is fine.
    assert feed(rule, "ac-204", local("2026-03-04 07:40"), every(5, 60, 1200)) == []


def test_resolves_on_tick_when_the_schedule_starts(rule: AcAfterHoursRule) -> None:
    feed(rule, "ac-204", local("2026-03-04 06:00"), every(5, 90, 1200))
    assert rule.on_tick(local("2026-03-04 07:29:59")) == []
    [resolved] = rule.on_tick(local("2026-03-04 07:30"))
    assert resolved.action is RESOLVE
    assert resolved.at == local("2026-03-04 07:30")
    assert resolved.details["wasted_kwh"] == pytest.approx(1.8)
    assert rule.on_tick(local("2026-03-04 07:31")) == []
    # A late reading from before the schedule start belongs to a settled episode.
    assert rule.on_event(reading("ac-204", local("2026-03-04 07:28"), 1200)) == []
    assert rule.stats["out_of_order"] == 1
    assert rule.on_event(reading("ac-204", local("2026-03-04 07:35"), 1200)) == []


def test_silent_meter_keeps_the_episode_open_on_tick(rule: AcAfterHoursRule) -> None:
    feed(rule, "ac-204", local("2026-03-03 19:00"), every(5, 20, 1200))
    assert rule.on_tick(local("2026-03-03 23:00")) == []
    assert "ac:A-204" in rule.state_snapshot()["episodes"]


def test_no_run_started_during_school_hours_even_if_on_until_after(rule: AcAfterHoursRule) -> None:
    # On all afternoon; the run starts with the first reading after 18:00.
    signals = feed(rule, "ac-204", local("2026-03-03 17:00"), every(5, 80, 1200))  # 17:00-18:15
    assert actions(signals) == [RAISE]
    assert signals[0].at == local("2026-03-03 18:15")
    assert signals[0].details["since"] == local("2026-03-03 18:00").isoformat()


def test_holiday_daytime_is_after_hours(rule: AcAfterHoursRule) -> None:
    signals = feed(rule, "ac-204", local("2026-03-05 10:00"), every(5, 20, 1200))
    assert actions(signals) == [RAISE]


def test_room_without_schedule_is_always_after_hours(rule: AcAfterHoursRule) -> None:
    signals = feed(rule, "ac-srv", local("2026-03-03 10:00"), every(5, 20, 800))
    assert actions(signals) == [RAISE]
    assert signals[0].subject == "A-server"
    assert rule.on_tick(local("2026-03-10 10:00")) == []


# --------------------------------------------------------------------------- one alert per room


def test_two_meters_in_one_room_make_one_alert(rule: AcAfterHoursRule) -> None:
    t = local("2026-03-03 19:00")
    plan = [
        (0, "ac-205a", 1000, []),
        (5, "ac-205b", 1000, []),
        (10, "ac-205a", 1000, []),
        (10, "ac-205b", 1000, []),
        (15, "ac-205a", 1000, [RAISE]),
        (20, "ac-205a", 0, [UPDATE]),  # one unit off, the other still on
        (20, "ac-205b", 1000, []),  # updates at most every 5 min (issue 16)
        (30, "ac-205b", 0, [UPDATE]),  # both off: resolved after off_minutes (issue 16)
    ]
    signals = []
    for minutes, device, watts, expected in plan:
        produced = rule.on_event(reading(device, t + timedelta(minutes=minutes), watts))
        assert actions(produced) == expected, (minutes, device)
        signals += produced
    assert {s.subject for s in signals} == {"A-205"}
    assert signals[0].details["wasted_kwh"] == pytest.approx(0.25 + 1 / 12)
    assert signals[0].details["power_w"] == 2000
    assert signals[0].details["device"] == "ac-205a,ac-205b"
    [resolved] = rule.on_tick(t + timedelta(minutes=90))
    assert resolved.action is RESOLVE
    assert resolved.details["wasted_kwh"] == pytest.approx(1 / 3 + 25 / 60)  # 20 + 25 min at 1 kW
    assert resolved.details["on_minutes"] == pytest.approx(30)  # 19:00-19:30: one of them on (union)


def test_repeated_room_ids_get_building_qualified_subjects() -> None:
    site = SiteConfig.model_validate(
        {
            "id": "campus",
            "timezone": "Europe/Berlin",
            "buildings": [
                {"id": "A", "rooms": [{"id": "101", "devices": ["ac-a"]}]},
                {"id": "B", "rooms": [{"id": "101", "devices": ["ac-b"]}]},
            ],
        }
    )
    rule = AcAfterHoursRule(site, AcAfterHoursConfig(grace_minutes=0, min_kwh=0))  # raise at the first reading
    start = local("2026-03-03 19:00")
    [a] = rule.on_event(reading("ac-a", start, 1000, site="campus"))
    [b] = rule.on_event(reading("ac-b", start, 1000, site="campus"))
    assert (a.subject, b.subject) == ("A:101", "B:101")


# --------------------------------------------------------------------------- persistence


def test_snapshot_restore_continues_the_raised_run(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 18:20")
    assert actions(feed(rule, "ac-204", start, every(5, 25, 1200))) == [RAISE, UPDATE]  # to 18:40
    snapshot = json.loads(json.dumps(rule.state_snapshot()))

    restored = AcAfterHoursRule(SITE, DEFAULTS)
    restored.restore(snapshot)
    [signal] = feed(restored, "ac-204", start, [(25, 1200)])
    assert signal.action is UPDATE
    assert signal.details["since"] == start.isoformat()
    assert signal.details["wasted_kwh"] == pytest.approx(0.5)


def test_snapshot_restore_does_not_restart_the_grace_timer(rule: AcAfterHoursRule) -> None:
    start = local("2026-03-03 18:20")
    feed(rule, "ac-204", start, [(0, 1200), (10, 1200)])
    restored = AcAfterHoursRule(SITE, DEFAULTS)
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    [signal] = feed(restored, "ac-204", start, [(15, 1200)])
    assert signal.action is RAISE
    assert signal.details["wasted_kwh"] == pytest.approx(0.3)


def test_restored_episode_still_resolves_at_schedule_start(rule: AcAfterHoursRule) -> None:
    feed(rule, "ac-204", local("2026-03-04 06:00"), every(5, 30, 1200))
    restored = AcAfterHoursRule(SITE, DEFAULTS)
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    [resolved] = restored.on_tick(local("2026-03-04 08:00"))
    assert resolved.at == local("2026-03-04 07:30")


def test_restore_refuses_an_unknown_version(rule: AcAfterHoursRule) -> None:
    with pytest.raises(ValueError, match="version"):
        rule.restore({"version": 99, "meters": {}, "episodes": {}})


# --------------------------------------------------------------------------- properties

_school_day_profile = st.lists(
    st.tuples(st.integers(min_value=1, max_value=900), st.floats(min_value=0, max_value=5000)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(profile=_school_day_profile, grace=st.sampled_from([0.0, 1.0, 15.0]))
def test_nothing_is_ever_signalled_during_scheduled_hours(profile: list[tuple[int, float]], grace: float) -> None:
    rule = AcAfterHoursRule(SITE, AcAfterHoursConfig(grace_minutes=grace))
    at, end = local("2026-03-03 07:30"), local("2026-03-03 18:00")
    for step, watts in profile:
        if at >= end:
            break
        assert rule.on_event(reading("ac-204", at, watts)) == []
        assert rule.on_tick(at) == []
        at += timedelta(seconds=step)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1800), st.sampled_from([0.0, 30.0, 500.0, 1500.0])),
        min_size=1,
        max_size=80,
    ),
    start_minute=st.integers(min_value=0, max_value=24 * 60),
)
def test_signals_follow_the_alert_lifecycle(steps: list[tuple[int, float]], start_minute: int) -> None:
    """Over any profile crossing schedule boundaries: RAISE only when nothing is open,
    UPDATE and RESOLVE only when raised, RAISE/UPDATE never in scheduled time, waste never shrinks."""
    rule = AcAfterHoursRule(SITE, DEFAULTS)
    at = local("2026-03-03 00:00") + timedelta(minutes=start_minute)
    open_waste: float | None = None
    for step, watts in steps:
        at += timedelta(seconds=step)
        signals = rule.on_event(reading("ac-204", at, watts)) + rule.on_tick(at)
        for signal in signals:
            if signal.action is RAISE:
                assert open_waste is None
                assert not is_scheduled(SITE, "school-day", signal.at)
                open_waste = float(signal.details["wasted_kwh"])
                continue
            assert open_waste is not None
            assert float(signal.details["wasted_kwh"]) >= open_waste - 1e-9
            open_waste = float(signal.details["wasted_kwh"])
            if signal.action is UPDATE:
                assert not is_scheduled(SITE, "school-day", signal.at)
            else:
                open_waste = None
