"""The morning report: one page per site and day, readable in two minutes.

What a facilities manager asks at 08:00: what was wasted since the last report (energy
after hours by circuit kind, water), were the rounds walked, what happened at the doors,
which devices went quiet, and what is still open. A report covers a whole day, from the
day boundary (`report.day_start`, 08:00 local by default) to the next one, so the waste
of a weekend's or a holiday's daytime is in it, not only the night's. Built from the
alert store (each rule's `details`, docs/rules.md) and the historian (flow per meter,
patrol taps), so it can be written for any past day.

    write_morning_report(state_db, historian, site, day, out_dir, rules=..., day_start=...)

writes `report.html` (chart embedded as SVG), `report.json`, `report.csv`, `energy.svg`
and the day's raw alerts (`alerts.json`, `alerts.csv`). Formats: docs/api.md.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from gateway.historian.points import to_epoch_ns
from gateway.historian.sqlite import SqliteHistoryReader
from gateway.store import Alert, StateStore
from rules import deadman, patrol, water
from rules import doors as doors_rule  # not `doors`: the report's door incidents are
from rules.ac_after_hours import AFTER_HOURS_RULES
from rules.cold_room import cold_rooms, to_celsius
from rules.config import RulesConfig
from rules.patrol import PatrolConfig
from rules.schedule import local_instant
from rules.water import MeterSample, meter_spans
from warden.config import SiteConfig
from warden.events import PatrolTap, TapSource
from warden.i18n import N_, Message, gettext_for, is_english, local_text, localise, name_table, say, site_names

log = logging.getLogger(__name__)

#: The report's day starts (and the previous one ends) at this local time unless
#: `report.day_start` says otherwise: a report read at 08:00 covers everything since the
#: last one, daytime included.
DEFAULT_DAY_START = time(8, 0)

#: The evening-to-morning night (18:00-08:00), still what `/api/patrols/rounds?night=` means.
NIGHT_START = time(18, 0)
NIGHT_END = time(8, 0)

ALERT_CSV_FIELDS = ["id", "rule", "subject", "state", "severity", "opened_at", "resolved_at", "message"]
REPORT_CSV_FIELDS = ["section", "building", "room", "subject", "metric", "value", "unit", "state", "since", "note"]
#: The CSV's heading row in another locale (English keeps the field names).
_CSV_HEADINGS = {"section": N_("Section"), "building": N_("Building"), "room": N_("Room"), "subject": N_("Subject"),
                 "metric": N_("Metric"), "value": N_("Value"), "unit": N_("Unit"), "state": N_("State"),
                 "since": N_("Since"), "note": N_("Note")}

#: Energy alert rule -> circuit kind (warden.config owns the names).
ENERGY_RULES: dict[str, str] = {rule: kind for kind, rule in AFTER_HOURS_RULES.items()}
KIND_LABELS = {"ac": N_("air-conditioning"), "lighting": N_("lighting"), "water_heating": N_("water heating"),
               "refrigeration": N_("refrigeration"), "other": N_("other circuits")}
#: Words the page shows from the data (states, severities): translated where shown.
_SHOWN_WORDS = (N_("open"), N_("acknowledged"), N_("resolved"), N_("info"), N_("warning"), N_("critical"),
                N_("power_off"), N_("schedule_started"))  # the last two: why an energy alert ended
_KIND_COLOURS = {"ac": "#d9822b", "lighting": "#e6c229", "water_heating": "#c0392b", "refrigeration": "#2b7bd9", "other": "#7f8c8d"}

#: Where alerts stored before `litres_lost` existed kept their loss. A continuous-flow
#: alert's old `litres` counted every litre since the flow began, ordinary day use
#: included, so it is not a loss and is not read.
_LEGACY_LITRES = {water.NIGHT_FLOW: "estimated_litres_lost", water.BURST: "litres"}
_DOOR_RULES = {
    doors_rule.FORCED: N_("forced"), doors_rule.HELD_OPEN: N_("held open"),
    doors_rule.AFTER_HOURS: N_("after hours"), doors_rule.DENIED: N_("denied cards"),
}
_SILENT_RULES = deadman.RULE_NAMES
_UPLOAD_LATE = patrol.UPLOAD
#: Live points looked at to date an upload by the historian's write order.
_WRITE_ORDER_WINDOW = 50


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryPoint:
    time: datetime
    device: str
    measurement: str
    tags: dict[str, Any]
    fields: dict[str, Any]
    row: int | None = None  # the historian's write order, when it keeps one


class History(Protocol):
    """The few historian queries the report needs."""

    def points(self, measurement: str, since: datetime, until: datetime) -> list[HistoryPoint]: ...


class SqliteHistory:
    """The SQLite historian's file, read through its own reader (gateway/historian/sqlite.py)."""

    def __init__(self, path: str | Path, site: str | None = None) -> None:
        """`site`: that site's points only (one historian serves a district whose sites repeat device ids)."""
        self.reader = SqliteHistoryReader(path)
        self.site = site

    def points(self, measurement: str, since: datetime, until: datetime) -> list[HistoryPoint]:
        return [
            HistoryPoint(p.time, p.tags["device"], p.measurement, p.tags, p.fields, row)
            for row, p in self.reader.points(measurement, since, until)
            if self.site is None or p.tags.get("site") == self.site
        ]

    def written_by(self, row: int) -> datetime | None:
        """About when point `row` arrived: the newest event time among the live points
        (not patrol taps) written just before it. With meters reporting every minute this
        is within a minute or two, later while the gateway catches up a backlog."""
        return self.reader.newest_before(row, _WRITE_ORDER_WINDOW, skip_measurement="patrol_tap")


class SeriesHistory:
    """Any historian with `series(device, measurement, since, until, limit)`, asked device
    by device (the site's devices): slower, and blind to devices the site does not list."""

    def __init__(self, historian: Any, devices: Iterable[str], site: str | None = None) -> None:
        self.historian, self.devices, self.site = historian, sorted(set(devices)), site
        #: Sites repeat device ids: asked of the historian where it takes a site (gateway/historian), else filtered here.
        self._asked = {"site": site} if site is not None and "site" in inspect.signature(historian.series).parameters else {}

    def points(self, measurement: str, since: datetime, until: datetime) -> list[HistoryPoint]:
        found = [
            HistoryPoint(p.time, device, p.measurement, dict(p.tags), dict(p.fields))
            for device in self.devices
            for p in self.historian.series(device, measurement, since, until, 100_000, **self._asked)
            if self.site is None or p.tags.get("site", self.site) == self.site
        ]
        return sorted(found, key=lambda p: p.time)


