"""The monthly report: meter readings per meter and per tenant/household/department for
finance, the month's alert and repair-request response times and satisfaction by category,
and the three-level supervision view (per building, per team, per site).

Built from the hourly statistics (gateway/statistics.py) and the alert store, never from
raw points: complete whichever historian is chosen and after raw points were pruned.
A month runs from local midnight on the 1st to local midnight on the next 1st, so a month
with a clock change lasts 743 or 745 hours.

    report = build_monthly_report(store, site, "2026-11")
    monthly_csv(report)   # one row per meter: start and end register, consumption
    monthly_html(report)
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics as stats
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from gateway.report import page_templates
from gateway.statistics import MeterReading, StatisticsReader, in_kwh, in_litres, meter_readings
from gateway.store import Alert, StateStore
from gateway.workorders import WorkOrder, WorkOrderConfig, category_for_rule, orders_created_between
from rules.patrol import CHECKPOINT, ROUND
from rules.patrol import RULE_NAMES as PATROL_RULES
from rules.schedule import day_follows, local_instant
from warden.config import PatrolRoute, SiteConfig
from warden.i18n import N_

METER_CSV_FIELDS = ["building", "room", "group", "device", "quantity", "channel", "unit",
                    "start_reading", "end_reading", "consumption", "resets", "end_read_at"]
#: Where a room has no `group`.
NO_GROUP = ""


@dataclass(frozen=True)
class Month:
    """One calendar month of the site's zone, as UTC instants."""

    label: str  # "2026-11"
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


def parse_month(label: str) -> tuple[int, int]:
    """"2026-11" -> (2026, 11); a ValueError naming the expected form otherwise."""
    try:
        year, month = (int(part) for part in label.split("-"))
        date(year, month, 1)
    except ValueError:
        raise ValueError(f"month: expected YYYY-MM such as 2026-11, got {label!r}") from None
    return year, month


