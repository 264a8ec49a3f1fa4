from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.schedule import ScheduleSpans, is_scheduled, next_change, wall_clock
from warden.config import SiteConfig

BERLIN = ZoneInfo("Europe/Berlin")


def make_site(schedules: dict[str, list[dict[str, str]]], holidays: tuple[str, ...] = ()) -> SiteConfig:
    return SiteConfig.model_validate(
        {"id": "school", "timezone": "Europe/Berlin", "holidays": list(holidays), "schedules": schedules}
    )


def local(text: str) -> datetime:
    """A Berlin wall-clock time as a UTC instant (not for the repeated fall-back hour)."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(timezone.utc)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


SCHOOL = make_site({"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]}, holidays=("2026-03-05",))


# --------------------------------------------------------------------------- is_scheduled


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-03-03 07:29:59", False),  # Tuesday, just before the start
        ("2026-03-03 07:30:00", True),  # start is inclusive
        ("2026-03-03 12:00:00", True),
        ("2026-03-03 17:59:59", True),
        ("2026-03-03 18:00:00", False),  # end is exclusive
        ("2026-03-07 12:00:00", False),  # Saturday
        ("2026-03-08 12:00:00", False),  # Sunday
        ("2026-03-05 12:00:00", False),  # Thursday, but a holiday
        ("2026-03-06 12:00:00", True),  # the Friday after the holiday
    ],
)
def test_weekday_weekend_and_holiday(when: str, expected: bool) -> None:
    assert is_scheduled(SCHOOL, "school-day", local(when)) is expected


def test_no_schedule_is_never_scheduled() -> None:
    assert not is_scheduled(SCHOOL, None, local("2026-03-03 12:00"))


def test_unknown_schedule_is_an_error() -> None:
    with pytest.raises(KeyError, match="no schedule 'nope'"):
        is_scheduled(SCHOOL, "nope", local("2026-03-03 12:00"))


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_scheduled(SCHOOL, "school-day", datetime(2026, 3, 3, 12))


def test_converts_from_utc_to_local_time() -> None:
    # 06:45 UTC is 07:45 in Berlin in winter: scheduled, although 06:45 < 07:30.
    assert is_scheduled(SCHOOL, "school-day", utc("2026-03-03 06:45"))
    assert not is_scheduled(SCHOOL, "school-day", utc("2026-03-03 06:15"))


NIGHT = make_site({"night": [{"days": "fri", "hours": "22:00-06:00"}]}, holidays=("2026-03-13",))


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-03-06 21:59:59", False),  # Friday before the start
        ("2026-03-06 22:00:00", True),
        ("2026-03-06 23:59:59", True),
        ("2026-03-07 00:00:00", True),  # Saturday morning belongs to Friday's window
        ("2026-03-07 05:59:59", True),
        ("2026-03-07 06:00:00", False),
        ("2026-03-07 23:00:00", False),  # Saturday night: Saturday is not in the days
        ("2026-03-06 02:00:00", False),  # Friday early morning: Thursday's window, none
        ("2026-03-13 23:00:00", False),  # Friday that is a holiday: the window does not run
        ("2026-03-14 02:00:00", False),  # ... nor its morning part
    ],
)
def test_window_past_midnight_belongs_to_its_start_day(when: str, expected: bool) -> None:
    assert is_scheduled(NIGHT, "night", local(when)) is expected


def test_holiday_is_unscheduled_all_day_even_inside_a_night_window() -> None:
    site = make_site({"night": [{"days": "fri", "hours": "22:00-06:00"}]}, holidays=("2026-03-07",))
    assert is_scheduled(site, "night", local("2026-03-06 23:00"))
    assert not is_scheduled(site, "night", local("2026-03-07 02:00"))


def test_end_24_00_runs_until_midnight() -> None:
    site = make_site({"evening": [{"days": "tue", "hours": "20:00-24:00"}]})
    assert is_scheduled(site, "evening", local("2026-03-03 23:59:59"))
    assert not is_scheduled(site, "evening", local("2026-03-04 00:00"))


# --------------------------------------------------------------------------- daylight saving


def test_spring_forward_uses_local_wall_clock() -> None:
    # Berlin moves from CET (+1) to CEST (+2) at 01:00 UTC on Sunday 2026-03-29.
    # 06:00 UTC is 07:00 local on Friday before (unscheduled) but 08:00 on Monday after.
    assert not is_scheduled(SCHOOL, "school-day", utc("2026-03-27 06:00"))
    assert is_scheduled(SCHOOL, "school-day", utc("2026-03-30 06:00"))
    assert is_scheduled(SCHOOL, "school-day", utc("2026-03-30 05:30"))  # 07:30 CEST
    assert not is_scheduled(SCHOOL, "school-day", utc("2026-03-30 05:29:59"))


def test_spring_forward_night_window() -> None:
    site = make_site({"night": [{"days": "sat", "hours": "23:00-03:30"}]})
    assert is_scheduled(site, "night", utc("2026-03-29 00:59:59"))  # 01:59:59 CET
    assert is_scheduled(site, "night", utc("2026-03-29 01:00"))  # 03:00 CEST, an hour skipped
    assert is_scheduled(site, "night", utc("2026-03-29 01:29:59"))  # 03:29:59 CEST
    assert not is_scheduled(site, "night", utc("2026-03-29 01:30"))  # 03:30 CEST


def test_fall_back_repeated_hour_is_judged_by_wall_clock_both_times() -> None:
    # Berlin moves from CEST (+2) to CET (+1) at 01:00 UTC on Sunday 2026-10-25:
    # local 02:30 happens at 00:30 UTC and again at 01:30 UTC.
    site = make_site({"check": [{"days": "sun", "hours": "02:00-03:00"}]})
    assert not is_scheduled(site, "check", utc("2026-10-24 23:59:59"))  # 01:59:59 CEST
    assert is_scheduled(site, "check", utc("2026-10-25 00:30"))  # first 02:30
    assert is_scheduled(site, "check", utc("2026-10-25 01:30"))  # second 02:30
    assert not is_scheduled(site, "check", utc("2026-10-25 02:00"))  # 03:00 CET


def test_fall_back_window_inside_the_repeated_hour_is_left_and_reentered() -> None:
    site = make_site({"late": [{"days": "sun", "hours": "02:45-04:00"}]})
    assert is_scheduled(site, "late", utc("2026-10-25 00:50"))  # 02:50 CEST
    assert not is_scheduled(site, "late", utc("2026-10-25 01:10"))  # 02:10 CET
    assert is_scheduled(site, "late", utc("2026-10-25 01:45"))  # 02:45 CET


# --------------------------------------------------------------------------- next_change


def test_next_change_end_of_day_and_over_the_weekend() -> None:
    assert next_change(SCHOOL, "school-day", local("2026-03-03 17:00")) == local("2026-03-03 18:00")
    assert next_change(SCHOOL, "school-day", local("2026-03-03 18:00")) == local("2026-03-04 07:30")
    assert next_change(SCHOOL, "school-day", local("2026-03-06 19:00")) == local("2026-03-09 07:30")


def test_next_change_skips_holidays() -> None:
    assert next_change(SCHOOL, "school-day", local("2026-03-04 19:00")) == local("2026-03-06 07:30")


def test_next_change_across_dst() -> None:
    assert next_change(SCHOOL, "school-day", local("2026-03-27 19:00")) == utc("2026-03-30 05:30")
    assert next_change(SCHOOL, "school-day", local("2026-10-23 19:00")) == utc("2026-10-26 06:30")


def test_next_change_when_start_is_skipped_by_spring_forward() -> None:
    # 02:30 does not exist on 2026-03-29; the window starts when the clocks jump to 03:00.
    site = make_site({"x": [{"days": "sun", "hours": "02:30-05:00"}]})
    assert next_change(site, "x", utc("2026-03-28 23:00")) == utc("2026-03-29 01:00")


def test_next_change_when_the_clock_falls_back_out_of_a_window() -> None:
    site = make_site({"late": [{"days": "sun", "hours": "02:45-04:00"}]})
    assert next_change(site, "late", utc("2026-10-25 00:50")) == utc("2026-10-25 01:00")
    assert next_change(site, "late", utc("2026-10-25 01:00")) == utc("2026-10-25 01:45")


def test_next_change_none_when_it_never_changes() -> None:
    assert next_change(SCHOOL, None, local("2026-03-03 12:00")) is None
    assert next_change(make_site({"empty": []}), "empty", local("2026-03-03 12:00")) is None


_quarter = st.integers(min_value=0, max_value=24 * 4 - 1).map(lambda q: time(q // 4, q % 4 * 15))
_window = st.fixed_dictionaries(
    {
        "days": st.sampled_from(["mon-fri", "sat,sun", "sun", "fri", "mon,wed"]),
        "hours": st.tuples(_quarter, _quarter).map(lambda t: f"{t[0]:%H:%M}-{t[1]:%H:%M}"),
    }
)
_instant = st.sampled_from(["2026-03-27", "2026-10-23", "2026-06-10"]).flatmap(
    lambda day: st.integers(min_value=0, max_value=3 * 24 * 4).map(
        lambda q: utc(day + " 00:00") + timedelta(minutes=15 * q)
    )
)


@settings(max_examples=40, deadline=None)
@given(windows=st.lists(_window, min_size=1, max_size=2), at=_instant)
def test_next_change_is_the_first_flip(windows: list[dict[str, str]], at: datetime) -> None:
    """Checked against a brute-force scan every 15 minutes (all boundaries lie on that grid)."""
    site = make_site({"s": windows})
    change = next_change(site, "s", at)
    current = is_scheduled(site, "s", at)
    end = change if change is not None else at + timedelta(days=8)
    probe = at + timedelta(minutes=15)
    while probe < end:
        assert is_scheduled(site, "s", probe) == current, probe
        probe += timedelta(minutes=15)
    if change is not None:
        assert is_scheduled(site, "s", change) != current


@settings(max_examples=40, deadline=None)
@given(
    windows=st.lists(_window, min_size=1, max_size=2),
    steps=st.lists(st.integers(min_value=-2 * 24 * 60, max_value=3 * 24 * 60), min_size=1, max_size=30),
    start=_instant,
)
def test_remembered_spans_answer_as_the_functions_do(windows: list[dict[str, str]], steps: list[int], start: datetime) -> None:
    """Mostly forward in time, as readings come, with jumps back (late data) and over DST."""
    site = make_site({"s": windows}, holidays=("2026-03-30",))
    spans = ScheduleSpans(site)
    at = start
    for minutes in steps:
        at += timedelta(minutes=minutes, seconds=7)
        assert spans.is_scheduled("s", at) == is_scheduled(site, "s", at), at
        assert spans.next_change("s", at) == next_change(site, "s", at), at
    assert (spans.is_scheduled(None, at), spans.next_change(None, at)) == (False, None)


# --------------------------------------------------------------------------- wall_clock


@pytest.mark.parametrize(
    ("at", "ref", "expected"),
    [
        # Same local day: the bare time, as people read it.
        ("2026-11-17T22:30:00+00:00", "2026-11-17T22:45:00+00:00", "23:30"),
        # 23:30 on Tuesday seen from Wednesday morning: the date says which night.
        ("2026-11-17T22:30:00+00:00", "2026-11-18T06:00:00+00:00", "23:30 on 2026-11-17"),
        # Fall-back night 2026-10-25 in Berlin: 02:30 happens at 00:30 UTC (+02:00) and at 01:30 UTC (+01:00).
        ("2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00", "02:30+02:00"),
        ("2026-10-25T01:30:00+00:00", "2026-10-25T01:30:00+00:00", "02:30+01:00"),
        # Spring-forward day 2026-03-29: 03:30 local is 01:30 UTC (+02:00); the evening before has no change.
        ("2026-03-29T01:30:00+00:00", "2026-03-29T01:30:00+00:00", "03:30+02:00"),
        ("2026-03-28T22:00:00+00:00", "2026-03-29T01:30:00+00:00", "23:00 on 2026-03-28"),
    ],
)
def test_wall_clock_carries_the_date_off_the_day_and_the_offset_on_a_clock_change(at: str, ref: str, expected: str) -> None:
    assert wall_clock(SCHOOL, datetime.fromisoformat(at), ref=datetime.fromisoformat(ref)) == expected


def test_wall_clock_without_a_reference_is_the_bare_time_of_day() -> None:
    assert wall_clock(SCHOOL, utc("2026-10-25T01:30:00"), seconds=True) == "02:30:00"