def open_history(historian: Any, site: SiteConfig) -> History | None:
    """A path is a SQLite historian file; an object needs `series()`; else no history."""
    if historian is None:
        return None
    if isinstance(historian, (str, Path)):
        return SqliteHistory(historian, site.id)
    if hasattr(historian, "points"):
        return historian  # type: ignore[no-any-return]
    if hasattr(historian, "series"):
        return SeriesHistory(historian, (d for b in site.buildings for r in b.rooms for d in r.devices), site.id)
    return None


# --------------------------------------------------------------------------- the day


@dataclass(frozen=True)
class Period:
    """What one report covers: from the day boundary on `day` to the next day's, each
    computed on its own local day, so a day with a clock change lasts 23 or 25 h."""

    day: date
    start: datetime  # UTC
    end: datetime  # UTC
    zone: ZoneInfo
    day_start: time
    locale: str = "en"  # the site's: how times outside the day say their date

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600

    @property
    def clock_change(self) -> bool:
        """The clocks change inside the period: wall times alone may be ambiguous."""
        return self.start.astimezone(self.zone).utcoffset() != self.end.astimezone(self.zone).utcoffset()

    def share(self, since: datetime, until: datetime) -> float:
        """The fraction of [since, until] inside the period (an instant: 1 or 0)."""
        if until <= since:
            return 1.0 if self.start <= since < self.end else 0.0
        overlap = min(until, self.end) - max(since, self.start)
        return max(overlap.total_seconds(), 0.0) / (until - since).total_seconds()


def report_period(site: SiteConfig, day: date, day_start: time = DEFAULT_DAY_START) -> Period:
    """The report of `day` covers `day` at day_start to the next day at day_start, local."""
    if not date(1971, 1, 1) <= day <= date(9998, 12, 30):
        raise ValueError(f"day: expected a date between 1971 and 9998, got {day.isoformat()}")
    zone = site.zone
    return Period(day, local_instant(zone, day, day_start), local_instant(zone, day + timedelta(days=1), day_start), zone,
                  day_start, site.locale)


def night_bounds(site: SiteConfig, night: date) -> tuple[datetime, datetime]:
    """18:00 local on `night` to 08:00 local the next morning, in UTC (the patrol API's night)."""
    return local_instant(site.zone, night, NIGHT_START), local_instant(site.zone, night + timedelta(days=1), NIGHT_END)


def period_alerts(alerts: Iterable[Alert], period: Period) -> list[Alert]:
    """Alerts open at any moment of the period, oldest first."""
    start, end = period.start.isoformat(), period.end.isoformat()
    # Stored times are UTC ISO strings: they compare correctly with UTC bounds.
    return sorted((a for a in alerts if a.opened_at < end and (a.resolved_at or "9999") >= start), key=lambda a: (a.opened_at, a.id))


def when(value: str | datetime | None, period: Period, fmt: str = "%H:%M") -> str:
    """A time as the reader of this day's report needs it: the wall time, with its date
    when outside the report's day, and with its UTC offset when the clocks change in it."""
    if not value:
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = at.astimezone(period.zone)
    text = local.strftime(fmt)
    if period.clock_change:
        offset = local.strftime("%z")
        text += f"{offset[:3]}:{offset[3:]}"
    if not period.start <= at < period.end:
        return say(Message("{time} on {date}", time=text, date=local.date().isoformat()), period.locale)
    return text


# --------------------------------------------------------------------------- building


def build_morning_report(
    store: StateStore,
    history: History | None,
    site: SiteConfig,
    day: date,
    rules: RulesConfig | None = None,
    generated_at: datetime | None = None,
    *,
    day_start: time = DEFAULT_DAY_START,
) -> dict[str, Any]:
    """The report of `day` as JSON-ready data; every renderer works from this."""
    rules = rules or RulesConfig()
    period = report_period(site, day, day_start)
    names = site_names(site, rules)  # the site's people read messages in its locale, by names
    every = [replace(a, message=localise(a.message, a.message_id, a.params, site.locale, names))
             for a in store.alerts(site=site.id, limit=1_000_000)]
    alerts = period_alerts(every, period)
    energy = _energy(every, site, period)
    water = _water(alerts, history, site, period, rules)
    patrols = _patrols(alerts, history, site, period, rules)
    doors = _doors(alerts, site)
    silent = _silent(alerts, site)
    still_open = _still_open(alerts, site, period.end)
    temperatures = _temperature_log(alerts, history, site, period, rules)
    local_start, local_end = period.start.astimezone(period.zone), period.end.astimezone(period.zone)
    window = {"start": period.start.isoformat(), "end": period.end.isoformat(), "local": f"{day_start:%H:%M}-{day_start:%H:%M}"}
    return {
        "site": {"id": site.id, "name": site.name or site.id, "timezone": site.timezone, "locale": site.locale,
                 "names": name_table(site)},
        "day": day.isoformat(),
        "night": day.isoformat(),  # the former name of `day`
        "window": window,
        "period": {**window, "day_start": f"{day_start:%H:%M}", "hours": round(period.hours, 3),
                   "clock_change": period.clock_change,
                   "local_start": local_start.isoformat(), "local_end": local_end.isoformat()},
        "generated_at": (generated_at or datetime.now(timezone.utc)).isoformat(),
        "history": history is not None,
        "summary": {
            "energy_kwh": energy["total_kwh"],
            "energy_cost": energy["total_cost"],
            "currency": energy["currency"],
            "litres_lost": water["total_litres_lost"],
            "suspected_leaks": len(water["leaks"]),
            "rounds_scheduled": patrols["rounds_scheduled"],
            "rounds_done": patrols["rounds_done"],
            "checkpoints_missed": patrols["checkpoints_missed"],
            "checkpoints_late": patrols["checkpoints_late"],
            "doors_forced": sum(1 for d in doors if d["rule"] == doors_rule.FORCED),
            "door_incidents": len(doors),
            "silent_devices": len(silent),
            "open_alerts": len(still_open),
        },
        "energy": energy,
        "water": water,
        "patrols": patrols,
        "doors": doors,
        "silent_devices": silent,
        "open_alerts": still_open,
        "cold_rooms": temperatures,
        "notes": [say(note, site.locale) for note in _notes(period, energy, water, patrols)],
        "alerts": [_alert_json(a) for a in alerts],
    }


