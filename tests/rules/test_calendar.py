"""Site calendars (warden/calendar.py) as the rules see them through rules/schedule.py:
the worked Chinese school year of docs/rules.md#calendars, make-up days, vacations, room
exceptions, moved holidays, seasons, calendar files, and time-of-use bands. Expected
values are read off the calendar file and the timetable by hand."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rules.ac_after_hours import AcAfterHoursConfig, AcAfterHoursRule
from rules.alerts import SignalAction
from rules.schedule import ScheduleSpans, is_scheduled, next_change
from warden.calendar import Calendar, Season, TimeOfUse, is_workday, parse_icalendar, plan_day, split_by_band
from warden.config import ConfigError, SiteConfig, load_config
from warden.events import Quantity, Reading, stable_event_id

SHANGHAI = ZoneInfo("Asia/Shanghai")
CALENDAR_FILE = Path(__file__).parents[2] / "simulators" / "scenarios" / "calendars" / "cn-school-2026-27.yaml"

SCHEDULES = {
    "school-day": [
        {"days": "mon-thu", "hours": "07:30-21:30"},
        {"days": "fri", "hours": "07:30-16:30"},
        {"days": "sun", "hours": "18:30-21:30"},
    ],
    "office-day": [{"days": "mon-fri", "hours": "08:00-17:00"}],
    "duty-day": [{"days": "mon-fri", "hours": "09:00-12:00"}],
    "dorm": [{"days": "mon-sun", "hours": "17:00-08:00"}],
    "dorm-vacation": [{"days": "mon-sun", "hours": "17:00-08:00"}],
}
ROOMS = [
    {"id": "B", "rooms": [
        {"id": "B-301", "schedule": "school-day", "devices": ["ac-301"]},
        {"id": "B-OFF", "schedule": "office-day"},
        {"id": "B-WC", "schedule": "school-day", "circuits": {"heater-1": "water_heating"},
         "seasons": {"water_heating": {"start": "11-01", "end": "03-31"}}},
    ]},
    {"id": "D", "rooms": [{"id": "D-101", "schedule": "dorm"}, {"id": "D-102", "schedule": "dorm"}]},
    {"id": "A", "rooms": [{"id": "A-OFF", "schedule": "office-day", "devices": ["ac-off"]}]},
]


def site(calendar: object = None, **extra: object) -> SiteConfig:
    data = {"id": "chenguang", "timezone": "Asia/Shanghai", "schedules": SCHEDULES, "buildings": ROOMS, **extra}
    if calendar is not None:
        data["calendar"] = calendar
    return SiteConfig.model_validate(data)


SCHOOL = site({"path": str(CALENDAR_FILE)})
PLAIN = site()


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).astimezone(timezone.utc)


# --------------------------------------------------------------------------- the school year


def test_the_calendar_file_loads_with_its_periods_and_make_up_days() -> None:
    calendar = SCHOOL.calendar
    assert calendar is not None and calendar.name == "Chenguang Middle School 2026-27"
    assert [(w.date, w.follows) for w in calendar.workdays] == [(date(2026, 9, 20), 0), (date(2026, 10, 10), 1)]
    assert [p.kind for p in calendar.periods] == ["term", "vacation", "term", "vacation"]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-10-10 07:29", False),  # Saturday, a make-up day on Tuesday's timetable: 07:30-21:30
        ("2026-10-10 07:30", True),
        ("2026-10-10 19:00", True),  # evening self-study, as on a Tuesday
        ("2026-10-10 21:29:59", True),
        ("2026-10-10 21:30", False),
        ("2026-10-17 19:00", False),  # the next Saturday is a weekend day again
        ("2026-10-05 10:00", False),  # Monday in the National Day holiday (10-01 to 10-07)
        ("2026-10-08 10:00", True),  # Thursday after it: school
        ("2026-09-20 20:00", True),  # Sunday 20 Sept, a make-up day on Monday's timetable (to 21:30)
        ("2026-09-20 21:45", False),
        ("2027-01-25 10:00", False),  # Monday in the winter vacation: school-day -> none
        ("2027-02-22 07:30", True),  # first day of the spring term
    ],
)
def test_classrooms_follow_the_school_year(when: str, expected: bool) -> None:
    assert is_scheduled(SCHOOL, "school-day", local(when)) is expected


def test_without_the_calendar_the_make_up_saturday_is_a_weekend() -> None:
    assert not is_scheduled(PLAIN, "school-day", local("2026-10-10 19:00"))
    assert is_scheduled(PLAIN, "school-day", local("2027-01-25 10:00"))  # and the vacation a school week


def test_vacation_maps_the_office_to_duty_hours_and_a_room_exception_keeps_a_dormitory_open() -> None:
    assert is_scheduled(SCHOOL, "office-day", local("2027-01-25 09:30"))  # duty-day 09:00-12:00
    assert not is_scheduled(SCHOOL, "office-day", local("2027-01-25 13:00"))  # office-day would be 08:00-17:00
    assert is_scheduled(SCHOOL, "dorm", local("2027-01-25 23:00"), building="D", room="D-101")  # exception
    assert not is_scheduled(SCHOOL, "dorm", local("2027-01-25 23:00"), building="D", room="D-102")  # dorm -> none
    assert is_scheduled(SCHOOL, "dorm", local("2026-11-17 23:00"), building="D", room="D-102")  # in term


def test_next_change_reaches_across_the_make_up_day_and_the_vacation() -> None:
    # Friday 9 Oct ends at 16:30; the next start is the make-up Saturday's 07:30, not Monday's.
    assert next_change(SCHOOL, "school-day", local("2026-10-09 17:00")) == local("2026-10-10 07:30")
    # The last term day (Friday 22 Jan) ends at 16:30; the vacation runs to Sunday 21 Feb,
    # so the next start is Monday 22 Feb 07:30.
    assert next_change(SCHOOL, "school-day", local("2027-01-22 17:00")) == local("2027-02-22 07:30")
    spans = ScheduleSpans(SCHOOL)
    at = local("2027-01-25 23:00")
    assert spans.is_scheduled("dorm", at, building="D", room="D-101")
    assert not spans.is_scheduled("dorm", at, building="D", room="D-102")  # cached per room, not per schedule
    assert spans.next_change("dorm", at, building="D", room="D-101") == local("2027-01-26 08:00")


def test_a_holiday_cuts_last_nights_window_and_a_vacation_day_too() -> None:
    # Dorm 17:00-08:00: the night of Friday 22 Jan (term) runs into Saturday 23 Jan, the
    # first vacation day, in which dorm -> none: unscheduled all day, from midnight.
    assert is_scheduled(SCHOOL, "dorm", local("2027-01-22 23:59"), building="D", room="D-102")
    assert not is_scheduled(SCHOOL, "dorm", local("2027-01-23 00:30"), building="D", room="D-102")


def test_moved_holiday_and_plan_reasons() -> None:
    calendar = Calendar.model_validate({
        "moved": [{"from": "2026-06-19", "to": "2026-06-22"}],
        "workdays": [{"date": "2026-06-20", "follows": "fri"}],
    })
    moved = site(calendar.model_dump(mode="json", by_alias=True), holidays=["2026-06-19"])
    assert is_scheduled(moved, "office-day", local("2026-06-19 10:00"))  # Friday: the holiday moved away
    assert not is_scheduled(moved, "office-day", local("2026-06-22 10:00"))  # Monday: it moved here
    assert is_scheduled(moved, "office-day", local("2026-06-20 10:00"))  # Saturday worked, on Friday's hours
    plan = plan_day(moved.calendar, moved.holidays, date(2026, 6, 20), "office-day")
    assert (plan.off, plan.weekday, plan.why) == (False, 4, "make-up day")


def test_the_site_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    """The simulators write the scenario's site for the gateway: the calendar goes with it."""
    path = tmp_path / "site.yaml"
    path.write_text(json.dumps(SCHOOL.model_dump(mode="json")))
    path = path.rename(tmp_path / "site.json.yaml")
    again = load_config(path, SiteConfig)
    for when in ("2026-10-10 19:00", "2027-01-25 10:00"):
        assert is_scheduled(again, "school-day", local(when)) == is_scheduled(SCHOOL, "school-day", local(when))
    assert is_scheduled(again, "dorm", local("2027-01-25 23:00"), building="D", room="D-101")


