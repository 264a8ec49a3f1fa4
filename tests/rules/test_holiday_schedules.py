"""Holidays and schedules that run around the clock (docs/rules.md#holidays).

A server room's or a ward's comfort AC may run all day every day; a public holiday must
not turn that into "AC after hours". A classroom's schedule still observes the holiday,
a make-up Saturday still runs its weekday's timetable, room exceptions still win.
Expected alerts are read off the timetable by hand: 1200 W every 5 min and a 15 min grace
make a RAISE at minute 15 when the room is unscheduled, nothing when it is scheduled.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from rules import schedule
from rules.ac_after_hours import AcAfterHoursConfig, AcAfterHoursRule
from rules.alerts import SignalAction
from rules.schedule import is_scheduled, next_change
from simulators.calendar import schedule_spans
from warden.calendar import around_the_clock
from warden.config import ConfigError, SiteConfig, WeeklyWindow, load_config
from warden.events import Quantity, Reading, stable_event_id

SHANGHAI = ZoneInfo("Asia/Shanghai")
RAISE = SignalAction.RAISE
ALL_DAY = [{"days": "mon-sun", "hours": "00:00-24:00"}]
CLASSROOM = [{"days": "mon-fri", "hours": "08:00-17:00"}]
CALENDAR = {
    "holidays": [{"name": "National Day", "start": "2026-10-01", "end": "2026-10-07"}],  # Thu 1 Oct to Wed 7 Oct
    "workdays": [{"date": "2026-10-10", "follows": "tue"}],  # 调休: Saturday on Tuesday's timetable
    "exceptions": [
        {"name": "exam", "start": "2026-10-05", "end": "2026-10-05", "rooms": ["C-102"], "schedule": "classroom"},
        {"name": "maintenance", "start": "2026-10-06", "end": "2026-10-06", "rooms": ["S-1"], "closed": True},
    ],
}
ROOMS = [
    {"id": "S", "rooms": [{"id": "S-1", "schedule": "around-the-clock", "devices": ["ac-srv"]},
                          {"id": "W-1", "schedule": "ward-cut", "devices": ["ac-ward"]}]},
    {"id": "C", "rooms": [{"id": "C-101", "schedule": "classroom", "devices": ["ac-101"]},
                          {"id": "C-102", "schedule": "classroom", "devices": ["ac-102"]},
                          {"id": "C-OFF", "schedule": "duty", "devices": ["ac-duty"]}]},
]


def make_site(**extra: Any) -> SiteConfig:
    schedules = {
        "around-the-clock": ALL_DAY,
        "ward-cut": {"windows": ALL_DAY, "holidays": "off"},  # says so: a holiday cuts it after all
        "classroom": CLASSROOM,
        "duty": {"holidays": "keep", "windows": CLASSROOM},  # an office that works through holidays
    }
    return SiteConfig.model_validate(
        {"id": "campus", "timezone": "Asia/Shanghai", "schedules": schedules, "buildings": ROOMS, **extra}
    )


SITE = make_site(calendar=CALENDAR)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).astimezone(timezone.utc)


def run_ac(site: SiteConfig, device: str, start: datetime) -> list[SignalAction]:
    """1200 W at minutes 0, 5, 10, 15 from `start`, judged by a fresh rule."""
    rule = AcAfterHoursRule(site, AcAfterHoursConfig())
    actions: list[SignalAction] = []
    for minutes in (0, 5, 10, 15):
        at = start + timedelta(minutes=minutes)
        event = Reading(id=stable_event_id("campus", device, at.isoformat()), site="campus", device=device,
                        event_time=at, quantity=Quantity.POWER, value=1200, unit="W")
        actions += [s.action for s in rule.on_event(event)]
    return actions


@pytest.mark.parametrize(
    ("device", "start", "expected"),
    [
        # Thu 1 Oct, National Day: the 24x7 room runs, the classroom is off all day.
        ("ac-srv", "2026-10-01 10:00", []),
        ("ac-srv", "2026-10-01 00:30", []),  # just past midnight into the holiday
        ("ac-101", "2026-10-01 10:00", [RAISE]),
        ("ac-ward", "2026-10-01 10:00", [RAISE]),  # 24x7 but `holidays: off`
        ("ac-duty", "2026-10-01 10:00", []),  # `holidays: keep`: Thursday's 08:00-17:00 runs
        ("ac-duty", "2026-10-01 18:00", [RAISE]),  # ... and ends at 17:00 as on any Thursday
        # Mon 5 Oct: the exam exception wins over the holiday for C-102 only.
        ("ac-102", "2026-10-05 10:00", []),
        ("ac-101", "2026-10-05 10:00", [RAISE]),
        # Tue 6 Oct: the server room is closed by an exception; that wins over keeping holidays.
        ("ac-srv", "2026-10-06 10:00", [RAISE]),
        # Sat 10 Oct, make-up day on Tuesday's timetable: classroom 08:00-17:00, server room always.
        ("ac-101", "2026-10-10 10:00", []),
        ("ac-101", "2026-10-10 18:00", [RAISE]),
        ("ac-srv", "2026-10-10 18:00", []),
        # Sat 17 Oct, an ordinary Saturday: no classes.
        ("ac-101", "2026-10-17 10:00", [RAISE]),
        ("ac-srv", "2026-10-17 10:00", []),
    ],
)
def test_ac_after_hours_on_holidays_and_make_up_days(device: str, start: str, expected: list[SignalAction]) -> None:
    assert run_ac(SITE, device, local(start)) == expected


def test_a_site_holiday_list_without_calendar_keeps_the_24x7_room_running() -> None:
    plain = make_site(holidays=["2026-10-01"])
    assert run_ac(plain, "ac-srv", local("2026-10-01 10:00")) == []
    assert run_ac(plain, "ac-101", local("2026-10-01 10:00")) == [RAISE]
    assert run_ac(plain, "ac-ward", local("2026-10-01 10:00")) == [RAISE]


def test_the_24x7_room_never_changes_over_the_holiday_week() -> None:
    # Wed 30 Sept 12:00: scheduled, and stays so through the holiday until the maintenance
    # exception closes the room at local midnight starting Tue 6 Oct.
    at = local("2026-09-30 12:00")
    assert is_scheduled(SITE, "around-the-clock", at, building="S", room="S-1")
    assert next_change(SITE, "around-the-clock", at, building="S", room="S-1") == local("2026-10-06 00:00")
    assert next_change(SITE, "around-the-clock", at) is None  # without the room: no exception applies


def test_the_ground_truth_calendar_agrees() -> None:
    """simulators/calendar.py reimplements the rule from the docs: over the holiday week
    the 24x7 schedule is one span, and the classroom has none from Thu 1 to Wed 7 Oct."""
    t0, t1 = local("2026-10-01 00:00").timestamp(), local("2026-10-08 00:00").timestamp()
    [(a, b)] = schedule_spans(SITE, "around-the-clock", t0, t1)  # spans overlapping [t0, t1], unclipped
    assert a <= t0 and b >= t1
    assert schedule_spans(SITE, "classroom", t0, local("2026-10-07 23:59").timestamp()) == []
    assert schedule_spans(SITE, "ward-cut", t0, t1) == []


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        (ALL_DAY, True),
        ([{"days": "mon-sun", "hours": "08:00-08:00"}], True),  # 24 h from 08:00 every day
        ([{"days": "mon-sun", "hours": "00:00-12:00"}, {"days": "mon-sun", "hours": "12:00-24:00"}], True),
        ([{"days": "mon-sat", "hours": "00:00-24:00"}], False),  # Sunday is missing
        ([{"days": "mon-sun", "hours": "00:00-23:59"}], False),  # one minute a day is missing
        ([{"days": "mon-sun", "hours": "17:00-08:00"}], False),  # a dormitory's nights
        ([], False),
    ],
)
def test_around_the_clock(windows: list[dict[str, str]], expected: bool) -> None:
    assert around_the_clock(WeeklyWindow.model_validate(w) for w in windows) is expected


def test_the_default_policy_and_what_is_written_back() -> None:
    assert SITE.holiday_keepers == {"around-the-clock", "duty"}
    written = SITE.model_dump(mode="json")
    assert written["schedules"]["duty"] == {"windows": [{"days": "mon,tue,wed,thu,fri", "hours": "08:00-17:00"}],
                                            "holidays": "keep"}
    assert written["schedules"]["classroom"] == [{"days": "mon,tue,wed,thu,fri", "hours": "08:00-17:00"}]
    assert "schedule_holidays" not in written
    assert SiteConfig.model_validate(written) == SITE


def test_yaml_off_is_read_as_off(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `off` as false; the policy still means off."""
    (tmp_path / "site.yaml").write_text(
        "id: s\ntimezone: Asia/Shanghai\nholidays: [2026-10-01]\n"
        "schedules:\n  ward:\n    holidays: off\n    windows: [{days: mon-sun, hours: '00:00-24:00'}]\n",
        encoding="utf-8",
    )
    site = load_config(tmp_path / "site.yaml", SiteConfig)
    assert site.holiday_keepers == frozenset()
    assert not is_scheduled(site, "ward", local("2026-10-01 10:00"))
    assert is_scheduled(site, "ward", local("2026-10-02 10:00"))
    assert time(0) == site.schedules["ward"][0].start