def _notes(period: Period, energy: dict[str, Any], water: dict[str, Any], patrols: dict[str, Any]) -> list[str]:
    """How the numbers were made, in words, for the page's foot and the JSON."""
    notes = [Message(
        "The report covers {hours:g} h: from {start} on {day} to "
        "{start} the next day, local time, daytime, weekends and holidays included.",
        hours=period.hours, start=f"{period.day_start:%H:%M}", day=period.day.isoformat(),
    )]
    if period.clock_change:
        notes.append(Message("The clocks change during this day: times carry their UTC offset."))
    if any(e["share"] < 1 for e in energy["episodes"]):
        notes.append(Message("An energy alert that runs across the day boundary counts here in proportion to its time "
                             "inside the day (its kWh and cost spread evenly over its since-until span)."))
    else:
        notes.append(Message("Energy alerts count in proportion to their since-until span inside the day."))
    notes.append(Message("Litres lost are each leak alert's own figure (water above the meter's normal use since the "
                         "leak began, as the rule computed it), counted once per meter."))
    if water["meters"] and any(m["source"] != "flow" for m in water["meters"]):
        notes.append(Message("Meters that send only their volume register: flow is the register's change between readings."))
    if any(r.get("uploaded_at_source") == "write_order" for r in patrols["rounds"]):
        notes.append(Message("Wand upload times marked ~ are estimated from the order the historian stored the data."))
    return notes


# --------------------------------------------------------------------------- energy


def _instant(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _energy_span(a: Alert) -> tuple[datetime, datetime]:
    """[since, until] of an energy alert: its details, else (older alerts) since + minutes,
    else its resolution or last update."""
    d = a.details
    since = _instant(d.get("since")) or datetime.fromisoformat(a.opened_at)
    until = _instant(d.get("until"))
    if until is None and "minutes" in d:
        until = since + timedelta(minutes=float(d["minutes"]))
    if until is None:
        until = datetime.fromisoformat(a.resolved_at or a.updated_at)
    return since, max(until, since)


def _energy(alerts: Sequence[Alert], site: SiteConfig, period: Period) -> dict[str, Any]:
    """Wasted energy per after-hours alert, its share inside the day, summed by circuit
    kind, by room and by building."""
    price = site.tariff.energy_per_kwh
    items = []
    for a in sorted(alerts, key=lambda a: (a.opened_at, a.id)):
        if a.rule not in ENERGY_RULES:
            continue
        since, until = _energy_span(a)
        share = period.share(since, until)
        if share <= 0:
            continue
        d = a.details
        kind = str(d.get("kind") or ENERGY_RULES[a.rule])
        total_kwh = float(d.get("wasted_kwh", 0.0))
        total_cost = float(d.get("cost", total_kwh * price))
        items.append({
            "alert_id": a.id,
            "rule": a.rule,
            "kind": kind,
            "kind_label": KIND_LABELS.get(kind, kind),
            "subject": a.subject,
            "building": str(d.get("building", "")),
            "room": str(d.get("room", a.subject)),
            "devices": str(d.get("device", "")),
            "kwh": round(total_kwh * share, 3),
            "cost": round(total_cost * share, 2),
            "share": round(share, 4),
            "total_kwh": round(total_kwh, 3),
            "total_cost": round(total_cost, 2),
            "since": since.isoformat(),
            "until": until.isoformat(),
            "minutes": round((until - since).total_seconds() / 60, 1),
            "on_minutes": d.get("on_minutes"),
            "state": a.state.value,
            "ended": a.resolved_at,
            "reason": str(d.get("reason", "")),
            "bands": {b: {"kwh": round(float(d.get(f"kwh_{b}", 0.0)) * share, 3),
                          "cost": round(float(d.get(f"cost_{b}", 0.0)) * share, 2)} for b in _bands(site)},
        })
    by_kind: dict[str, dict[str, float]] = defaultdict(lambda: {"kwh": 0.0, "cost": 0.0, "alerts": 0})
    by_room: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"kwh": 0.0, "cost": 0.0, "kinds": defaultdict(float)})
    for item in items:
        k = by_kind[item["kind"]]
        k["kwh"] += item["kwh"]
        k["cost"] += item["cost"]
        k["alerts"] += 1
        r = by_room[(item["building"], item["room"])]
        r["kwh"] += item["kwh"]
        r["cost"] += item["cost"]
        r["kinds"][item["kind"]] += item["kwh"]
    rooms = [{"building": b, "room": r, "kwh": round(v["kwh"], 3), "cost": round(v["cost"], 2),
              "kinds": {k: round(x, 3) for k, x in sorted(v["kinds"].items())}} for (b, r), v in sorted(by_room.items())]
    by_building: dict[str, dict[str, float]] = defaultdict(lambda: {"kwh": 0.0, "cost": 0.0})
    for room in rooms:
        by_building[room["building"]]["kwh"] += room["kwh"]
        by_building[room["building"]]["cost"] += room["cost"]
    kinds = [{"kind": k, "label": KIND_LABELS.get(k, k), "kwh": round(v["kwh"], 3), "cost": round(v["cost"], 2), "alerts": int(v["alerts"])}
             for k, v in sorted(by_kind.items(), key=lambda kv: list(KIND_LABELS).index(kv[0]) if kv[0] in KIND_LABELS else 99)]
    by_band = [{"band": b, "price_per_kwh": p, "kwh": round(sum(i["bands"][b]["kwh"] for i in items), 3),
                "cost": round(sum(i["bands"][b]["cost"] for i in items), 2)} for b, p in _bands(site).items()]
    return {
        "by_band": by_band,  # time-of-use tariffs: kWh and cost per price band (峰谷电价); [] with a flat price
        "currency": next((str(a.details["currency"]) for a in alerts if a.rule in ENERGY_RULES and "currency" in a.details), site.tariff.currency),
        "price_per_kwh": price,
        "total_kwh": round(sum(i["kwh"] for i in items), 3),
        "total_cost": round(sum(i["cost"] for i in items), 2),
        "by_kind": kinds,
        "by_building": [{"building": b, "kwh": round(v["kwh"], 3), "cost": round(v["cost"], 2)} for b, v in sorted(by_building.items())],
        "by_room": rooms,
        "episodes": items,
    }


def waste_so_far(alerts: Sequence[Alert], site: SiteConfig, now: datetime) -> dict[str, dict[str, Any]]:
    """Energy wasted after hours by building, counted as the morning report counts it (each
    alert's kWh and cost, its share inside the span): `today` from local midnight to `now`,
    `week` from Monday 00:00 local to `now`. For the dashboard's energy view."""
    local = now.astimezone(site.zone).date()
    spans = {"today": local, "week": local - timedelta(days=local.weekday())}
    out: dict[str, dict[str, Any]] = {}
    for key, first in spans.items():
        start = local_instant(site.zone, first, time(0))
        energy = _energy(alerts, site, Period(first, start, max(now, start), site.zone, time(0), site.locale))
        out[key] = {"start": start.isoformat(), "end": now.isoformat(), "currency": energy["currency"],
                    "total_kwh": energy["total_kwh"], "total_cost": energy["total_cost"], "by_building": energy["by_building"]}
    return out


