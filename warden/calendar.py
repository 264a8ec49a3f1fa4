"""Site calendars, seasons and time-of-use tariffs: the models and the rules' date logic.

A weekly schedule plus a holiday list cannot describe a Chinese school year: terms and
vacations run different timetables, a Saturday can be a make-up workday (调休) following
a given weekday's timetable, holidays move, and a dormitory stays open in the vacation.
A `Calendar` says, for each local date, which weekday's timetable the day follows and
which schedule a room runs (docs/rules.md#calendars). Seasons bound circuits that only
run in some months (washroom hot water); a `TimeOfUse` tariff prices energy by band.

Kernel module: the standard library, pydantic and `warden` only. The ground truth
(simulators/calendar.py) reimplements the date logic from the documentation on purpose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_serializer, field_validator, model_validator

from warden.documents import ConfigError, in_config_folder, read_document

_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _weekday(value: Any) -> Any:
    """"mon" (or 0) to 0 ... "sun" to 6."""
    if isinstance(value, str):
        name = value.strip().lower()[:3]
        if name not in _WEEKDAYS:
            raise ValueError(f"expected a weekday like 'mon', got {value!r}")
        return _WEEKDAYS.index(name)
    return value


class _DateRange(StrictModel):
    """Inclusive local dates; a single `date` is a range of one day."""

    name: str = ""
    start: date
    end: date

    @model_validator(mode="before")
    @classmethod
    def _one_day(cls, data: Any) -> Any:
        if isinstance(data, (date, str)):
            return {"start": data, "end": data}
        if isinstance(data, dict) and "date" in data:
            data = dict(data)
            day = data.pop("date")
            return {**data, "start": day, "end": day}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> _DateRange:
        if self.end < self.start:
            raise ValueError("end: must not be before start")
        return self

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end


class Holiday(_DateRange):
    """A day or days off (春节: 2026-02-15 to 2026-02-23)."""


class MakeUpDay(StrictModel):
    """调休: a weekend day worked, following the timetable of weekday `follows`."""

    date: date
    follows: int = Field(ge=0, le=6, description="Weekday whose timetable the day runs, e.g. 'thu'")
    name: str = ""

    @field_validator("follows", mode="before")
    @classmethod
    def _follows(cls, value: Any) -> Any:
        return _weekday(value)


class MovedHoliday(StrictModel):
    """A holiday moved from one date (then an ordinary day) to another (then off)."""

    from_: date = Field(alias="from")
    to: date
    name: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


#: Room schedule -> the schedule it runs instead (null: unscheduled).
ScheduleMap = dict[str, str | None]


class Period(_DateRange):
    """A term or a vacation (寒假, 暑假) and the schedules its rooms run during it."""

    kind: Literal["term", "vacation"] = "term"
    schedules: ScheduleMap = Field(
        default_factory=dict, description="Room schedule -> schedule during the period (null: none); unlisted stay"
    )


class CalendarException(_DateRange):
    """Dates on which some buildings or rooms run another schedule (an exam week, a
    dormitory open in the vacation). Wins over holidays and periods for those rooms."""

    buildings: list[str] = Field(default_factory=list)
    rooms: list[str] = Field(default_factory=list, description="Room ids, or building:room")
    schedules: ScheduleMap = Field(default_factory=dict, description="Room schedule -> schedule on these dates")
    schedule: str | None = Field(default=None, description="Schedule every matching room runs, whatever its own")
    closed: bool = Field(default=False, description="The rooms are unscheduled on these dates (a closed building)")

    @model_validator(mode="after")
    def _someone(self) -> CalendarException:
        if not self.buildings and not self.rooms:
            raise ValueError("exceptions: name the buildings or rooms it applies to")
        return self

    def applies(self, building: str | None, room: str | None) -> bool:
        return (building is not None and building in self.buildings) or (
            room is not None and (room in self.rooms or f"{building}:{room}" in self.rooms)
        )

    def schedule_for(self, schedule: str) -> str | None:
        if schedule in self.schedules:
            return self.schedules[schedule]
        if self.closed:
            return None
        return self.schedule if self.schedule is not None else schedule


class Calendar(StrictModel):
    """A school or company year. `path: calendars/2026.yaml` (or .toml, .json) loads it
    from a file, so sites share one calendar; keys beside `path` are added to it."""

    name: str = ""
    holidays: list[Holiday] = Field(default_factory=list)
    workdays: list[MakeUpDay] = Field(default_factory=list, description="调休: weekend days worked")
    moved: list[MovedHoliday] = Field(default_factory=list)
    periods: list[Period] = Field(default_factory=list)
    exceptions: list[CalendarException] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, (str, Path)):
            data = {"path": str(data)}
        if not isinstance(data, dict) or "path" not in data:
            return data
        rest = dict(data)
        loaded = read_calendar_file(in_config_folder(Path(rest.pop("path")), info))
        for key, value in rest.items():
            loaded[key] = [*loaded.get(key, []), *value] if isinstance(value, list) else value
        return loaded

    @model_validator(mode="after")
    def _consistent(self) -> Calendar:
        worked = [d.date for d in self.workdays]
        if len(set(worked)) != len(worked):
            raise ValueError("workdays: a date may be listed once")
        for n, day in enumerate(self.workdays):
            if any(day.date in h for h in self.holidays):
                raise ValueError(f"workdays[{n}]: {day.date} is also a holiday")
        return self

    def check_schedules(self, known: set[str] | dict[str, Any], buildings: list[Any]) -> None:
        """ValueError naming the key of a schedule the site does not define. A calendar is
        shared by sites, so a mapping of a schedule the site lacks, or an exception for
        rooms it does not have, is ignored."""
        places = {b.id for b in buildings} | {r.id for b in buildings for r in b.rooms}
        places |= {f"{b.id}:{r.id}" for b in buildings for r in b.rooms}
        for where, items in (("periods", self.periods), ("exceptions", self.exceptions)):
            for n, item in enumerate(items):
                for source, target in item.schedules.items():
                    if source in known and target is not None and target not in known:
                        raise ValueError(f"calendar.{where}[{n}].schedules.{source}: unknown schedule {target!r}")
                if isinstance(item, CalendarException) and item.schedule is not None and item.schedule not in known:
                    if places & {*item.buildings, *item.rooms}:
                        raise ValueError(f"calendar.{where}[{n}].schedule: unknown schedule {item.schedule!r}")


def read_calendar_file(path: Path) -> dict[str, Any]:
    """A calendar file's mapping: YAML or TOML through the config loader, JSON or
    iCalendar here. ValueError (which pydantic reports under the `calendar` key) if it
    cannot be read."""
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".ics":
            data = parse_icalendar(path.read_text(encoding="utf-8"))
        else:
            data = read_document(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ConfigError) as exc:
        raise ValueError(f"path: cannot read the calendar: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def parse_icalendar(text: str) -> dict[str, Any]:
    """All-day VEVENTs of an iCalendar file as holidays; an event whose SUMMARY contains
    "调休", "补班" or "make-up" as a make-up day following Monday's timetable unless the
    summary names a weekday ("make-up thu"). Timed events are ignored."""
    lines = re.sub(r"\r?\n[ \t]", "", text).splitlines()  # unfold
    holidays: list[dict[str, Any]] = []
    workdays: list[dict[str, Any]] = []
    event: dict[str, str] | None = None
    for line in lines:
        if line == "BEGIN:VEVENT":
            event = {}
        elif line == "END:VEVENT" and event is not None:
            _add_ics_event(event, holidays, workdays)
            event = None
        elif event is not None and ":" in line:
            key, _, value = line.partition(":")
            event[key.split(";")[0].upper()] = value + (";VALUE=DATE" if "VALUE=DATE" in key.upper() else "")
    return {"holidays": holidays, "workdays": workdays}


def _add_ics_event(event: dict[str, str], holidays: list[dict[str, Any]], workdays: list[dict[str, Any]]) -> None:
    start = event.get("DTSTART", "")
    if not start.endswith(";VALUE=DATE") and len(start) != 8:
        return
    first = datetime.strptime(start[:8], "%Y%m%d").date()
    end_text = event.get("DTEND", "")
    last = datetime.strptime(end_text[:8], "%Y%m%d").date() - timedelta(days=1) if end_text else first
    summary = event.get("SUMMARY", "")
    if any(word in summary.lower() for word in ("调休", "补班", "make-up", "上班")):
        follows = next((n for n, w in enumerate(_WEEKDAYS) if re.search(rf"\b{w}", summary.lower())), 0)
        day = first
        while day <= max(first, last):
            workdays.append({"date": day, "follows": follows, "name": summary})
            day += timedelta(days=1)
        return
    holidays.append({"start": first, "end": max(first, last), "name": summary})


# --------------------------------------------------------------------------- day plans


@dataclass(frozen=True)
class DayPlan:
    """What a local date is for one room's schedule: off, or the weekday whose windows
    it runs and the schedule those windows come from."""

    off: bool
    weekday: int
    schedule: str | None
    why: str = ""


def plan_day(
    calendar: Calendar | None,
    holidays: list[date] | tuple[date, ...] | frozenset[date],
    day: date,
    schedule: str,
    *,
    building: str | None = None,
    room: str | None = None,
    keep_holidays: Collection[str] = frozenset(),
) -> DayPlan:
    """The day's plan: a room exception first (it wins over holidays and periods), then a
    holiday (site list and calendar, moved ones applied) is off unless the schedule the day
    would run is in `keep_holidays` (a server room, a ward: SiteConfig.holiday_keepers), a
    make-up day follows its weekday, and the period containing the day maps the schedule."""
    if calendar is None:
        off = day in holidays and schedule not in keep_holidays
        return DayPlan(off, day.weekday(), None if off else schedule, "holiday" if off else "")
    weekday = day.weekday()
    for made_up in calendar.workdays:
        if made_up.date == day:
            weekday = made_up.follows
    for exception in calendar.exceptions:
        if day in exception and exception.applies(building, room):
            mapped = exception.schedule_for(schedule)
            return DayPlan(mapped is None, weekday, mapped, f"exception {exception.name}".strip())
    plan = _period_plan(calendar, day, schedule, weekday)
    if is_holiday(calendar, holidays, day):
        if plan.schedule is None or plan.schedule not in keep_holidays:
            return DayPlan(True, weekday, None, "holiday")
        return DayPlan(False, weekday, plan.schedule, "holiday kept")
    return plan


def _period_plan(calendar: Calendar, day: date, schedule: str, weekday: int) -> DayPlan:
    """The plan of a day that is no holiday: the period holding it maps the schedule."""
    for period in calendar.periods:
        if day in period and schedule in period.schedules:
            mapped = period.schedules[schedule]
            return DayPlan(mapped is None, weekday, mapped, f"{period.kind} {period.name}".strip())
    return DayPlan(False, weekday, schedule, "make-up day" if weekday != day.weekday() else "")


class _Window(Protocol):
    """A weekly window as warden.config.WeeklyWindow has it (config imports this module)."""

    days: frozenset[int]
    start: time
    end: time | None


def around_the_clock(windows: Iterable[_Window]) -> bool:
    """Whether the windows together cover every minute of the week (a server room's or a
    ward's "mon-sun 00:00-24:00"): such a schedule keeps running on holidays by default.
    An end at or before the start runs into the next day, as in the schedules."""
    week = 7 * 1440
    pieces: list[tuple[int, int]] = []
    for window in windows:
        start = window.start.hour * 60 + window.start.minute
        end = 1440 if window.end is None else window.end.hour * 60 + window.end.minute
        end += 1440 if end <= start else 0
        for weekday in window.days:
            a, b = weekday * 1440 + start, weekday * 1440 + end
            pieces += [(a, min(b, week))] + ([(0, b - week)] if b > week else [])
    reach = 0
    for a, b in sorted(pieces):
        if a > reach:
            return False
        reach = max(reach, b)
    return reach >= week


def is_holiday(calendar: Calendar | None, holidays: list[date] | tuple[date, ...] | frozenset[date], day: date) -> bool:
    """A day off for everyone: the site's list and the calendar's, moved holidays applied;
    a make-up day never is."""
    if calendar is None:
        return day in holidays
    if any(m.to == day for m in calendar.moved):
        return True
    if any(m.from_ == day for m in calendar.moved) or any(w.date == day for w in calendar.workdays):
        return False
    return day in holidays or any(day in h for h in calendar.holidays)


def is_workday(calendar: Calendar | None, holidays: list[date] | tuple[date, ...] | frozenset[date], day: date) -> bool:
    """Mon-Fri or a make-up day, and no holiday: the day type of time-of-use tariffs."""
    if is_holiday(calendar, holidays, day):
        return False
    return day.weekday() < 5 or (calendar is not None and any(w.date == day for w in calendar.workdays))


# --------------------------------------------------------------------------- seasons


_MONTH_DAY = re.compile(r"^(\d{1,2})-(\d{1,2})$")


class Season(StrictModel):
    """Month-day bounds, inclusive, that may wrap the new year: hot water 11-01 to 03-31."""

    start: tuple[int, int]
    end: tuple[int, int]

    @field_validator("start", "end", mode="before")
    @classmethod
    def _month_day(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _MONTH_DAY.match(value.strip())
            if not match:
                raise ValueError(f"expected a month-day like '11-01', got {value!r}")
            month, day = int(match[1]), int(match[2])
            date(2024, month, day)  # ValueError for 02-30; 2024 allows 02-29
            return (month, day)
        return value

    @field_serializer("start", "end")
    def _as_written(self, value: tuple[int, int]) -> str:
        return f"{value[0]:02d}-{value[1]:02d}"

    def contains(self, day: date) -> bool:
        key = (day.month, day.day)
        if self.start <= self.end:
            return self.start <= key <= self.end
        return key >= self.start or key <= self.end

    def label(self) -> str:
        return f"{self.start[0]:02d}-{self.start[1]:02d} to {self.end[0]:02d}-{self.end[1]:02d}"


# --------------------------------------------------------------------------- tariffs


_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class BandWindow(StrictModel):
    """Local hours in one price band, on some day types, optionally in one season."""

    band: str
    start: time
    end: time | None  # None: midnight
    days: Literal["all", "workday", "rest"] = "all"
    season: str | None = Field(default=None, description="Name of a tariff season; none: all year")

    @model_validator(mode="before")
    @classmethod
    def _hours(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "hours" not in data:
            return data
        data = dict(data)
        match = _HOURS.match(str(data.pop("hours")).replace(" ", ""))
        if not match:
            raise ValueError("hours: expected hours like '08:00-11:00'")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError("hours: expected hours like '08:00-11:00'")
        return {**data, "start": time(h1, m1), "end": None if h2 == 24 else time(h2, m2)}

    def covers(self, wall: time) -> bool:
        if self.end is None:
            return wall >= self.start
        if self.end <= self.start:  # past midnight: 22:00-06:00
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end


class TimeOfUse(StrictModel):
    """峰谷电价: a price per kWh per band; the first window covering a local instant names
    its band (windows past midnight wrap within the day), else `default_band`."""

    bands: dict[str, float] = Field(min_length=1, description="Band -> price per kWh")
    default_band: str
    windows: list[BandWindow] = Field(default_factory=list)
    seasons: dict[str, Season] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> TimeOfUse:
        if self.default_band not in self.bands:
            raise ValueError(f"default_band: {self.default_band!r} is not one of the bands")
        for n, window in enumerate(self.windows):
            if window.band not in self.bands:
                raise ValueError(f"windows[{n}].band: {window.band!r} is not one of the bands")
            if window.season is not None and window.season not in self.seasons:
                raise ValueError(f"windows[{n}].season: unknown season {window.season!r}")
        if any(price < 0 for price in self.bands.values()):
            raise ValueError("bands: prices must not be negative")
        for n, window in enumerate(self.windows):
            if _shadowed(window, self.windows[:n]):
                raise ValueError(f"windows[{n}]: never applies: windows listed before it cover all its hours (the first "
                                 "window covering an instant names its band); list it before them")
        return self

    def band_at(self, local: datetime, workday: bool) -> str:
        """The band of a local wall-clock instant on a day of the given type."""
        for window in self.windows:
            if window.days == "workday" and not workday or window.days == "rest" and workday:
                continue
            if window.season is not None and not self.seasons[window.season].contains(local.date()):
                continue
            if window.covers(local.time()):
                return window.band
        return self.default_band

    def boundaries(self) -> frozenset[time]:
        """Wall times at which the band can change (midnight: day types and seasons)."""
        return frozenset({time(0), *(w.start for w in self.windows), *(w.end for w in self.windows if w.end)})


_DAY_TYPES: dict[str, tuple[bool, ...]] = {"all": (True, False), "workday": (True,), "rest": (False,)}  # workday?


def _shadowed(window: BandWindow, earlier: list[BandWindow]) -> bool:
    """Whether every minute and day type `window` covers is covered first by an earlier window
    of its season (or of all year): a critical-peak hour listed after the peak window around it."""
    before = [w for w in earlier if w.season is None or w.season == window.season]
    # Which windows cover a wall time changes only at their starts and ends: one look per stretch.
    edges = {time(0), *(w.start for w in (window, *before)), *(w.end for w in (window, *before) if w.end)}
    for workday in _DAY_TYPES[window.days]:
        applying = [w for w in before if workday in _DAY_TYPES[w.days]]
        if any(window.covers(wall) and not any(w.covers(wall) for w in applying) for wall in edges):
            return False
    return True


def split_by_band(
    tou: TimeOfUse,
    zone: ZoneInfo,
    calendar: Calendar | None,
    holidays: list[date] | tuple[date, ...] | frozenset[date],
    start: datetime,
    end: datetime,
) -> dict[str, float]:
    """Seconds of [start, end) (aware) in each band, judged by local wall-clock time."""
    out: dict[str, float] = {}
    if end <= start:
        return out
    cuts = {start, end}
    day = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date():
        for wall in tou.boundaries():
            at = datetime.combine(day, wall, zone).astimezone(timezone.utc)
            if start < at < end:
                cuts.add(at)
        day += timedelta(days=1)
    ordered = sorted(cuts)
    for a, b in zip(ordered, ordered[1:]):
        local = a.astimezone(zone)
        band = tou.band_at(local, is_workday(calendar, holidays, local.date()))
        out[band] = out.get(band, 0.0) + (b - a).total_seconds()
    return out
