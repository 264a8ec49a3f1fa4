"""The simulators' own calendar (simulators/calendar.py), the cold-room simulator, and the
ground truth of the issue-20 scenarios. The simulators' calendar is a second
implementation of docs/rules.md#calendars: where it and the rules' (warden/calendar.py
through rules/schedule.py) disagree, one of them is wrong, so they are compared over the
whole school year here. Expected values are worked out by hand beside each assertion."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from rules.schedule import is_scheduled
from simulators.calendar import price_band, schedule_spans, seconds_by_band, what_day
from simulators.catalogue import load_scenario
from simulators.cold_room import TemperatureSensorSim
from simulators.ground_truth import implied_alerts
from tests.rules.test_calendar import SCHOOL

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


def test_make_up_saturday_spans_follow_tuesday() -> None:
    spans = schedule_spans(SCHOOL, "school-day", local("2026-10-10 00:00"), local("2026-10-11 23:59"))
    # Saturday on Tuesday's 07:30-21:30, then Sunday's own 18:30-21:30
    assert spans == [(local("2026-10-10 07:30"), local("2026-10-10 21:30")),
                     (local("2026-10-11 18:30"), local("2026-10-11 21:30"))]
    assert what_day(SCHOOL, datetime(2026, 10, 10).date(), "school-day") == (1, "school-day")


def test_vacation_duty_hours_and_the_open_dormitory() -> None:
    day = (local("2027-01-25 00:00"), local("2027-01-26 00:00"))
    assert schedule_spans(SCHOOL, "school-day", *day) == []
    assert schedule_spans(SCHOOL, "office-day", *day) == [(local("2027-01-25 09:00"), local("2027-01-25 12:00"))]
    assert schedule_spans(SCHOOL, "dorm", *day, building="D", room="D-102") == []
    assert schedule_spans(SCHOOL, "dorm", *day, building="D", room="D-101") == [
        (local("2027-01-24 17:00"), local("2027-01-25 08:00")),  # 17:00-08:00 every night
        (local("2027-01-25 17:00"), local("2027-01-26 08:00")),
    ]


def test_out_of_season_days_have_no_spans() -> None:
    winter = SCHOOL.buildings[0].rooms[2].seasons["water_heating"]
    september = (local("2026-09-15 00:00"), local("2026-09-16 00:00"))
    assert schedule_spans(SCHOOL, "school-day", *september, season=winter) == []
    assert schedule_spans(SCHOOL, "school-day", *september) == [(local("2026-09-15 07:30"), local("2026-09-15 21:30"))]


@pytest.mark.parametrize(
    ("schedule", "building", "room"),
    [("school-day", "B", "B-301"), ("office-day", "B", "B-OFF"), ("dorm", "D", "D-101"), ("dorm", "D", "D-102")],
)
def test_both_calendars_agree_over_the_school_year(schedule: str, building: str, room: str) -> None:
    """Every 30 min from 1 Sept 2026 to 31 Aug 2027, the rules' answer and the
    simulators' spans say the same (the first and last day excepted: spans need context)."""
    t0, t1 = local("2026-09-01 00:00"), local("2027-08-31 00:00")
    spans = schedule_spans(SCHOOL, schedule, t0 - 86400, t1 + 86400, building=building, room=room)
    disagreements = []
    t = t0
    while t < t1:
        truth = any(a <= t < b for a, b in spans)
        at = datetime.fromtimestamp(t, tz=timezone.utc)
        if is_scheduled(SCHOOL, schedule, at, building=building, room=room) != truth:
            disagreements.append(at.astimezone(SHANGHAI).isoformat())
        t += 1800
    assert disagreements == []


def test_price_bands() -> None:
    scenario = load_scenario("peak-priced-ac")
    site = scenario.site
    assert [price_band(site, local(f"2026-11-12 {hh}")) for hh in ("07:59", "08:00", "17:30", "18:00", "21:00", "22:00", "05:59")] == [
        "flat", "peak", "flat", "peak", "flat", "valley", "valley",
    ]
    # 17:00-22:30: flat 2 h, peak 3 h, valley 0.5 h
    assert seconds_by_band(site, local("2026-11-12 17:00"), local("2026-11-12 22:30")) == {
        "flat": 7200, "peak": 10800, "valley": 1800,
    }


