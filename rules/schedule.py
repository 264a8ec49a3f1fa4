"""When a room is scheduled (occupied), in the site's local wall-clock time.

Schedules are written in local time ("mon-fri 07:30-18:00") because that is how people
plan a building, so every check converts the UTC event time to the site's zone first.
Comparing wall-clock times of the converted instant keeps daylight-saving nights right:
02:30 on a fall-back night happens twice and both instants are judged as 02:30; on a
spring-forward night 02:30 never happens at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from warden.calendar import DayPlan, Season, plan_day
from warden.config import SiteConfig, WeeklyWindow
from warden.i18n import Message

#: How far next_change looks ahead, in days: a cheap first pass, then a long one for
#: schedules interrupted by weeks of holidays.
_HORIZONS_DAYS = (8, 400)


def is_scheduled(
    site: SiteConfig,
    schedule_name: str | None,
    at: datetime,
    *,
    building: str | None = None,
    room: str | None = None,
    season: Season | None = None,
) -> bool:
    """True if `at` (aware) falls in one of the schedule's weekly windows.

    A holiday is unscheduled all day, and a window that starts on a holiday does not run
    either, unless the schedule keeps holidays (SiteConfig.holiday_keepers: a 24x7 room).
    A window past midnight ("22:00-06:00") belongs to the day it starts on; an end
    equal to the start runs 24 hours. No schedule (None) is never scheduled. With a site
    calendar each day runs the plan warden.calendar.plan_day gives it (a make-up day
    follows another weekday's windows, a vacation maps the schedule, `building`/`room`
    exceptions win); a day outside `season` is unscheduled like a holiday.
    """
    if schedule_name is None:
        return False
    _windows(site, schedule_name)  # an unknown schedule is an error, whatever the day
    local = _local(site.zone, at)
    today = local.date()
    where = _Where(building, room, season)
    if _day_off(site, schedule_name, today, where):
        return False  # a holiday is unscheduled all day, even inside last night's window
    return any(
        _covers(window, local, day, weekday)
        for day in (today, today - timedelta(days=1))
        for window, weekday in _day_windows(site, schedule_name, day, where)
    )


@dataclass(frozen=True)
class _Where:
    """The room a schedule is asked for (calendar exceptions) and its circuit's season."""

    building: str | None = None
    room: str | None = None
    season: Season | None = None


def _plan(site: SiteConfig, schedule_name: str, day: date, where: _Where) -> DayPlan | None:
    """What the calendar makes of `day` for this schedule and room; None outside the season."""
    if where.season is not None and not where.season.contains(day):
        return None
    return plan_day(
        site.calendar, site.holidays, day, schedule_name,
        building=where.building, room=where.room, keep_holidays=site.holiday_keepers,
    )


def _day_off(site: SiteConfig, schedule_name: str, day: date, where: _Where) -> bool:
    plan = _plan(site, schedule_name, day, where)
    return plan is None or plan.off


def day_follows(site: SiteConfig, schedule_name: str, day: date) -> int | None:
    """The weekday (0 Monday) local `day` runs `schedule_name` as by the site calendar (a make-up
    day its weekday's), or None if the schedule does not run that day (a holiday it does not
    keep, a period mapping it to none, a closed room): a patrol route bound to it has no rounds."""
    _windows(site, schedule_name)
    plan = _plan(site, schedule_name, day, _Where())
    return None if plan is None or plan.off or plan.schedule is None else plan.weekday


def _day_windows(site: SiteConfig, schedule_name: str, day: date, where: _Where) -> list[tuple[WeeklyWindow, int]]:
    """The windows that start on local `day`, with the weekday the day follows."""
    plan = _plan(site, schedule_name, day, where)
    if plan is None or plan.off or plan.schedule is None:
        return []
    return [(w, plan.weekday) for w in _windows(site, plan.schedule) if plan.weekday in w.days]


def next_change(
    site: SiteConfig,
    schedule_name: str | None,
    at: datetime,
    *,
    building: str | None = None,
    room: str | None = None,
    season: Season | None = None,
) -> datetime | None:
    """The first instant after `at` (UTC) at which is_scheduled gives the other answer.

    None if the answer never changes (no schedule, an empty one) within about a year.
    Exact across daylight-saving changes: a window starting inside the skipped hour
    starts when the clocks jump.
    """
    if schedule_name is None:
        return None
    where = {"building": building, "room": room, "season": season}
    current = is_scheduled(site, schedule_name, at, **where)
    zone = site.zone
    names = site.schedules if site.calendar is not None else [schedule_name]  # a calendar may switch schedules
    wall_times = _boundaries(w for name in names for w in _windows(site, name))
    first_day = _local(zone, at).date() - timedelta(days=1)
    for horizon in _HORIZONS_DAYS:
        days = (first_day + timedelta(days=n) for n in range(horizon + 2))
        candidates = sorted(c for c in _instants(zone, days, wall_times) if c > at)
        covered_until = at + timedelta(days=horizon - 1)
        for candidate in candidates:
            if candidate > covered_until:
                break
            if is_scheduled(site, schedule_name, candidate, **where) != current:
                return candidate
    return None