def _bands(site: SiteConfig) -> dict[str, float]:
    """Price per kWh of each time-of-use band, in the tariff's order; {} for a flat price."""
    tou = site.tariff.time_of_use
    return dict(tou.bands) if tou is not None else {}


# --------------------------------------------------------------------------- cold rooms


def _temperature_log(
    alerts: Sequence[Alert], history: History | None, site: SiteConfig, period: Period, rules: RulesConfig
) -> list[dict[str, Any]]:
    """The record a food-safety inspection asks for: per cold room (rules.cold_room.rooms)
    the day's lowest, mean and highest temperature, the minutes above its limit, its
    warm alerts, and the same per local hour, from the historian's readings."""
    if history is None or not rules.cold_room.rooms:
        return []
    points = history.points("temperature", period.start, period.end)
    out = []
    for room in cold_rooms(site, rules.cold_room):
        mine = [p for p in points if p.device in room["devices"]]
        readings = sorted(
            (p.time, c) for p in mine
            if (c := to_celsius(float(p.fields.get("value", 0.0)), str(p.tags.get("unit", "C")))) is not None
        )
        hours: dict[datetime, list[float]] = defaultdict(list)  # by the UTC instant the local hour starts
        for t, c in readings:  # (a repeated hour on a fall-back night is two hours)
            hours[t.astimezone(period.zone).replace(minute=0, second=0, microsecond=0).astimezone(timezone.utc)].append(c)
        above = sum(
            (b - a).total_seconds() / 60 for (a, c), (b, _) in zip(readings, readings[1:])
            if c > room["limit_c"] and b - a <= timedelta(minutes=15)
        )
        values = [c for _, c in readings]
        warm = [a for a in alerts if a.rule == "cold_room_warm" and a.subject == room["subject"]]
        out.append({
            **room,
            "sensors": sorted({p.device for p in mine}),
            "readings": len(values),
            "min_c": round(min(values), 2) if values else None,
            "mean_c": round(sum(values) / len(values), 2) if values else None,
            "max_c": round(max(values), 2) if values else None,
            "minutes_above": round(above, 1),
            "alerts": [{"id": a.id, "state": a.state.value, "message": a.message,
                        "minutes": a.details.get("minutes"), "peak_c": a.details.get("peak_c")} for a in warm],
            "hours": [{"hour": h.astimezone(period.zone).strftime("%H:%M"), "start": h.astimezone(period.zone).isoformat(),
                       "readings": len(v),
                       "min_c": round(min(v), 2), "mean_c": round(sum(v) / len(v), 2), "max_c": round(max(v), 2)}
                      for h, v in sorted(hours.items())],
        })
    return out


# --------------------------------------------------------------------------- water


def _alert_litres(a: Alert) -> float | None:
    """The loss the water rule put in the alert: `litres_lost`, else an older alert's."""
    key = "litres_lost" if "litres_lost" in a.details else _LEGACY_LITRES.get(a.rule)
    if key is None or key not in a.details:
        return None
    return round(float(a.details[key]), 1)


def _water(alerts: Sequence[Alert], history: History | None, site: SiteConfig, period: Period, rules: RulesConfig) -> dict[str, Any]:
    """Suspected leaks from the water alerts, with the litres lost each alert states;
    flow per meter from the historian. Per meter the loss is the largest of its alerts'
    (a night-flow and a continuous-flow alert on one meter describe the same water)."""
    leaks = []
    for a in alerts:
        if a.rule not in water.RULE_NAMES:
            continue
        leaks.append({
            "alert_id": a.id,
            "rule": a.rule,
            "meter": a.subject,
            "building": str(a.details.get("building", "")),
            "room": str(a.details.get("room", "")),
            "litres_lost": _alert_litres(a),
            "min_flow_l_per_min": a.details.get("min_flow_l_per_min"),
            "state": a.state.value,
            "since": str(a.details.get("since", a.opened_at)),
            "message": a.message,
        })
    lost: dict[str, float] = {}
    for leak in leaks:
        if leak["litres_lost"] is not None:
            lost[leak["meter"]] = max(lost.get(leak["meter"], 0.0), leak["litres_lost"])
    window = _quiet_window(site, period, rules)
    return {
        "quiet_window": {"start": window[0].isoformat(), "end": window[1].isoformat(),
                         "local": f"{rules.water.night_start:%H:%M}-{rules.water.night_end:%H:%M}"},
        "meters": _meter_flow(history, site, period, window, rules) if history else None,
        "leaks": leaks,
        "litres_lost_by_meter": {m: round(v, 1) for m, v in sorted(lost.items())},
        "total_litres_lost": round(sum(lost.values()), 1),
    }


def _quiet_window(site: SiteConfig, period: Period, rules: RulesConfig) -> tuple[datetime, datetime]:
    """The water rule's quiet window (02:00-05:00 by default) that starts in this day."""
    w = rules.water
    first = period.day if w.night_start >= period.day_start else period.day + timedelta(days=1)
    last = first if w.night_start < w.night_end else first + timedelta(days=1)
    return local_instant(site.zone, first, w.night_start), local_instant(site.zone, last, w.night_end)