@pytest.mark.parametrize(
    ("schedule", "key"),
    [
        ({"windows": ALL_DAY, "holidays": "sometimes"}, "schedules.ward.holidays: expected 'off' or 'keep'"),
        ({"windows": ALL_DAY, "hours": "00:00-24:00"}, "schedules.ward.hours: unknown key"),
        ({"holidays": "keep"}, "schedules.ward.windows: required key is missing"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, schedule: dict[str, Any], key: str) -> None:
    (tmp_path / "site.yaml").write_text(
        yaml.safe_dump({"id": "s", "timezone": "UTC", "schedules": {"ward": schedule}}), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "site.yaml", SiteConfig)
    assert key in str(caught.value)


def test_a_schedule_that_never_changes_is_computed_once_per_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 24x7 room's meter reports every few seconds: its span (no change within the
    400-day horizon) is remembered, not recomputed by walking the calendar per reading."""
    calls: list[datetime] = []
    original = schedule.next_change

    def counted(site: SiteConfig, name: str | None, at: datetime, **where: Any) -> datetime | None:
        calls.append(at)
        return original(site, name, at, **where)

    monkeypatch.setattr(schedule, "next_change", counted)
    spans = schedule.ScheduleSpans(SITE)
    start = local("2026-10-02 10:00")  # a holiday: kept
    answers = [spans.is_scheduled("around-the-clock", start + timedelta(seconds=10 * n)) for n in range(100)]
    assert answers == [True] * 100
    assert len(calls) == 1