class ScheduleSpans:
    """is_scheduled and next_change for one site, remembering the last span per schedule.

    Between `at` and next_change(at) both answers stay the same, so a meter reporting every
    few seconds costs one computation per schedule change instead of one per reading
    (next_change walks the calendar). Nothing here is rule state: it is derived.
    """

    def __init__(self, site: SiteConfig) -> None:
        self._site = site
        # (schedule, building, room, season) -> (from, until, scheduled)
        self._spans: dict[tuple[str, str | None, str | None, Season | None], tuple[datetime, datetime, bool]] = {}

    def is_scheduled(self, schedule_name: str | None, at: datetime, **where: str | Season | None) -> bool:
        """`where`: building, room, season, as for the module's is_scheduled."""
        return self._span(schedule_name, at, where)[0]

    def next_change(self, schedule_name: str | None, at: datetime, **where: str | Season | None) -> datetime | None:
        return self._span(schedule_name, at, where)[1]

    def _span(self, schedule_name: str | None, at: datetime, where: dict[str, Any]) -> tuple[bool, datetime | None]:
        if schedule_name is None:
            return False, None
        key = (schedule_name, where.get("building"), where.get("room"), where.get("season"))
        span = self._spans.get(key)
        if span is not None and span[0] <= at < span[1]:
            return span[2], span[1]
        scheduled = is_scheduled(self._site, schedule_name, at, **where)
        change = next_change(self._site, schedule_name, at, **where)
        # None: no change within the horizon (a 24x7 room keeping holidays); the span is the horizon,
        # so such a room's meter does not walk a year of calendar on every reading.
        until = change if change is not None else at + timedelta(days=_HORIZONS_DAYS[-1] - 1)
        self._spans[key] = (at, until, scheduled)
        return scheduled, change


# --------------------------------------------------------------------------- helpers


def wall_clock(site: SiteConfig, at: datetime, *, seconds: bool = False, ref: datetime | None = None) -> str:
    """`at` as the site's local time of day, as people read it in alert messages.

    With `ref` (the moment the message speaks from, usually the signal's time) the text
    carries the date when `at` falls on another local day ("23:30 on 2026-11-17"), and
    the UTC offset on a day whose clocks change ("02:30+01:00"), where a bare time would
    be ambiguous or read backwards.
    """
    local = _local(site.zone, at)
    text = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    if ref is None:
        return text
    if _clocks_change(site.zone, local.date()):
        text += local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
    if local.date() != _local(site.zone, ref).date():
        return Message("{time} on {date}", time=text, date=local.date().isoformat())  # a message shows it in any locale
    return text


def _clocks_change(zone: ZoneInfo, day: date) -> bool:
    """Whether the local day `day` has a daylight-saving change (its offset differs at both ends)."""
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    return start.utcoffset() != end.utcoffset()


def _local(zone: ZoneInfo, at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("schedule checks need a timezone-aware datetime")
    return at.astimezone(zone)


def _windows(site: SiteConfig, schedule_name: str) -> Sequence[WeeklyWindow]:
    try:
        return site.schedules[schedule_name]
    except KeyError:
        raise KeyError(f"site {site.id} has no schedule {schedule_name!r}") from None


def _past_midnight(window: WeeklyWindow) -> bool:
    return window.end is not None and window.end <= window.start


def _covers(window: WeeklyWindow, local: datetime, day: date, weekday: int) -> bool:
    """Whether `window`, run on local `day` (following `weekday`), covers `local`."""
    now = local.time()
    if day != local.date():  # the day before: only a window past midnight reaches today
        return _past_midnight(window) and window.end is not None and now < window.end
    if _past_midnight(window):
        return now >= window.start
    return window.start <= now and (window.end is None or now < window.end)


def _boundaries(windows: Iterable[WeeklyWindow]) -> frozenset[time]:
    """Wall-clock times at which the answer can change; midnight for days and holidays."""
    times = {time(0)}
    for window in windows:
        times.add(window.start)
        if window.end is not None:
            times.add(window.end)
    return frozenset(times)


def _instants(zone: ZoneInfo, days: Iterable[date], wall_times: frozenset[time]) -> Iterable[datetime]:
    """Every UTC instant at which the local clock reaches one of `wall_times` on `days`.

    A wall time the clocks skip or repeat yields both readings of it plus the transition
    itself, where the clock jumps past (or back over) it.
    """
    for day in days:
        for wall_time in wall_times:
            wall = datetime.combine(day, wall_time)
            first = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
            second = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
            yield first
            if second != first:
                yield second
                yield _transition(zone, min(first, second), max(first, second))


def _transition(zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """First instant in (lo, hi] with hi's UTC offset (zone transitions fall on whole seconds)."""
    offset_lo = lo.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=int((hi - lo).total_seconds()) // 2)
        if mid.astimezone(zone).utcoffset() == offset_lo:
            lo = mid
        else:
            hi = mid
    return hi


def local_instant(zone: ZoneInfo, day: date, wall_time: time) -> datetime:
    """The UTC instant at which the local clock of `zone` first reads `wall_time` on `day`.

    A repeated wall time (fall back) is its first occurrence; a skipped one (spring
    forward) is the instant the clocks jump past it, as for schedule windows.
    """
    wall = datetime.combine(day, wall_time)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    second = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    return _transition(zone, min(first, second), max(first, second))
