"""The simulators' own wall-clock calendar: local times to instants, and a site's weekly
windows as UTC spans.

Written from the prose of docs/rules.md#schedules and on purpose **not** from
rules/schedule.py: the simulators (traffic) and the ground truth (what must be paged)
use this, the rules use theirs, so a calendar bug on either side shows up as a
disagreement instead of moving traffic, truth and rules together.

The documented calendar: windows are local wall-clock spans on the weekdays they list;
a window past midnight belongs to the day it starts on; "24:00" is midnight and an end
equal to the start runs 24 h; a holiday is unscheduled all day, and a window starting on
a holiday does not run into the next morning. A wall time the clocks skip is the instant
they jump; a repeated one is its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
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


def schedule_spans(site: SiteConfig, schedule: str | None, t0: float, t1: float) -> list[Span]:
    """The scheduled spans of one of the site's schedules overlapping [t0, t1] (a room
    without a schedule is never scheduled)."""
    if schedule is None or schedule not in site.schedules:
        return []
    zone = site.zone
    days = local_days(zone, t0, t1)
    spans = [
        span
        for window in site.schedules[schedule]
        for span in day_spans(zone, days, window.start, window.end, window.days, site.holidays)
    ]
    return [(a, b) for a, b in merge(spans) if b > t0 and a < t1]


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
