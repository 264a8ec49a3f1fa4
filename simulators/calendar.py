"""The simulators' own wall-clock calendar: local times to instants, and a site's weekly
windows as UTC spans.

Written from the prose of docs/rules.md#schedules and on purpose **not** from
rules/schedule.py: the simulators (traffic) and the ground truth (what must be paged)
use this, the rules use theirs, so a calendar bug on either side shows up as a
disagreement instead of moving traffic, truth and rules together.

The documented calendar: windows are local wall-clock spans on the weekdays they list;
a window past midnight belongs to the day it starts on; "24:00" is midnight and an end
equal to the start runs 24 h; a holiday is unscheduled all day, and a window starting on
a holiday does not run into the next morning, unless the schedule keeps holidays
(docs/rules.md#holidays: `holidays: keep`, or unsaid and covering the whole week). A wall
time the clocks skip is the instant they jump; a repeated one is its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from warden.config import SiteConfig

Span = tuple[float, float]


def local_instant(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The UTC instant of local `wall` time on `day`: its first occurrence if the clocks
    repeat it, the instant they jump if they skip it."""
    naive = datetime.combine(day, wall.replace(tzinfo=None, fold=0))
    earlier = naive.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    later = naive.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    for moment in sorted((earlier, later)):
        if moment.astimezone(zone).replace(tzinfo=None) == naive:
            return moment
    # Skipped: between the two readings the offset changes; that change is the jump.
    lo, hi = (int(m.timestamp()) for m in sorted((earlier, later)))
    while hi - lo > 1:  # transitions fall on whole seconds
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz=zone).replace(tzinfo=None) < naive:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, tz=timezone.utc)


def local_days(zone: ZoneInfo, t0: float, t1: float, before: int = 1) -> list[date]:
    """Every local date from `before` days before t0's to t1's."""
    first = datetime.fromtimestamp(t0, tz=zone).date() - timedelta(days=before)
    last = datetime.fromtimestamp(t1, tz=zone).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def day_spans(
    zone: ZoneInfo, days: Iterable[date], start: time, end: time | None, weekdays: Iterable[int], holidays: Iterable[date]
) -> list[Span]:
    """One local span `start`-`end` on each of `days` whose weekday is listed and that is
    no holiday; an end at or before the start (or None, midnight) runs into the next day."""
    allowed, off = frozenset(weekdays), frozenset(holidays)
    spans: list[Span] = []
    for day in days:
        if day.weekday() not in allowed or day in off:
            continue
        a = local_instant(zone, day, start)
        end_day = day if end is not None and end > start else day + timedelta(days=1)
        b = local_instant(zone, end_day, end if end is not None else time(0, 0))
        spans.append((a.timestamp(), b.timestamp()))
    return spans


def merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping or touching spans joined, in order."""
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def schedule_spans(
    site: SiteConfig,
    schedule: str | None,
    t0: float,
    t1: float,
    *,
    building: str | None = None,
    room: str | None = None,
    season: Any = None,
) -> list[Span]:
    """The scheduled spans of one of the site's schedules overlapping [t0, t1] (a room
    without a schedule is never scheduled). With a site calendar each day runs what
    `what_day` says; a day off (holiday, vacation, out of `season`) also cuts a window
    running into it from the night before ("unscheduled all day")."""
    if schedule is None or schedule not in site.schedules:
        return []
    zone = site.zone
    days = local_days(zone, t0, t1)
    if site.calendar is None and season is None:
        holidays = () if keeps_holidays(site, schedule) else site.holidays
        spans = [
            span
            for window in site.schedules[schedule]
            for span in day_spans(zone, days, window.start, window.end, window.days, holidays)
        ]
        return [(a, b) for a, b in merge(spans) if b > t0 and a < t1]
    spans, off = [], []
    for day in days + [days[-1] + timedelta(days=1)]:
        runs = what_day(site, day, schedule, building, room)
        if runs is None or (season is not None and not in_season(season, day)):
            off.append((local_instant(zone, day, time(0)).timestamp(),
                        local_instant(zone, day + timedelta(days=1), time(0)).timestamp()))
            continue
        follows, timetable = runs
        for window in site.schedules[timetable]:
            if follows in window.days:
                spans += day_spans(zone, [day], window.start, window.end, range(7), ())
    kept = [piece for a, b in merge(spans) for piece in outside(merge(off), a, b)]
    return [(a, b) for a, b in kept if b > t0 and a < t1]


def what_day(
    site: SiteConfig, day: date, schedule: str, building: str | None = None, room: str | None = None
) -> tuple[int, str] | None:
    """(weekday whose timetable the day follows, schedule the room runs), or None when the
    room has the day off. From docs/rules.md#calendars: a building or room exception
    decides first; then holidays (the site's and the calendar's, a moved holiday off on
    its new date and not on its old one, a make-up day never) are off; then the term or
    vacation containing the day maps the schedule; a make-up day follows its weekday."""
    cal = site.calendar
    if cal is None:
        return None if day in site.holidays else (day.weekday(), schedule)
    follows = {w.date: w.follows for w in cal.workdays}.get(day, day.weekday())
    for rule in cal.exceptions:
        if not rule.start <= day <= rule.end:
            continue
        if (building in rule.buildings) or (room in rule.rooms) or (f"{building}:{room}" in rule.rooms):
            if schedule in rule.schedules:
                target = rule.schedules[schedule]
            elif rule.closed:
                target = None
            else:
                target = rule.schedule or schedule
            return None if target is None else (follows, target)
    holiday = holiday_for_everyone(site, day)
    target = schedule
    for period in cal.periods:
        if period.start <= day <= period.end and schedule in period.schedules:
            target = period.schedules[schedule]
            break
    if target is None or (holiday and not keeps_holidays(site, target)):
        return None
    return follows, target


def keeps_holidays(site: SiteConfig, schedule: str) -> bool:
    """docs/rules.md#holidays: `holidays: keep` or `off` decides; unsaid, a schedule whose
    windows leave no minute of the week uncovered runs on holidays. A gap would begin at
    midnight or where a window ends, so only those minutes are looked at."""
    said = site.schedule_holidays.get(schedule)
    if said is not None:
        return said == "keep"
    windows = site.schedules.get(schedule, [])

    def covered(weekday: int, minute: int) -> bool:
        for w in windows:
            lo = w.start.hour * 60 + w.start.minute
            hi = 1440 if w.end is None else w.end.hour * 60 + w.end.minute
            if hi > lo and weekday in w.days and lo <= minute < hi:
                return True
            if hi <= lo and ((weekday in w.days and minute >= lo) or ((weekday - 1) % 7 in w.days and minute < hi)):
                return True
        return False

    ends = {0} | {(w.end.hour * 60 + w.end.minute) % 1440 for w in windows if w.end is not None}
    return bool(windows) and all(covered(d, m) for d in range(7) for m in ends)


def holiday_for_everyone(site: SiteConfig, day: date) -> bool:
    cal = site.calendar
    listed = day in site.holidays
    if cal is not None:
        listed = listed or any(h.start <= day <= h.end for h in cal.holidays)
        if day in {m.to for m in cal.moved}:
            return True
        if day in {m.from_ for m in cal.moved} or day in {w.date for w in cal.workdays}:
            return False
    return listed


def working_day(site: SiteConfig, day: date) -> bool:
    """A day type of time-of-use tariffs: Monday to Friday or a make-up day, no holiday."""
    if holiday_for_everyone(site, day):
        return False
    made_up = site.calendar is not None and day in {w.date for w in site.calendar.workdays}
    return day.weekday() <= 4 or made_up


def in_season(season: Any, day: date) -> bool:
    """Month-day bounds, inclusive, wrapping the new year when the start is after the end."""
    here = day.month * 100 + day.day
    lo = season.start[0] * 100 + season.start[1]
    hi = season.end[0] * 100 + season.end[1]
    return lo <= here <= hi if lo <= hi else (here >= lo or here <= hi)


def price_band(site: SiteConfig, t: float) -> str:
    """The time-of-use band at instant `t`: the first listed window whose day type, season
    and local hours hold, else the default band."""
    tou = site.tariff.time_of_use
    assert tou is not None
    local = datetime.fromtimestamp(t, tz=site.zone)
    minutes = local.hour * 60 + local.minute + local.second / 60
    workday = working_day(site, local.date())
    for window in tou.windows:
        if (window.days == "workday" and not workday) or (window.days == "rest" and workday):
            continue
        if window.season is not None and not in_season(tou.seasons[window.season], local.date()):
            continue
        lo = window.start.hour * 60 + window.start.minute
        hi = 24 * 60 if window.end is None else window.end.hour * 60 + window.end.minute
        inside = lo <= minutes < hi if lo < hi else (minutes >= lo or minutes < hi)
        if inside:
            return window.band
    return tou.default_band


def seconds_by_band(site: SiteConfig, a: float, b: float, step: float = 60.0) -> dict[str, float]:
    """Seconds of [a, b) in each band, judged at the middle of each `step` (a minute: the
    simulators' grid)."""
    out: dict[str, float] = {}
    t = a
    while t < b:
        piece = min(step, b - t)
        band = price_band(site, t + piece / 2)
        out[band] = out.get(band, 0.0) + piece
        t += piece
    return out


def outside(spans: list[Span], a: float, b: float) -> list[Span]:
    """The parts of [a, b) that none of `spans` (sorted, disjoint) covers."""
    pieces: list[Span] = []
    t = a
    for x, y in spans:
        if y <= t or x >= b:
            continue
        if x > t:
            pieces.append((t, x))
        t = max(t, y)
    if t < b:
        pieces.append((t, b))
    return pieces