def _is_register(points: Sequence[HistoryPoint]) -> bool:
    """Volume points are a cumulative register unless they say otherwise (the historian
    keeps no `cumulative` flag; a `cumulative` tag is honoured when present) or fall as
    often as a register never does (per-interval volumes)."""
    flag = next((p.tags["cumulative"] for p in points if "cumulative" in p.tags), None)
    if flag is not None:
        return str(flag).lower() in ("true", "1", "yes")
    values = [float(p.fields.get("value", 0.0)) for p in points]
    falls = sum(1 for a, b in zip(values, values[1:]) if b < a)
    return falls <= max(1, len(values) // 10)  # a reset or two, not noise


def _samples(points: Sequence[HistoryPoint], cumulative: bool) -> list[MeterSample]:
    default_unit = "L/min" if points and points[0].measurement == "flow" else "m3"
    return [MeterSample(p.time, p.measurement, float(p.fields.get("value", 0.0)), str(p.tags.get("unit", default_unit)), cumulative)
            for p in points]


def _meter_flow(history: History, site: SiteConfig, period: Period, window: tuple[datetime, datetime], rules: RulesConfig) -> list[dict[str, Any]]:
    """Litres per meter over the day, and the minimum flow in the quiet window, read as
    the water rule reads a meter (rules.water.meter_spans: its units, gaps, resets and the
    configured max flow, above which a step is a replaced meter, not water). A
    meter that sends flow is read from it; one that sends only its volume register (or
    volumes) from the register's changes, so it counts as reporting too."""
    max_gap = timedelta(minutes=rules.water.max_gap_minutes)
    by_meter: dict[str, dict[str, list[HistoryPoint]]] = defaultdict(lambda: defaultdict(list))
    for measurement in ("flow", "volume"):
        for p in history.points(measurement, period.start, period.end):
            by_meter[p.device][measurement].append(p)
    meters = []
    for device, series in sorted(by_meter.items()):
        if series.get("flow"):
            points, source = series["flow"], "flow"
        else:
            points = series["volume"]
            source = "register" if _is_register(points) else "volume"
        samples = _samples(points, source == "register")
        spans = [s for s in meter_spans(samples, max_gap, rules.water.max_flow_l_per_min) if not s.gap]
        quiet = [s for s in spans if s.flow is not None and s.start >= window[0] and s.end <= window[1]]
        place = site.locate(device)
        meters.append({
            "meter": device,
            "building": place.building if place else "",
            "room": place.room if place else "",
            "source": source,
            "litres": round(sum(s.litres for s in spans), 1),
            "quiet_litres": round(sum(s.litres for s in quiet), 1),
            "quiet_min_flow_l_per_min": round(min(s.flow for s in quiet if s.flow is not None), 3) if quiet else None,
            "readings": len(points),
        })
    return meters


# --------------------------------------------------------------------------- patrols


def _patrols(alerts: Sequence[Alert], history: History | None, site: SiteConfig, period: Period, rules: RulesConfig) -> dict[str, Any]:
    """Rounds judged again from the day's taps when the routes are known (the same rule
    the gateway runs, so the same verdicts); otherwise only what the alerts say. Rounds
    walked with a wand say when the wand was uploaded; late uploads and late rounds are
    listed from their alerts."""
    if rules.patrol.routes and history is not None:
        rounds = _judged_rounds(history, site, rules.patrol, rules.allowed_lateness_seconds, period)
        source = "taps"
    else:
        rounds = _rounds_from_alerts(alerts)
        source = "alerts"
    uploads = _late_uploads(alerts)
    for rnd in rounds:
        upload = uploads.get(rnd["round"])
        if upload is not None and upload["uploaded_at"]:
            rnd["uploaded_at"], rnd["uploaded_at_source"] = upload["uploaded_at"], "alert"
            rnd["upload_delay_minutes"] = _minutes_between(rnd.get("last_tap_at"), upload["uploaded_at"])
        rnd["upload_late"] = upload is not None
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for rnd in rounds:
        counts = groups[(rnd["route"], rnd["guard"] or "")]
        counts["rounds"] += 1
        counts["done"] += rnd["done"]
        counts["not_started"] += not rnd["started"]
        counts["missed"] += rnd["missed"]
        counts["late"] += rnd["late"]
    by_guard = [
        {"route": route, "guard": guard, "rounds": c["rounds"], "done": c["done"], "not_started": c["not_started"],
         "missed_checkpoints": c["missed"], "late_checkpoints": c["late"]}
        for (route, guard), c in sorted(groups.items())
    ]
    return {
        "source": source,
        "rounds": rounds,
        "by_route_and_guard": by_guard,
        "rounds_scheduled": len(rounds),
        "rounds_done": sum(r["done"] for r in rounds),
        "checkpoints_missed": sum(r["missed"] for r in rounds),
        "checkpoints_late": sum(r["late"] for r in rounds),
        "wand_rounds": [r["round"] for r in rounds if r["wand"]],
        "late_rounds": _late_rounds(alerts, rounds),
        "late_uploads": sorted(uploads.values(), key=lambda u: u["round"]),
        "silences": [_alert_brief(a) for a in alerts if a.rule == "patrol_silence"],
    }


def _minutes_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 60, 1)


def _judged_rounds(history: History, site: SiteConfig, config: PatrolConfig, lateness_s: float, period: Period) -> list[dict[str, Any]]:
    from rules.patrol import PatrolRule  # the rule layer is pure: judging again is cheap

    start, end = period.start, period.end
    rule = PatrolRule(site, config, timedelta(seconds=lateness_s))
    rule.on_tick(start - timedelta(hours=1))  # rounds opening after this are all followed
    since = start - timedelta(hours=2)
    points = history.points("patrol_tap", since, end + timedelta(hours=1))
    taps = [_tap(p, site) for p in points]
    ordered = sorted(taps, key=lambda t: t.event_time)
    for tap in ordered:
        if tap.source is not TapSource.WAND:
            rule.on_event(tap)
    # Every wand tap in the historian was uploaded: given to the rule as one upload after
    # the day, then time passes until it has settled, so each wand round is judged on them.
    after = end + timedelta(hours=1)
    rule.on_tick(after)
    for tap in ordered:
        if tap.source is TapSource.WAND:
            rule.on_event(tap)
    rule.on_tick(after + timedelta(seconds=getattr(config, "upload_settle_seconds", 0.0) + 60))
    guards = {(t.tag, t.event_time.isoformat()): t.guard for t in taps}
    rows = {(str(p.fields["tag_id"]), p.time.isoformat()): p.row for p in points}
    routes = {r.id: r for r in config.routes}
    rounds = []
    for rnd in rule.rounds_state():
        if not start <= datetime.fromisoformat(rnd["starts_at"]) < end:
            continue
        checkpoints = rnd["checkpoints"]
        seen = [guards.get((c["tag"], c["tapped_at"])) for c in checkpoints if c["tapped_at"]]
        guard = routes[rnd["route"]].guard or next((g for g, _ in Counter(g for g in seen if g).most_common(1)), None)
        delay = timedelta(minutes=float(rnd.get("minutes_late") or 0.0))
        missed = [c["tag"] for c in checkpoints if c["state"] == "missed"]
        late = [c["tag"] for c in checkpoints if c["state"] == "late" and not _late_with_round(c, delay)]
        tapped = sorted(c["tapped_at"] for c in checkpoints if c["tapped_at"])
        wand_taps = [c for c in checkpoints if c.get("source") == TapSource.WAND.value and c["tapped_at"]]
        uploaded = _upload_estimate(history, [rows.get((c["tag"], c["tapped_at"])) for c in wand_taps])
        rounds.append({
            "round": rnd["round"], "route": rnd["route"], "start": rnd["start"], "date": rnd["date"],
            "starts_at": rnd["starts_at"], "guard": guard, "started": rnd["started"],
            "done": bool(rnd["started"]) and not missed and all(c["state"] != "pending" for c in checkpoints),
            "missed": len(missed), "late": len(late), "missed_tags": missed, "late_tags": late,
            "minutes_late": round(delay.total_seconds() / 60, 1),
            "awaiting_upload": bool(rnd.get("awaiting_upload", False)),
            "wand": bool(wand_taps) or bool(rnd.get("wand", False)),
            "first_tap_at": tapped[0] if tapped else None, "last_tap_at": tapped[-1] if tapped else None,
            "uploaded_at": uploaded.isoformat() if uploaded else None,
            "uploaded_at_source": "write_order" if uploaded else None,
            "upload_delay_minutes": _minutes_between(tapped[-1], uploaded.isoformat()) if uploaded and tapped else None,
            "checkpoints": checkpoints,
        })
    return rounds