def test_the_cold_room_curve() -> None:
    scenario = load_scenario("cold-room-door")
    sim = TemperatureSensorSim(scenario.devices[1], scenario, seed=7)  # type: ignore[arg-type]
    # door open 01:00-01:20: 3 + 0.5 x 10 = 8 at 01:10, 13 at 01:20; cooling 0.1/min: 8 at
    # 02:10 (50 min), 5 at 02:40, the setpoint 3 from 03:00 (100 min)
    assert [round(sim.celsius(local(f"2026-11-19 {hh}")), 3) for hh in ("00:59", "01:10", "01:20", "02:10", "02:40", "03:00", "03:30")] == [
        3.0, 8.0, 13.0, 8.0, 5.0, 3.0, 3.0,
    ]
    # defrost at 22:00: 10 °C at 22:10 (halfway), 6.5 at 22:05 and 22:15, 3 again from 22:20
    assert [round(sim.celsius(local(f"2026-11-18 {hh}")), 3) for hh in ("22:05", "22:10", "22:15", "22:20")] == [
        6.5, 10.0, 6.5, 3.0,
    ]


def test_ground_truth_of_the_issue_20_scenarios() -> None:
    def alerts(name: str) -> list[tuple[str, str, dict[str, tuple[float, float]]]]:
        return [(a.rule, a.subject, {k: (round(lo, 2), round(hi, 2)) for k, (lo, hi) in a.values.items()})
                for a in implied_alerts(load_scenario(name)) if not a.borderline]

    # 21:30 (Tuesday's timetable) to 23:40 at 0.6 kW = 1.30 kWh, 90 % low bound 1.17
    assert alerts("makeup-saturday") == [("lights_after_hours", "B-303", {"wasted_kwh": (1.17, 1.3)})]
    # vacation: 08:00-17:45 at 1 kW = 9.75 kWh; the office and D-101 page nothing
    assert alerts("vacation-week") == [("ac_after_hours", "B-301", {"wasted_kwh": (8.78, 9.75)})]
    # out of season: 16:00-22:00 at 3 kW = 18 kWh
    assert alerts("water-heater-out-of-season") == [("water_heating_after_hours", "B-WC", {"wasted_kwh": (16.2, 18.0)})]
    # 2 kW 17:00-22:30: 11 kWh; 4 x 0.66 + 6 x 1.10 + 1 x 0.27 = 9.51 CNY
    assert alerts("peak-priced-ac") == [("ac_after_hours", "A-OFF", {
        "wasted_kwh": (9.9, 11.0), "cost": (8.56, 9.51), "kwh_peak": (5.4, 6.0), "kwh_flat": (3.6, 4.0),
        "kwh_valley": (0.9, 1.0),
    })]
    # above 8 °C 01:10-02:10 = 60 min (two readings' slack either way), peak 13 °C
    assert alerts("cold-room-door") == [
        ("door_held_open", "cold-door", {}),
        ("cold_room_warm", "K-COLD", {"peak_c": (12.9, 13.1), "minutes": (58.0, 62.0)}),
    ]


def test_without_the_calendar_the_truth_would_expect_other_alerts() -> None:
    """The scenarios depend on the calendar: the same vacation day read as a plain Monday
    makes the timer's run school time (no alert)."""
    scenario = load_scenario("vacation-week")
    plain = scenario.model_copy(update={"site": scenario.site.model_copy(update={"calendar": None})})
    assert [a.rule for a in implied_alerts(plain)] == []


def test_a_timer_on_the_rooms_days_skips_the_calendars_holidays() -> None:
    """A fixed run without its own days runs on the room's schedule days but never on a
    holiday: with a calendar, its holidays too (Mon 5 Oct 2026, National Day)."""
    from datetime import time

    from simulators.base import ScheduleBook

    book = ScheduleBook(SCHOOL, local("2026-10-06 00:00"), local("2026-10-08 23:59"), margin_days=0)
    runs = book.daily_run(time(7, 40), time(17, 45), None, "school-day")
    assert runs == [(local("2026-10-08 07:40"), local("2026-10-08 17:45"))]  # Thursday 8 Oct only