def month_period(site: SiteConfig, label: str) -> Month:
    year, month = parse_month(label)
    following = date(year + month // 12, month % 12 + 1, 1)
    zone = site.zone
    return Month(f"{year:04d}-{month:02d}", local_instant(zone, date(year, month, 1), time(0)),
                 local_instant(zone, following, time(0)))


def previous_month(site: SiteConfig, now: datetime) -> str:
    """The label of the month before the one `now` falls in, locally (the 1st's send)."""
    local = now.astimezone(site.zone).date()
    year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
    return f"{year:04d}-{month:02d}"


# --------------------------------------------------------------------------- meters


def _meter_row(reading: MeterReading, site: SiteConfig, groups: dict[str, str]) -> dict[str, Any]:
    s = reading.series
    location = site.locate(s.device)
    return {
        "building": location.building if location else "unknown",
        "room": location.room if location else "unknown",
        "group": groups.get(s.device, NO_GROUP),
        "device": s.device, "quantity": s.quantity, "channel": s.channel, "unit": s.unit,
        "start_reading": reading.start, "end_reading": reading.end,
        "consumption": reading.consumption, "resets": reading.resets,
        "end_read_at": reading.end_at.isoformat() if reading.end_at else None,
    }


def device_groups(site: SiteConfig) -> dict[str, str]:
    """Device -> its room's `group` (tenant, household, department)."""
    return {d: room.group for b in site.buildings for room in b.rooms if room.group for d in room.devices}


def _totals(meters: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Energy (kWh) and water (litres) summed per `key` (group, building), import registers
    only: an export channel is not consumption. `meters_missing`: its meters with no reading
    in the month, so a 0 there reads as data missing, not as nothing used."""
    sums: dict[str, dict[str, Any]] = defaultdict(lambda: {"energy_kwh": 0.0, "water_litres": 0.0, "meters_missing": []})
    for m in meters:
        if "export" in (m["channel"] or ""):
            continue
        if m["consumption"] is None:
            sums[m[key]]["meters_missing"].append(m["device"])
            continue
        if m["quantity"] == "energy" and (kwh := in_kwh(m["consumption"], m["unit"])) is not None:
            sums[m[key]]["energy_kwh"] += kwh
        elif m["quantity"] == "volume" and (litres := in_litres(m["consumption"], m["unit"])) is not None:
            sums[m[key]]["water_litres"] += litres
    return [{key: name, **values} for name, values in sorted(sums.items())]


# --------------------------------------------------------------------------- alerts


def nearest_rank(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (p90 of 10 values is the 9th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def _minutes(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 60


def _alert_stats(alerts: Sequence[Alert], key: Any) -> list[dict[str, Any]]:
    """Per key: count, median and p90 minutes to acknowledge (from the gateway's clock when
    it opened, `raised_at`) and to resolve (event time), and how many were escalated (overdue)."""
    groups: dict[str, list[Alert]] = defaultdict(list)
    for a in alerts:
        groups[key(a)].append(a)
    out = []
    for name, items in sorted(groups.items()):
        ack = [m for a in items if (m := _minutes(a.raised_at or a.opened_at, a.acknowledged_at)) is not None]
        res = [m for a in items if (m := _minutes(a.opened_at, a.resolved_at)) is not None]
        out.append({
            "key": name, "alerts": len(items), **_timing("acknowledged", "ack", ack), **_timing("resolved", "resolve", res),
            "overdue": sum(1 for a in items if a.escalation_level > 0),
        })  # fmt: skip
    return out


def _timing(done: str, prefix: str, minutes: list[float]) -> dict[str, Any]:
    """How many got `done`, and the median and 90th percentile of their minutes."""
    return {done: len(minutes), f"{prefix}_median_min": stats.median(minutes) if minutes else None,
            f"{prefix}_p90_min": nearest_rank(minutes, 0.9)}


def month_alerts(alerts: Sequence[Alert], month: Month) -> list[Alert]:
    """Alerts opened in the month (stored times are UTC ISO strings: they compare as text)."""
    start, end = month.start.isoformat(), month.end.isoformat()
    return [a for a in alerts if start <= a.opened_at < end]


# --------------------------------------------------------------------------- repair requests


def _overdue(order: WorkOrder, until: str) -> bool:
    """Taken after its take-by time, or done after its resolve-by time; one still waiting
    at `until` (the month's end, or now if sooner) counts once its deadline has passed. A
    reopened order's deadlines run from the reopening: its first take, before then, does not
    meet the new take-by time (as workorders.overdue_at judges it)."""
    def late(deadline: str, hours: float, at: str | None) -> bool:
        due = datetime.fromisoformat(deadline)
        met = at is not None and datetime.fromisoformat(at) >= due - timedelta(hours=hours)
        return datetime.fromisoformat(at if met and at else until) > due

    return late(order.take_by, order.take_hours, order.taken_at) or late(order.resolve_by, order.resolve_hours, order.done_at)


def _work_order_stats(orders: Sequence[WorkOrder], key: Any, until: str) -> list[dict[str, Any]]:
    """Per key: orders, median and p90 minutes from creation to taken and to closed,
    overdue orders, and satisfaction: ratings given, their mean, the share of 4 and 5."""
    groups: dict[str, list[WorkOrder]] = defaultdict(list)
    for o in orders:
        groups[key(o)].append(o)
    out = []
    for name, items in sorted(groups.items()):
        take = [m for o in items if (m := _minutes(o.created_at, o.taken_at)) is not None]
        close = [m for o in items if (m := _minutes(o.created_at, o.closed_at)) is not None]
        ratings = [o.rating for o in items if o.rating is not None]
        out.append({
            "key": name, "work_orders": len(items), **_timing("taken", "take", take), **_timing("closed", "close", close),
            "overdue": sum(1 for o in items if _overdue(o, until)),
            "ratings": len(ratings), "rating_mean": stats.mean(ratings) if ratings else None,
            "satisfied_share": sum(1 for r in ratings if r >= 4) / len(ratings) if ratings else None,
        })  # fmt: skip
    return out


def supervision(alerts: Sequence[dict[str, Any]], orders: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One level of the three-level view (三级督查): each key's alert and repair-request
    figures side by side, from rows of `_alert_stats` and `_work_order_stats`."""
    by_alerts = {a["key"]: a for a in alerts}
    by_orders = {o["key"]: o for o in orders}
    rows = []
    for key in sorted(by_alerts.keys() | by_orders.keys()):
        a, o = by_alerts.get(key, {}), by_orders.get(key, {})
        rows.append({
            "key": key, "alerts": a.get("alerts", 0), "alerts_overdue": a.get("overdue", 0),
            "ack_median_min": a.get("ack_median_min"), "work_orders": o.get("work_orders", 0),
            "work_orders_closed": o.get("closed", 0), "work_orders_overdue": o.get("overdue", 0),
            "take_median_min": o.get("take_median_min"), "close_median_min": o.get("close_median_min"),
            "ratings": o.get("ratings", 0), "rating_mean": o.get("rating_mean"), "satisfied_share": o.get("satisfied_share"),
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------- patrols


def _round_key(a: Alert) -> tuple[str, str]:
    """(route, "route:YYYY-MM-DDTHH:MM") of a round or checkpoint alert (rules/patrol.py subjects)."""
    key = a.subject if a.rule == ROUND else a.subject.rsplit(":", 1)[0]
    return key.split(":", 1)[0], key


def patrol_completion(routes: Sequence[PatrolRoute], alerts: Sequence[Alert], label: str,
                      site: SiteConfig | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per route and per guard: rounds scheduled in the month (days the route runs x its
    round times), rounds not completed (a round alert: missed or incomplete), rounds with
    a late or missed checkpoint, and the completed share. A route bound to a schedule runs
    on the days `site`'s calendar gives it (no holidays, make-up days), as rules/patrol.py plans them."""
    year, month = parse_month(label)
    days = [date(year, month, d) for d in range(1, 32) if _valid(year, month, d)]
    failed: dict[str, set[str]] = defaultdict(set)
    flawed: dict[str, set[str]] = defaultdict(set)
    for a in alerts:
        if a.rule in (ROUND, CHECKPOINT):
            route, key = _round_key(a)
            if key.split(":", 1)[-1][:7] == label:  # the round's own day is in the month
                (failed if a.rule == ROUND else flawed)[route].add(key)
    per_route = []
    for route in routes:
        scheduled = sum(1 for d in days if _route_weekday(route, site, d) in route.days) * len(route.rounds)
        missed = len(failed[route.id])
        per_route.append({"route": route.id, "guard": route.guard or "", "rounds_scheduled": scheduled,
                          "rounds_not_completed": missed, "rounds_with_checkpoint_alerts": len(flawed[route.id]),
                          "completion": (scheduled - missed) / scheduled if scheduled else None})
    per_guard: dict[str, dict[str, Any]] = {}
    for r in per_route:
        g = per_guard.setdefault(r["guard"], {"guard": r["guard"], "rounds_scheduled": 0, "rounds_not_completed": 0})
        g["rounds_scheduled"] += r["rounds_scheduled"]
        g["rounds_not_completed"] += r["rounds_not_completed"]
    for g in per_guard.values():
        done = g["rounds_scheduled"] - g["rounds_not_completed"]
        g["completion"] = done / g["rounds_scheduled"] if g["rounds_scheduled"] else None
    return {"routes": per_route, "guards": sorted(per_guard.values(), key=lambda g: g["guard"])}


def _route_weekday(route: PatrolRoute, site: SiteConfig | None, day: date) -> int | None:
    """The weekday whose rounds `route` walks on `day` (None: none), as the patrol rule decides."""
    if route.schedule is None or site is None:
        return day.weekday()
    return day_follows(site, route.schedule, day)


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- the report


def build_monthly_report(store: StateStore, site: SiteConfig, label: str, generated_at: datetime | None = None,
                         routes: Sequence[PatrolRoute] = (), work_orders: WorkOrderConfig | None = None) -> dict[str, Any]:
    """The month as JSON-ready data; the CSV and HTML are made from it. `work_orders`:
    the gateway's work_orders config (categories, teams); none: the defaults."""
    month = month_period(site, label)
    generated_at = generated_at or datetime.now(timezone.utc)
    config = work_orders or WorkOrderConfig()
    known = set(config.categories)
    orders = store.read(lambda db: orders_created_between(db, month.start.isoformat(), month.end.isoformat(), site.id))
    until = min(month.end, generated_at).astimezone(timezone.utc).isoformat()
    room_buildings = {room.id: b.id for b in site.buildings for room in b.rooms}
    readings = store.read(lambda db: meter_readings(StatisticsReader(db, site.id), month.start, month.end))
    groups = device_groups(site)
    meters = [_meter_row(r, site, groups) for r in readings]
    every = store.alerts(site=site.id, limit=10_000_000)
    alerts = month_alerts(every, month)
    buildings = {d: loc.building for d, loc in site.device_locations.items()}

    def building_of(a: Alert) -> str:
        return buildings.get(a.subject.split("/")[0], buildings.get(a.subject, "unknown"))

    def category_of(a: Alert) -> str:
        return category_for_rule(a.rule, known)

    def order_building(o: WorkOrder) -> str:
        return room_buildings.get(o.room.split(":")[-1], "unknown")

    patrol = [a for a in alerts if a.rule in PATROL_RULES]
    alerts_by = {"building": _alert_stats(alerts, building_of),
                 "team": _alert_stats(alerts, lambda a: config.team_of(category_of(a))),
                 "site": _alert_stats(alerts, lambda a: site.id)}
    orders_by = {"category": _work_order_stats(orders, lambda o: o.category, until),
                 "building": _work_order_stats(orders, order_building, until),
                 "team": _work_order_stats(orders, lambda o: config.team_of(o.category), until),
                 "site": _work_order_stats(orders, lambda o: site.id, until)}
    return {
        "site": {"id": site.id, "name": site.name or site.id, "timezone": site.timezone, "locale": site.locale},
        "month": month.label,
        "period": {"start": month.start.isoformat(), "end": month.end.isoformat(), "hours": round(month.hours, 3)},
        "generated_at": generated_at.isoformat(),
        "meters": meters,
        "groups": _totals(meters, "group"),
        "buildings": _totals(meters, "building"),
        "site_totals": _totals([{**m, "site": site.id} for m in meters], "site"),
        "alerts_by_rule": _alert_stats(alerts, lambda a: a.rule),
        "alerts_by_building": alerts_by["building"],
        "alerts_site": alerts_by["site"],
        "alerts_by_category": _alert_stats(alerts, category_of),
        "work_orders_by_category": orders_by["category"],
        "work_orders_by_building": orders_by["building"],
        "work_orders_by_team": orders_by["team"],
        "work_orders_site": orders_by["site"],
        "supervision": {level: supervision(alerts_by[level], orders_by[level]) for level in ("building", "team", "site")},
        "patrol_alerts_by_route": _alert_stats(patrol, lambda a: _round_key(a)[0]),
        "patrols": patrol_completion(routes, [a for a in every if a.rule in PATROL_RULES], month.label, site),
        "notes": [
            "Readings are each meter's register: start is its last reading before the month, end its last reading "
            "in the month; consumption is their difference. A meter with resets > 0 went down during the month "
            "(reset, rolled over or replaced): its consumption is the sum of its parts, the old register's up to "
            "its last reading and the new one's from its first; what was used between them is not counted. "
            "A meter with no reading in the month has no consumption (data missing), not 0. end_read_at: when its end "
            "was read (UTC); readings of the month stored after this report was made (a backlog) are not in it, only "
            "in the report made again (API, CLI).",
            "Times to acknowledge and resolve are nearest-rank percentiles in minutes; overdue: escalated at least once.",
            "Repair requests are those created in the month; times to take and to close run from creation, nearest-rank "
            "percentiles in minutes; overdue: taken or done after its deadline (or still waiting past it). "
            "Satisfaction: the requesters' ratings (1-5), their mean and the share of 4 and 5. A team is who does "
            "a category of work (work_orders.teams; a category in no team is its own).",
        ],
    }


def monthly_csv(report: dict[str, Any]) -> str:
    """One row per meter, registers as the meter reported them (repr of the float)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["month", *METER_CSV_FIELDS], lineterminator="\n")
    writer.writeheader()
    for m in report["meters"]:
        writer.writerow({"month": report["month"], **{k: ("" if m[k] is None else m[k]) for k in METER_CSV_FIELDS}})
    return out.getvalue()


#: Column heads named by a key of the data; the template translates them with `_(key)`.
_KEY_WORDS = (N_("site"), N_("building"), N_("group"), N_("team"))


def monthly_html(report: dict[str, Any]) -> str:
    """The report as a page (gateway/web/templates/monthly.html) in the site's language
    (`site.locale`); the CSV for finance keeps its English columns."""
    template = page_templates(report["site"].get("locale", "en")).get_template("monthly.html")
    return template.render(r=report, fields=METER_CSV_FIELDS, num=lambda v: "" if v is None else f"{v:.1f}",
                           share=lambda v: "" if v is None else f"{100 * v:.0f} %")


def write_monthly_report(state_db: str | Path, site: SiteConfig, label: str, out_dir: str | Path,
                         routes: Sequence[PatrolRoute] = (), work_orders: WorkOrderConfig | None = None) -> dict[str, Path]:
    """Write month-<label>.csv, .html and .json into `out_dir`; returns the paths by format."""
    store = StateStore(state_db)  # a file or a postgresql:// URL
    try:
        report = build_monthly_report(store, site, label, routes=routes, work_orders=work_orders)
    finally:
        store.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {fmt: out / f"month-{report['month']}.{fmt}" for fmt in ("csv", "html", "json")}
    paths["csv"].write_text(monthly_csv(report), encoding="utf-8", newline="")
    paths["html"].write_text(monthly_html(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    return paths