def _late_with_round(checkpoint: dict[str, Any], delay: timedelta) -> bool:
    """Tapped late only by as much as its round started late: the round's alert says it."""
    if not delay or not checkpoint.get("tapped_at"):
        return False
    return datetime.fromisoformat(checkpoint["tapped_at"]) <= datetime.fromisoformat(checkpoint["deadline"]) + delay


def _upload_estimate(history: History, rows: Sequence[int | None]) -> datetime | None:
    """When the last of a round's wand taps reached the historian, if it can tell."""
    written_by = getattr(history, "written_by", None)
    known = [r for r in rows if r is not None]
    if written_by is None or not known:
        return None
    found: datetime | None = written_by(max(known))
    return found


def _late_uploads(alerts: Sequence[Alert]) -> dict[str, dict[str, Any]]:
    """Each `patrol_upload_late` alert, by round key."""
    found = {}
    for a in alerts:
        if a.rule != _UPLOAD_LATE:
            continue
        route = str(a.details.get("route", ""))
        key = a.subject if ":" in a.subject and a.subject.startswith(f"{route}:") else f"{route}:{a.details.get('round', '')}"
        found[key] = {
            **_alert_brief(a), "round": key, "route": route,
            "upload_deadline": a.details.get("upload_deadline") or a.opened_at,  # raised at its deadline
            "uploaded_at": a.details.get("uploaded_at"),
            "minutes_late": a.details.get("minutes_late"),
        }
    return found