# --------------------------------------------------------------------------- files and errors


def test_calendar_files_are_relative_to_the_site_file_and_share_between_sites(tmp_path: Path) -> None:
    (tmp_path / "calendars").mkdir()
    (tmp_path / "calendars" / "year.json").write_text(json.dumps({"workdays": [{"date": "2026-10-10", "follows": "tue"}]}))
    for name in ("north", "south"):
        (tmp_path / f"{name}.yaml").write_text(
            f"id: {name}\ntimezone: Asia/Shanghai\ncalendar: {{path: calendars/year.json}}\n"
            "schedules: {s: [{days: tue, hours: '08:00-12:00'}]}\n"
        )
        loaded = load_config(tmp_path / f"{name}.yaml", SiteConfig)
        assert is_scheduled(loaded, "s", local("2026-10-10 09:00"))


def test_errors_name_the_key(tmp_path: Path) -> None:
    bad = {"periods": [{"name": "x", "start": "2027-01-23", "end": "2027-02-21", "schedules": {"school-day": "nope"}}]}
    with pytest.raises(ValueError, match=r"calendar\.periods\[0\]\.schedules\.school-day: unknown schedule 'nope'"):
        site(bad)
    with pytest.raises(ValueError, match=r"workdays\[0\]: 2026-10-01 is also a holiday"):
        Calendar.model_validate({"holidays": ["2026-10-01"], "workdays": [{"date": "2026-10-01", "follows": "mon"}]})
    with pytest.raises(ValueError, match="expected a weekday"):
        Calendar.model_validate({"workdays": [{"date": "2026-10-10", "follows": "someday"}]})
    path = tmp_path / "site.yaml"
    path.write_text("id: s\ntimezone: Asia/Shanghai\ncalendar: {periods: [{start: 2027-02-01, end: 2027-01-01}]}\n")
    with pytest.raises(ConfigError, match=r"calendar\.periods\[0\]: end: must not be before start"):
        load_config(path, SiteConfig)