def _late_rounds(alerts: Sequence[Alert], rounds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rounds walked late: the round's own alert (one per round), else the judged delay."""
    late: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if a.rule == "patrol_round" and "minutes_late" in a.details:
            key = a.subject
            late[key] = {"round": key, "route": str(a.details.get("route", "")), "guard": a.details.get("guard"),
                         "started_at": a.details.get("started_at"), "minutes_late": round(float(a.details["minutes_late"]), 1),
                         "alert_id": a.id, "message": a.message}
    for rnd in rounds:
        if rnd.get("minutes_late") and rnd["round"] not in late:
            late[rnd["round"]] = {"round": rnd["round"], "route": rnd["route"], "guard": rnd["guard"],
                                  "started_at": rnd.get("first_tap_at"), "minutes_late": rnd["minutes_late"],
                                  "alert_id": None, "message": ""}
    return sorted(late.values(), key=lambda r: r["round"])


def _tap(point: HistoryPoint, site: SiteConfig) -> PatrolTap:
    return PatrolTap(
        id=f"report-{to_epoch_ns(point.time)}-{point.device}"[:128],
        site=site.id,
        device=point.device,
        event_time=point.time,
        reader=str(point.tags.get("reader", point.device)),
        tag=str(point.fields["tag_id"]),
        guard=point.fields.get("guard") or None,
        source=TapSource(point.tags.get("source", "online")),
    )


def _rounds_from_alerts(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Without the routes, only rounds that earned an alert are known."""
    rounds: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if a.rule not in ("patrol_round", "patrol_checkpoint", _UPLOAD_LATE):
            continue
        route, key = str(a.details.get("route", "")), str(a.details.get("round", ""))
        rnd = rounds.setdefault(f"{route}:{key}", {
            "round": f"{route}:{key}", "route": route, "start": key[-5:], "date": key[:10], "starts_at": None,
            "guard": a.details.get("guard"), "started": True, "done": False, "missed": 0, "late": 0,
            "missed_tags": [], "late_tags": [], "minutes_late": 0.0, "awaiting_upload": False,
            "wand": a.rule == _UPLOAD_LATE, "last_tap_at": None, "uploaded_at": None, "uploaded_at_source": None,
            "upload_delay_minutes": None, "checkpoints": [],
        })
        state = str(a.details.get("state", ""))
        if a.rule == "patrol_round" and "missed" in a.details and a.state != "resolved":
            rnd["started"] = False
            rnd["missed"] = max(rnd["missed"], int(float(a.details["missed"])))
        elif a.rule == "patrol_round" and "minutes_late" in a.details:
            rnd["minutes_late"] = round(float(a.details["minutes_late"]), 1)
        elif a.rule == "patrol_checkpoint" and a.details.get("note") is None and state in ("missed", "late"):
            rnd[state] += 1
            rnd[f"{state}_tags"].append(str(a.details.get("tag", "")))
        if a.details.get("source") == TapSource.WAND.value:
            rnd["wand"] = True
    return list(rounds.values())


# --------------------------------------------------------------------------- doors, devices, open


def _doors(alerts: Sequence[Alert], site: SiteConfig) -> list[dict[str, Any]]:
    return [
        {**_alert_brief(a), "door": a.subject, "what": _DOOR_RULES[a.rule], "count": a.details.get("count"),
         "seconds": a.details.get("seconds")}
        for a in alerts if a.rule in _DOOR_RULES
    ]


def _silent(alerts: Sequence[Alert], site: SiteConfig) -> list[dict[str, Any]]:
    out = []
    for a in alerts:
        if a.rule not in _SILENT_RULES:
            continue
        place = site.locate(a.subject)
        link = a.rule == deadman.LINK  # a campus cut: silent from its start, for `minutes` (None: not back yet)
        out.append({
            **_alert_brief(a), "device": a.subject, "agent": a.rule == deadman.AGENT,
            "last_event": a.details.get("down_at" if link else "last_event"), "building": place.building if place else "",
            "room": place.room if place else "", "link": link, "minutes": a.details.get("minutes") if link else None,
        })
    return out


def _still_open(alerts: Sequence[Alert], site: SiteConfig, end: datetime) -> list[dict[str, Any]]:
    """Alerts not resolved when the day ended, oldest first, with their age then."""
    cutoff = end.isoformat()
    out = []
    for a in alerts:
        if a.resolved_at is not None and a.resolved_at <= cutoff:
            continue
        age = end - datetime.fromisoformat(a.opened_at)
        out.append({**_alert_brief(a), "age_hours": round(max(age.total_seconds(), 0) / 3600, 1),
                    "acknowledged_by": a.acknowledged_by})
    return sorted(out, key=lambda item: item["opened_at"])


def _alert_brief(a: Alert) -> dict[str, Any]:
    return {"alert_id": a.id, "rule": a.rule, "subject": a.subject, "severity": a.severity, "state": a.state.value,
            "opened_at": a.opened_at, "resolved_at": a.resolved_at, "message": a.message}


def _alert_json(a: Alert) -> dict[str, Any]:
    data = asdict(a)
    data["state"] = a.state.value
    return data


# --------------------------------------------------------------------------- rendering


#: Fonts with Chinese glyphs the chart looks for, best first, and where Debian's packages put
#: them (fonts-wqy-microhei is the one deploy/Dockerfile and .ci/run install).
CJK_FONTS = {
    "WenQuanYi Micro Hei": "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "Noto Sans CJK SC": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "WenQuanYi Zen Hei": "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
}
#: Latin letters and digits come from matplotlib's own font, so the chart looks the same with or without a CJK font.
CHART_LATIN_FONT = "DejaVu Sans"


@lru_cache(maxsize=1)
def chart_fonts() -> tuple[str, ...]:
    """The chart's font families: DejaVu Sans, then (glyph by glyph fallback) the first CJK
    font matplotlib's font manager knows, registering a packaged file it has not indexed yet
    (installed after its cache was built). Without one, Chinese labels would be boxes: said
    once in the log, and the chart is still drawn."""
    from matplotlib import font_manager

    known = {entry.name for entry in font_manager.fontManager.ttflist}
    for family, path in CJK_FONTS.items():
        if family not in known and Path(path).exists():
            font_manager.fontManager.addfont(path)
            known = {entry.name for entry in font_manager.fontManager.ttflist}
        if family in known:
            return (CHART_LATIN_FONT, family)
    log.warning("no CJK font for the energy chart: Chinese labels will not render",
                extra={"looked_for": sorted(CJK_FONTS), "hint": "apt-get install fonts-wqy-microhei"})
    return (CHART_LATIN_FONT,)


def energy_chart_svg(report: dict[str, Any]) -> str | None:
    """Horizontal bars of kWh wasted per room, split by circuit kind, labelled in the site's
    locale (names, not ids, outside English); None when nothing was wasted."""
    rooms = [r for r in report["energy"]["by_room"] if r["kwh"] > 0]
    if not rooms:
        return None
    from matplotlib import rc_context, rcParams

    rcParams["svg.hashsalt"] = "warden"  # stable ids: the same report gives the same file
    with rc_context({"font.family": list(chart_fonts())}):  # per call: no other figure changes
        return _draw_energy_chart(report, rooms)


def _draw_energy_chart(report: dict[str, Any], rooms: list[dict[str, Any]]) -> str:
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in API threads

    locale = report.get("site", {}).get("locale", "en")
    names = report.get("site", {}).get("names", {})
    _ = gettext_for(locale)

    def name(key: str) -> str:
        return key if is_english(locale) else str(names.get(key, key))  # as render_html: English keeps ids

    labels = [f"{name(r['building'])} / {name(r['room'])}" if r["building"] else name(r["room"]) for r in rooms]
    kinds = [k["kind"] for k in report["energy"]["by_kind"]]
    figure = Figure(figsize=(6.4, 0.9 + 0.45 * len(rooms)), layout="constrained")
    axes = figure.add_subplot()
    left = [0.0] * len(rooms)
    for kind in kinds:
        values = [float(r.get("kinds", {}).get(kind, 0.0)) for r in rooms]
        axes.barh(labels, values, left=left, color=_KIND_COLOURS.get(kind, "#555555"), label=_(KIND_LABELS.get(kind, kind)))
        left = [a + b for a, b in zip(left, values)]
    currency = report["energy"]["currency"]
    for y, r in enumerate(rooms):
        axes.annotate(f"{r['kwh']:.2f} kWh, {r['cost']:.2f} {currency}", (left[y], y), xytext=(3, 0),
                      textcoords="offset points", va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(_("kWh wasted after hours, by circuit kind"))
    axes.margins(x=0.35)
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def render_html(report: dict[str, Any], chart_svg: str | None = None) -> str:
    zone = ZoneInfo(report["site"]["timezone"])
    p = report["period"]
    locale = report["site"].get("locale", "en")
    names = report["site"].get("names", {})
    period = Period(date.fromisoformat(report["day"]), datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"]),
                    zone, time.fromisoformat(p["day_start"]), locale)
    return page_templates(locale).get_template("report.html").render(
        r=report, chart_svg=chart_svg, when=lambda value, fmt="%H:%M": when(value, period, fmt),
        local=lambda value, fmt="%H:%M": _local(value, zone, fmt, locale), kinds=KIND_LABELS, lang=locale,
        name=lambda key: key if is_english(locale) else names.get(key, key),  # English keeps ids (its tests, integrators)
    )


@lru_cache(maxsize=None)
def page_templates(locale: str = "en") -> Any:
    """The report's templates with `_()` translating into `locale` (jinja2.ext.i18n, new style)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("gateway.web", "templates"), autoescape=select_autoescape(["html"]),
                      extensions=["jinja2.ext.i18n"])
    env.install_gettext_callables(gettext_for(locale), lambda s, p, n: gettext_for(locale)(s if n == 1 else p), newstyle=True)  # type: ignore[attr-defined]
    return env


def _local(value: str | None, zone: Any, fmt: str, locale: str = "en") -> str:
    if not value:
        return ""
    return local_text(datetime.fromisoformat(value).astimezone(zone), fmt, locale)


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report flattened to one metric per row, for a spreadsheet."""
    rows: list[dict[str, Any]] = []

    def add(section: str, metric: str, value: Any, unit: str = "", **rest: Any) -> None:
        rows.append({"section": section, "metric": metric, "value": "" if value is None else value, "unit": unit, **rest})

    e = report["energy"]
    for item in e["episodes"]:
        where = {"building": item["building"], "room": item["room"], "subject": item["devices"], "state": item["state"], "since": item["since"]}
        note = "" if item["share"] >= 1 else f"{item['share']:.0%} of {item['total_kwh']} kWh ({item['since']} to {item['until']}) in this day"
        add("energy", "wasted_kwh", item["kwh"], "kWh", note=note, **where)
        add("energy", "cost", item["cost"], e["currency"], note=note, **where)
    for b in e.get("by_band", []):
        add("energy_by_band", "wasted_kwh", b["kwh"], "kWh", subject=b["band"], note=f"{b['price_per_kwh']} {e['currency']}/kWh")
        add("energy_by_band", "cost", b["cost"], e["currency"], subject=b["band"])
    for room in report.get("cold_rooms", []):
        where = {"building": room["building"], "room": room["room"], "subject": ",".join(room["sensors"])}
        for metric in ("min_c", "mean_c", "max_c"):
            add("cold_room", metric, room[metric], "°C", **where)
        add("cold_room", "minutes_above", room["minutes_above"], "min", note=f"limit {room['limit_c']:g} °C", **where)
        for h in room["hours"]:
            add("cold_room_hourly", "min_mean_max_c", f"{h['min_c']}/{h['mean_c']}/{h['max_c']}", "°C", since=h["start"], **where)
    for k in e["by_kind"]:
        add("energy_by_kind", "wasted_kwh", k["kwh"], "kWh", subject=k["kind"], note=k["label"])
        add("energy_by_kind", "cost", k["cost"], e["currency"], subject=k["kind"], note=k["label"])
    for leak in report["water"]["leaks"]:
        add("water", leak["rule"], leak["litres_lost"], "L", building=leak["building"], room=leak["room"],
            subject=leak["meter"], state=leak["state"], since=leak["since"], note=leak["message"])
    for meter in report["water"]["meters"] or []:
        where = {"building": meter["building"], "room": meter["room"], "subject": meter["meter"], "note": meter["source"]}
        add("water", "litres", meter["litres"], "L", **where)
        add("water", "quiet_min_flow", meter["quiet_min_flow_l_per_min"], "L/min", **where)
    p = report["patrols"]
    for g in p["by_route_and_guard"]:
        for metric in ("rounds", "done", "not_started", "missed_checkpoints", "late_checkpoints"):
            add("patrols", metric, g[metric], "", subject=f"{g['route']}/{g['guard'] or '-'}")
    for rnd in p["rounds"]:
        for tag in rnd["missed_tags"]:
            add("patrols", "missed_checkpoint", tag, "", subject=rnd["round"], note=rnd["guard"] or "")
        for tag in rnd["late_tags"]:
            add("patrols", "late_checkpoint", tag, "", subject=rnd["round"], note=rnd["guard"] or "")
        if rnd["wand"]:
            add("patrols", "wand_uploaded_at", rnd["uploaded_at"], "", subject=rnd["round"],
                note=f"{rnd['upload_delay_minutes']} min after the last tap" if rnd["upload_delay_minutes"] is not None else "")
    for late in p["late_rounds"]:
        add("patrols", "round_minutes_late", late["minutes_late"], "min", subject=late["round"], since=late["started_at"] or "",
            note=late["message"])
    for up in p["late_uploads"]:
        add("patrols", "upload_minutes_late", up["minutes_late"], "min", subject=up["round"], state=up["state"],
            since=up["upload_deadline"] or "", note=up["message"])
    for d in report["doors"]:
        add("doors", d["rule"], d["count"] if d["count"] is not None else 1, "", subject=d["door"], state=d["state"],
            since=d["opened_at"], note=d["message"])
    for s in report["silent_devices"]:
        add("silent", s["rule"], s["last_event"] or s["opened_at"], "", building=s["building"], room=s["room"],
            subject=s["device"], state=s["state"], since=s["opened_at"], note=s["message"])
    for o in report["open_alerts"]:
        add("open", "age_hours", o["age_hours"], "h", subject=f"{o['rule']}:{o['subject']}", state=o["state"],
            since=o["opened_at"], note=o["message"])
    return rows


def render_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_CSV_FIELDS, extrasaction="ignore", restval="")
    locale = report["site"].get("locale", "en")
    if is_english(locale):
        writer.writeheader()  # English headings are the field names, as spreadsheets and scripts know them
    else:
        _ = gettext_for(locale)
        writer.writerow({field: _(label) for field, label in _CSV_HEADINGS.items()})
    writer.writerows(report_rows(report))
    return buffer.getvalue()


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def alerts_csv(alerts: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ALERT_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(alerts)
    return buffer.getvalue()


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    json: Path
    csv: Path
    chart: Path | None
    alerts_json: Path
    alerts_csv: Path
    report: dict[str, Any]


def write_morning_report(
    state_db: str | Path,
    historian: str | Path | Any | None,
    site: SiteConfig,
    day: date | str,
    out_dir: str | Path,
    *,
    rules: RulesConfig | None = None,
    day_start: time = DEFAULT_DAY_START,
) -> ReportFiles:
    """Write the morning report of `site` for `day` (day_start on `day` to day_start the
    next day, local) into `out_dir`. `historian`: the SQLite historian's file, a historian
    object with `series()`, or None (alerts only). `rules`: the gateway's rule config, for
    the patrol routes and the water quiet window (defaults otherwise)."""
    when_day = day if isinstance(day, date) else date.fromisoformat(day)
    store = StateStore(state_db)  # a file or a postgresql:// URL
    try:
        report = build_morning_report(store, open_history(historian, site), site, when_day, rules, day_start=day_start)
    finally:
        store.close()
    return write_report_files(report, Path(out_dir))


def write_report_files(report: dict[str, Any], out: Path) -> ReportFiles:
    out.mkdir(parents=True, exist_ok=True)
    chart = energy_chart_svg(report)
    chart_path = out / "energy.svg" if chart else None
    if chart_path is not None and chart is not None:
        chart_path.write_text(chart, encoding="utf-8")
    files = ReportFiles(out / "report.html", out / "report.json", out / "report.csv", chart_path,
                        out / "alerts.json", out / "alerts.csv", report)
    files.html.write_text(render_html(report, chart), encoding="utf-8")
    files.json.write_text(render_json(report), encoding="utf-8")
    files.csv.write_text(render_csv(report), encoding="utf-8", newline="")
    files.alerts_json.write_text(json.dumps(report["alerts"], indent=2, default=str), encoding="utf-8")
    files.alerts_csv.write_text(alerts_csv(report["alerts"]), encoding="utf-8", newline="")
    return files