def test_icalendar_import() -> None:
    text = (
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261001\r\nDTEND;VALUE=DATE:20261008\r\n"
        "SUMMARY:国庆节\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261010\r\n"
        "SUMMARY:调休上班 tue\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART:20261012T090000Z\r\n"
        "SUMMARY:meeting\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    calendar = Calendar.model_validate(parse_icalendar(text))
    assert [(h.start, h.end) for h in calendar.holidays] == [(date(2026, 10, 1), date(2026, 10, 7))]  # DTEND exclusive
    assert [(w.date, w.follows) for w in calendar.workdays] == [(date(2026, 10, 10), 1)]


# --------------------------------------------------------------------------- seasons


def test_a_season_wraps_the_new_year() -> None:
    winter = Season.model_validate({"start": "11-01", "end": "03-31"})
    assert [winter.contains(date(2026, m, d)) for m, d in [(10, 31), (11, 1), (1, 15), (3, 31), (4, 1)]] == [
        False, True, True, True, False,
    ]
    with pytest.raises(ValueError, match="month-day"):
        Season.model_validate({"start": "11", "end": "03-31"})


def test_out_of_season_a_water_heater_is_after_hours_all_day() -> None:
    winter = SCHOOL.buildings[0].rooms[2].seasons["water_heating"]
    # Tuesday 15 Sept 10:00 is school time, but not the heater's season.
    assert is_scheduled(SCHOOL, "school-day", local("2026-09-15 10:00"))
    assert not is_scheduled(SCHOOL, "school-day", local("2026-09-15 10:00"), season=winter)
    assert is_scheduled(SCHOOL, "school-day", local("2026-11-17 10:00"), season=winter)
    rule = AcAfterHoursRule(SCHOOL, AcAfterHoursConfig())
    signals = []
    for minute in range(0, 20, 5):  # 3 kW from 10:00, a reading every 5 min until 10:15
        at = local("2026-09-15 10:00") + timedelta(minutes=minute)
        signals += rule.on_event(power("heater-1", at, 3000))
    [raised] = signals
    # 15 min on at 3 kW = 0.75 kWh, 0.225 EUR at the default 0.30.
    assert (raised.rule, raised.subject, raised.action) == ("water_heating_after_hours", "B-WC", SignalAction.RAISE)
    assert raised.details["wasted_kwh"] == pytest.approx(0.75)
    assert (raised.details["in_season"], raised.details["season"]) == ("no", "11-01 to 03-31")
    assert "out of season (runs 11-01 to 03-31)" in raised.message
    in_season = AcAfterHoursRule(SCHOOL, AcAfterHoursConfig())
    assert [s for m in range(0, 35, 5)
            for s in in_season.on_event(power("heater-1", local("2026-11-17 10:00") + timedelta(minutes=m), 3000))] == []


# --------------------------------------------------------------------------- time of use

TOU = {
    "bands": {"peak": 1.10, "flat": 0.66, "valley": 0.27},
    "default_band": "flat",
    "windows": [
        {"band": "peak", "hours": "08:00-11:00"},
        {"band": "peak", "hours": "18:00-21:00"},
        {"band": "valley", "hours": "22:00-06:00"},
    ],
}


def power(device: str, at: datetime, watts: float) -> Reading:
    return Reading(id=stable_event_id("chenguang", device, at.isoformat(), watts), site="chenguang", device=device,
                   event_time=at, quantity=Quantity.POWER, value=watts, unit="W")


def test_split_by_band() -> None:
    tou = TimeOfUse.model_validate(TOU)
    seconds = split_by_band(tou, SHANGHAI, None, [], local("2026-11-12 17:00"), local("2026-11-12 22:30"))
    # flat 17-18 and 21-22 (2 h), peak 18-21 (3 h), valley 22:00-22:30
    assert seconds == {"flat": 7200, "peak": 10800, "valley": 1800}


def test_day_types_and_seasons_pick_the_band() -> None:
    tou = TimeOfUse.model_validate({
        "bands": {"critical": 1.32, "peak": 1.10, "flat": 0.66},
        "default_band": "flat",
        "seasons": {"summer": {"start": "07-01", "end": "09-30"}},
        "windows": [
            {"band": "critical", "hours": "12:00-14:00", "season": "summer"},
            {"band": "peak", "hours": "08:00-21:00", "days": "workday"},
        ],
    })
    calendar = SCHOOL.calendar
    noon = datetime(2026, 8, 3, 12, 30)  # a summer Monday
    assert tou.band_at(noon, is_workday(calendar, [], noon.date())) == "critical"
    assert tou.band_at(noon.replace(month=11, day=16), True) == "peak"  # November Monday: no critical window
    assert not is_workday(calendar, [], date(2026, 10, 5))  # National Day
    assert is_workday(calendar, [], date(2026, 10, 10))  # make-up Saturday
    assert tou.band_at(datetime(2026, 10, 11, 10, 0), is_workday(calendar, [], date(2026, 10, 11))) == "flat"  # Sunday
    with pytest.raises(ValueError, match=r"windows\[0\]\.band: 'nope'"):
        TimeOfUse.model_validate({**TOU, "windows": [{"band": "nope", "hours": "08:00-09:00"}]})


def test_a_window_that_can_never_apply_is_refused_naming_it() -> None:
    # The first window covering an instant names its band: a summer critical hour 12:00-14:00
    # listed after an all-year peak 08:00-21:00 on all days would never be charged.
    critical = {"band": "critical", "hours": "12:00-14:00", "season": "summer"}
    shadowing = {
        "bands": {"critical": 1.32, "peak": 1.10, "flat": 0.66}, "default_band": "flat",
        "seasons": {"summer": {"start": "07-01", "end": "09-30"}},
        "windows": [{"band": "peak", "hours": "08:00-21:00"}, critical],
    }
    with pytest.raises(ValueError, match=r"windows\[1\]: never applies"):
        TimeOfUse.model_validate(shadowing)
    # Covered on workdays only, it still applies on rest days; one minute uncovered is enough too.
    TimeOfUse.model_validate({**shadowing, "windows": [{"band": "peak", "hours": "08:00-21:00", "days": "workday"}, critical]})
    TimeOfUse.model_validate({**shadowing, "windows": [{"band": "peak", "hours": "08:00-13:59"}, critical]})
    # Across midnight: valley 22:00-06:00 covers 23:00-05:00 listed after it.
    with pytest.raises(ValueError, match=r"windows\[3\]: never applies"):
        TimeOfUse.model_validate({**TOU, "windows": [*TOU["windows"], {"band": "peak", "hours": "23:00-05:00"}]})


def test_waste_is_priced_by_band_and_survives_a_restart() -> None:
    priced = site(None, tariff={"currency": "CNY", "time_of_use": TOU})
    rule = AcAfterHoursRule(priced, AcAfterHoursConfig())
    start = local("2026-11-12 17:00")  # Thursday: the office's day ended at 17:00
    signals = []
    for minute in range(0, 330, 5):  # 2 kW every 5 min from 17:00 to 22:25
        signals += rule.on_event(power("ac-off", start + timedelta(minutes=minute), 2000))
        if minute == 120:  # restart mid-stretch: the band totals carry on
            snapshot = json.loads(json.dumps(rule.state_snapshot()))
            rule = AcAfterHoursRule(priced, AcAfterHoursConfig())
            rule.restore(snapshot)
    signals += rule.on_event(power("ac-off", start + timedelta(minutes=330), 0))
    signals += rule.on_tick(start + timedelta(minutes=390))
    resolved = signals[-1]
    assert resolved.action == SignalAction.RESOLVE
    # 2 kW: flat 2 h = 4 kWh, peak 3 h = 6 kWh, valley 0.5 h = 1 kWh; 4 x 0.66 + 6 x 1.10 + 1 x 0.27 = 9.51
    assert {k: resolved.details[k] for k in ("kwh_flat", "kwh_peak", "kwh_valley", "wasted_kwh")} == pytest.approx(
        {"kwh_flat": 4.0, "kwh_peak": 6.0, "kwh_valley": 1.0, "wasted_kwh": 11.0})
    assert resolved.details["cost"] == pytest.approx(9.51)
    assert resolved.details["cost_peak"] == pytest.approx(6.6)
    assert "11.00 kWh wasted (9.51 CNY), 6.00 kWh at peak" in resolved.message



@pytest.mark.parametrize(
    ("when", "classroom", "office", "d101", "d102"),
    [  # the worked school year of docs/rules.md#calendars, row by row
        ("2026-09-15 20:00", True, False, True, True),
        ("2026-09-20 20:00", True, False, True, True),
        ("2026-09-25 10:00", False, False, False, False),
        ("2026-10-05 10:00", False, False, False, False),
        ("2026-10-10 19:00", True, False, True, True),
        ("2026-10-17 19:00", False, False, True, True),
        ("2027-01-22 23:59", False, False, True, True),
        ("2027-01-23 00:30", False, False, True, False),
        ("2027-01-25 10:00", False, True, False, False),
        ("2027-01-25 13:00", False, False, False, False),
        ("2027-02-22 07:30", True, False, True, False),
    ],
)
def test_the_documented_school_year(when: str, classroom: bool, office: bool, d101: bool, d102: bool) -> None:
    at = local(when)
    assert is_scheduled(SCHOOL, "school-day", at, building="B", room="B-301") is classroom
    assert is_scheduled(SCHOOL, "office-day", at, building="B", room="B-OFF") is office
    assert is_scheduled(SCHOOL, "dorm", at, building="D", room="D-101") is d101
    assert is_scheduled(SCHOOL, "dorm", at, building="D", room="D-102") is d102


def test_an_icalendar_file_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "cn.ics").write_text(
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261010\nSUMMARY:补班 make-up tue\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    (tmp_path / "site.yaml").write_text(
        "id: s\ntimezone: Asia/Shanghai\ncalendar: {path: cn.ics}\nschedules: {s: [{days: tue, hours: '08:00-12:00'}]}\n"
    )
    assert is_scheduled(load_config(tmp_path / "site.yaml", SiteConfig), "s", local("2026-10-10 09:00"))
    (tmp_path / "site.yaml").write_text("id: s\ntimezone: Asia/Shanghai\ncalendar: {path: nowhere.json}\n")
    with pytest.raises(ConfigError, match=r"site.yaml: calendar: .*path: cannot read the calendar"):
        load_config(tmp_path / "site.yaml", SiteConfig)


def test_an_exam_week_for_one_building() -> None:
    """Exam week in building B: its classrooms run exam-day (07:00-12:00); others keep theirs."""
    calendar = {"exceptions": [{"name": "期末考试 exams", "start": "2027-01-18", "end": "2027-01-22", "buildings": ["B"],
                                "schedules": {"school-day": "exam-day"}}]}
    exams = site(calendar, schedules={**SCHEDULES, "exam-day": [{"days": "mon-fri", "hours": "07:00-12:00"}]})
    monday = "2027-01-18"
    assert is_scheduled(exams, "school-day", local(f"{monday} 07:10"), building="B", room="B-301")
    assert not is_scheduled(exams, "school-day", local(f"{monday} 15:00"), building="B", room="B-301")
    assert is_scheduled(exams, "school-day", local(f"{monday} 15:00"), building="C", room="C-101")  # not in B
    assert is_scheduled(exams, "office-day", local(f"{monday} 15:00"), building="B", room="B-OFF")  # not mapped
