"""The morning report: one page per site and night, readable in two minutes.

What a facilities manager asks at 08:00: what was wasted (energy after hours, water),
were the rounds walked, what happened at the doors, which devices went quiet, and what is
still open. Built from the alert store (each rule's `details`, docs/rules.md) and the
historian (night flow per meter, patrol taps), so it can be written for any past night.

    write_morning_report(state_db, historian, site, night, out_dir, rules=...)

writes `report.html` (chart embedded as SVG), `report.json`, `report.csv`, `energy.svg`
and the night's raw alerts (`alerts.json`, `alerts.csv`). Formats: docs/api.md.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from gateway.store import Alert, StateStore
from rules.schedule import local_instant
from warden.config import PatrolConfig, RulesConfig, SiteConfig
from warden.events import PatrolTap, TapSource

NIGHT_START = time(18, 0)
NIGHT_END = time(8, 0)

ALERT_CSV_FIELDS = ["id", "rule", "subject", "state", "severity", "opened_at", "resolved_at", "message"]
REPORT_CSV_FIELDS = ["section", "building", "room", "subject", "metric", "value", "unit", "state", "since", "note"]

_LEAK_LITRES = {"water_night_flow": "estimated_litres_lost", "water_continuous_flow": "litres", "water_burst": "litres"}
_DOOR_RULES = {"door_forced": "forced", "door_held_open": "held open", "door_after_hours": "after hours", "door_denied": "denied cards"}
_SILENT_RULES = ("deadman", "deadman_agent")


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryPoint:
    time: datetime
    device: str
    measurement: str
    tags: dict[str, Any]
    fields: dict[str, Any]


class History(Protocol):
    """The few historian queries the report needs."""

    def points(self, measurement: str, since: datetime, until: datetime) -> list[HistoryPoint]: ...


class SqliteHistory:
    """Reads the SQLite historian's documented `points` table (docs/storage.md), read-only,
    so a report can run beside a live gateway."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def points(self, measurement: str, since: datetime, until: datetime) -> list[HistoryPoint]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute(
                "SELECT time_ns, device, measurement, tags, fields FROM points"
                " WHERE measurement = ? AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id",
                (measurement, _ns(since), _ns(until)),
            ).fetchall()
        finally:
            db.close()
        return [HistoryPoint(_from_ns(r[0]), r[1], r[2], json.loads(r[3]), json.loads(r[4])) for r in rows]


class SeriesHistory:
    """Any historian with `series(device, measurement, since, until, limit)`, asked device
    by device (the site's devices): slower, and blind to devices the site does not list."""

    def __init__(self, historian: Any, devices: Iterable[str]) -> None:
        self.historian, self.devices = historian, sorted(set(devices))

    def points(self, measurement: str, since: datetime, until: datetime) -> list[HistoryPoint]:
        found = [
            HistoryPoint(p.time, device, p.measurement, dict(p.tags), dict(p.fields))
            for device in self.devices
            for p in self.historian.series(device, measurement, since, until, 100_000)
        ]
        return sorted(found, key=lambda p: p.time)


def open_history(historian: Any, site: SiteConfig) -> History | None:
    """A path is a SQLite historian file; an object needs `series()`; else no history."""
    if historian is None:
        return None
    if isinstance(historian, (str, Path)):
        return SqliteHistory(historian)
    if hasattr(historian, "points"):
        return historian  # type: ignore[no-any-return]
    if hasattr(historian, "series"):
        return SeriesHistory(historian, (d for b in site.buildings for r in b.rooms for d in r.devices))
    return None


def _ns(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1000


def _from_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)


# --------------------------------------------------------------------------- the night


def night_bounds(site: SiteConfig, night: date) -> tuple[datetime, datetime]:
    """18:00 local on `night` to 08:00 local the next morning, in UTC."""
    return local_instant(site.zone, night, NIGHT_START), local_instant(site.zone, night + timedelta(days=1), NIGHT_END)


def night_alerts(store: StateStore, site: SiteConfig, night: date) -> list[Alert]:
    """Alerts of the site open at any moment of the night, oldest first."""
    start, end = (t.isoformat() for t in night_bounds(site, night))
    alerts = store.alerts(site=site.id, limit=1_000_000)
    # Stored times are UTC ISO strings: they compare correctly with UTC bounds.
    return sorted((a for a in alerts if a.opened_at < end and (a.resolved_at or "9999") >= start), key=lambda a: (a.opened_at, a.id))


# --------------------------------------------------------------------------- building


def build_morning_report(
    store: StateStore,
    history: History | None,
    site: SiteConfig,
    night: date,
    rules: RulesConfig | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The report as JSON-ready data; every renderer works from this."""
    rules = rules or RulesConfig()
    start, end = night_bounds(site, night)
    alerts = night_alerts(store, site, night)
    energy = _energy(alerts, site)
    water = _water(alerts, history, site, night, rules)
    patrols = _patrols(alerts, history, site, start, end, rules)
    doors = _doors(alerts, site)
    silent = _silent(alerts, site)
    still_open = _still_open(alerts, site, end)
    return {
        "site": {"id": site.id, "name": site.name or site.id, "timezone": site.timezone},
        "night": night.isoformat(),
        "window": {"start": start.isoformat(), "end": end.isoformat(), "local": f"{NIGHT_START:%H:%M}-{NIGHT_END:%H:%M}"},
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
            "doors_forced": sum(1 for d in doors if d["rule"] == "door_forced"),
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
        "alerts": [_alert_json(a) for a in alerts],
    }


def _energy(alerts: Sequence[Alert], site: SiteConfig) -> dict[str, Any]:
    """Wasted energy per AC episode (the rule's totals), summed by building and room."""
    items = []
    for a in alerts:
        if a.rule != "ac_after_hours":
            continue
        d = a.details
        items.append({
            "alert_id": a.id,
            "building": str(d.get("building", "")),
            "room": str(d.get("room", a.subject)),
            "devices": str(d.get("device", "")),
            "kwh": round(float(d.get("wasted_kwh", 0.0)), 3),
            "cost": round(float(d.get("cost", 0.0)), 2),
            "since": str(d.get("since", a.opened_at)),
            "minutes": round(float(d.get("minutes", 0.0)), 1),
            "state": a.state.value,
            "ended": a.resolved_at,
            "reason": str(d.get("reason", "")),
        })
    by_room: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: {"kwh": 0.0, "cost": 0.0})
    for item in items:
        by_room[(item["building"], item["room"])]["kwh"] += item["kwh"]
        by_room[(item["building"], item["room"])]["cost"] += item["cost"]
    rooms = [{"building": b, "room": r, "kwh": round(v["kwh"], 3), "cost": round(v["cost"], 2)} for (b, r), v in sorted(by_room.items())]
    by_building: dict[str, dict[str, float]] = defaultdict(lambda: {"kwh": 0.0, "cost": 0.0})
    for room in rooms:
        by_building[room["building"]]["kwh"] += room["kwh"]
        by_building[room["building"]]["cost"] += room["cost"]
    return {
        "currency": next((str(a.details["currency"]) for a in alerts if "currency" in a.details), site.tariff.currency),
        "price_per_kwh": site.tariff.energy_per_kwh,
        "total_kwh": round(sum(i["kwh"] for i in items), 3),
        "total_cost": round(sum(i["cost"] for i in items), 2),
        "by_building": [{"building": b, "kwh": round(v["kwh"], 3), "cost": round(v["cost"], 2)} for b, v in sorted(by_building.items())],
        "by_room": rooms,
        "episodes": items,
    }


def _water(alerts: Sequence[Alert], history: History | None, site: SiteConfig, night: date, rules: RulesConfig) -> dict[str, Any]:
    """Suspected leaks from the water alerts; night flow per meter from the historian.
    Litres lost per meter is the largest of its alerts' estimates (a night-flow and a
    continuous-flow alert on one meter describe the same water)."""
    leaks = []
    for a in alerts:
        if not a.rule.startswith("water_"):
            continue
        key = _LEAK_LITRES.get(a.rule)
        leaks.append({
            "alert_id": a.id,
            "rule": a.rule,
            "meter": a.subject,
            "building": str(a.details.get("building", "")),
            "room": str(a.details.get("room", "")),
            "litres_lost": round(float(a.details.get(key, 0.0)), 1) if key else None,
            "min_flow_l_per_min": a.details.get("min_flow_l_per_min"),
            "state": a.state.value,
            "since": str(a.details.get("since", a.opened_at)),
            "message": a.message,
        })
    lost: dict[str, float] = {}
    for leak in leaks:
        lost[leak["meter"]] = max(lost.get(leak["meter"], 0.0), leak["litres_lost"] or 0.0)
    window = _quiet_window(site, night, rules)
    return {
        "quiet_window": {"start": window[0].isoformat(), "end": window[1].isoformat(),
                         "local": f"{rules.water.night_start:%H:%M}-{rules.water.night_end:%H:%M}"},
        "meters": _night_flow(history, site, night, window, rules) if history else None,
        "leaks": leaks,
        "litres_lost_by_meter": {m: round(v, 1) for m, v in sorted(lost.items())},
        "total_litres_lost": round(sum(lost.values()), 1),
    }


def _quiet_window(site: SiteConfig, night: date, rules: RulesConfig) -> tuple[datetime, datetime]:
    """The water rule's quiet window that falls in this night (02:00-05:00 by default)."""
    w, morning = rules.water, night + timedelta(days=1)
    if w.night_start > w.night_end:  # past midnight, e.g. 23:00-05:00
        days = (night, morning)
    else:
        days = (night, night) if w.night_start >= NIGHT_START else (morning, morning)
    return local_instant(site.zone, days[0], w.night_start), local_instant(site.zone, days[1], w.night_end)


def _night_flow(history: History, site: SiteConfig, night: date, window: tuple[datetime, datetime], rules: RulesConfig) -> list[dict[str, Any]]:
    """Litres per meter over the night, and the minimum flow in the quiet window."""
    start, end = night_bounds(site, night)
    max_gap = timedelta(minutes=rules.water.max_gap_minutes)
    by_meter: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for p in history.points("flow", start, end):
        by_meter[p.device].append((p.time, _l_per_min(float(p.fields.get("value", 0.0)), str(p.tags.get("unit", "L/min")))))
    meters = []
    for device, readings in sorted(by_meter.items()):
        litres = quiet_litres = 0.0
        quiet_min: float | None = None
        for (t0, flow), (t1, _) in zip(readings, readings[1:]):
            if t1 - t0 > max_gap:
                continue  # an unknown interval, as the water rule treats it
            used = flow * (t1 - t0).total_seconds() / 60
            litres += used
            if t0 >= window[0] and t1 <= window[1]:
                quiet_litres += used
                quiet_min = flow if quiet_min is None else min(quiet_min, flow)
        place = site.locate(device)
        meters.append({
            "meter": device,
            "building": place.building if place else "",
            "room": place.room if place else "",
            "night_litres": round(litres, 1),
            "quiet_litres": round(quiet_litres, 1),
            "quiet_min_flow_l_per_min": None if quiet_min is None else round(quiet_min, 3),
            "readings": len(readings),
        })
    return meters


_FLOW_FACTORS = {"l/min": 1.0, "lpm": 1.0, "l/s": 60.0, "l/h": 1 / 60, "m3/h": 1000 / 60}


def _l_per_min(value: float, unit: str) -> float:
    return value * _FLOW_FACTORS.get(unit.lower(), 1.0)


def _patrols(alerts: Sequence[Alert], history: History | None, site: SiteConfig, start: datetime, end: datetime, rules: RulesConfig) -> dict[str, Any]:
    """Rounds judged again from the night's taps when the routes are known (the same rule
    the gateway runs, so the same verdicts); otherwise only what the alerts say."""
    if rules.patrol.routes and history is not None:
        rounds = _judged_rounds(history, site, rules.patrol, rules.allowed_lateness_seconds, start, end)
        source = "taps"
    else:
        rounds = _rounds_from_alerts(alerts)
        source = "alerts"
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
        "silences": [_alert_brief(a) for a in alerts if a.rule == "patrol_silence"],
    }


def _judged_rounds(history: History, site: SiteConfig, config: PatrolConfig, lateness_s: float, start: datetime, end: datetime) -> list[dict[str, Any]]:
    from rules.patrol import PatrolRule  # the rule layer is pure: judging again is cheap

    rule = PatrolRule(site, config, timedelta(seconds=lateness_s))
    rule.on_tick(start - timedelta(hours=1))  # rounds opening after this are all followed
    since = start - timedelta(hours=2)
    taps = [_tap(p, site) for p in history.points("patrol_tap", since, end + timedelta(hours=1))]
    for tap in sorted(taps, key=lambda t: t.event_time):
        rule.on_event(tap)
    rule.on_tick(end + timedelta(hours=1))
    guards = {(t.tag, t.event_time.isoformat()): t.guard for t in taps}
    routes = {r.id: r for r in config.routes}
    rounds = []
    for rnd in rule.rounds_state():
        if not start <= datetime.fromisoformat(rnd["starts_at"]) < end:
            continue
        checkpoints = rnd["checkpoints"]
        seen = [guards.get((c["tag"], c["tapped_at"])) for c in checkpoints if c["tapped_at"]]
        guard = routes[rnd["route"]].guard or next((g for g, _ in Counter(g for g in seen if g).most_common(1)), None)
        missed = [c["tag"] for c in checkpoints if c["state"] == "missed"]
        late = [c["tag"] for c in checkpoints if c["state"] == "late"]
        rounds.append({
            "round": rnd["round"], "route": rnd["route"], "start": rnd["start"], "date": rnd["date"],
            "starts_at": rnd["starts_at"], "guard": guard, "started": rnd["started"],
            "done": bool(rnd["started"]) and not missed and all(c["state"] != "pending" for c in checkpoints),
            "missed": len(missed), "late": len(late), "missed_tags": missed, "late_tags": late,
            "checkpoints": checkpoints,
        })
    return rounds


def _tap(point: HistoryPoint, site: SiteConfig) -> PatrolTap:
    return PatrolTap(
        id=f"report-{_ns(point.time)}-{point.device}"[:128],
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
        if a.rule not in ("patrol_round", "patrol_checkpoint"):
            continue
        route, key = str(a.details.get("route", "")), str(a.details.get("round", ""))
        rnd = rounds.setdefault(f"{route}:{key}", {
            "round": f"{route}:{key}", "route": route, "start": key[-5:], "date": key[:10], "starts_at": None,
            "guard": a.details.get("guard"), "started": True, "done": False, "missed": 0, "late": 0,
            "missed_tags": [], "late_tags": [], "checkpoints": [],
        })
        state = str(a.details.get("state", ""))
        if a.rule == "patrol_round" and "missed" in a.details and a.state != "resolved":
            rnd["started"] = False
            rnd["missed"] = max(rnd["missed"], int(float(a.details["missed"])))
        elif a.rule == "patrol_checkpoint" and a.details.get("note") is None and state in ("missed", "late"):
            rnd[state] += 1
            rnd[f"{state}_tags"].append(str(a.details.get("tag", "")))
    return list(rounds.values())


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
        out.append({
            **_alert_brief(a), "device": a.subject, "agent": a.rule == "deadman_agent",
            "last_event": a.details.get("last_event"), "building": place.building if place else "",
            "room": place.room if place else "",
        })
    return out


def _still_open(alerts: Sequence[Alert], site: SiteConfig, end: datetime) -> list[dict[str, Any]]:
    """Alerts not resolved when the night ended, oldest first, with their age then."""
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


def energy_chart_svg(report: dict[str, Any]) -> str | None:
    """Horizontal bars of kWh wasted per room; None when nothing was wasted."""
    rooms = [r for r in report["energy"]["by_room"] if r["kwh"] > 0]
    if not rooms:
        return None
    from matplotlib import rcParams
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in API threads

    rcParams["svg.hashsalt"] = "warden"  # stable ids: the same report gives the same file
    labels = [f"{r['building']} / {r['room']}" if r["building"] else r["room"] for r in rooms]
    figure = Figure(figsize=(6.4, 0.5 + 0.45 * len(rooms)), layout="constrained")
    axes = figure.add_subplot()
    bars = axes.barh(labels, [r["kwh"] for r in rooms], color="#d9822b")
    currency = report["energy"]["currency"]
    axes.bar_label(bars, labels=[f"{r['kwh']:.2f} kWh, {r['cost']:.2f} {currency}" for r in rooms], padding=3, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("kWh wasted after hours")
    axes.margins(x=0.35)
    axes.spines[["top", "right"]].set_visible(False)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def render_html(report: dict[str, Any], chart_svg: str | None = None) -> str:
    zone = ZoneInfo(report["site"]["timezone"])
    local = lambda value, fmt="%H:%M": _local(value, zone, fmt)  # noqa: E731
    return _templates().get_template("report.html").render(r=report, chart_svg=chart_svg, local=local)


@lru_cache(maxsize=1)
def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("gateway.web", "templates"), autoescape=select_autoescape(["html"]))


def _local(value: str | None, zone: Any, fmt: str) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(zone).strftime(fmt)


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report flattened to one metric per row, for a spreadsheet."""
    rows: list[dict[str, Any]] = []

    def add(section: str, metric: str, value: Any, unit: str = "", **rest: Any) -> None:
        rows.append({"section": section, "metric": metric, "value": "" if value is None else value, "unit": unit, **rest})

    e = report["energy"]
    for item in e["episodes"]:
        where = {"building": item["building"], "room": item["room"], "subject": item["devices"], "state": item["state"], "since": item["since"]}
        add("energy", "wasted_kwh", item["kwh"], "kWh", **where)
        add("energy", "cost", item["cost"], e["currency"], **where)
    for leak in report["water"]["leaks"]:
        add("water", leak["rule"], leak["litres_lost"], "L", building=leak["building"], room=leak["room"],
            subject=leak["meter"], state=leak["state"], since=leak["since"], note=leak["message"])
    for meter in report["water"]["meters"] or []:
        where = {"building": meter["building"], "room": meter["room"], "subject": meter["meter"]}
        add("water", "night_litres", meter["night_litres"], "L", **where)
        add("water", "quiet_min_flow", meter["quiet_min_flow_l_per_min"], "L/min", **where)
    for g in report["patrols"]["by_route_and_guard"]:
        for metric in ("rounds", "done", "not_started", "missed_checkpoints", "late_checkpoints"):
            add("patrols", metric, g[metric], "", subject=f"{g['route']}/{g['guard'] or '-'}")
    for rnd in report["patrols"]["rounds"]:
        for tag in rnd["missed_tags"]:
            add("patrols", "missed_checkpoint", tag, "", subject=rnd["round"], note=rnd["guard"] or "")
        for tag in rnd["late_tags"]:
            add("patrols", "late_checkpoint", tag, "", subject=rnd["round"], note=rnd["guard"] or "")
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
    writer.writeheader()
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
    night: date | str,
    out_dir: str | Path,
    *,
    rules: RulesConfig | None = None,
) -> ReportFiles:
    """Write the morning report of `site` for the night starting on `night` (18:00-08:00
    local) into `out_dir`. `historian`: the SQLite historian's file, a historian object with
    `series()`, or None (alerts only). `rules`: the gateway's rule config, for the patrol
    routes and the water quiet window (defaults otherwise)."""
    day = night if isinstance(night, date) else date.fromisoformat(night)
    store = StateStore(Path(state_db))
    try:
        report = build_morning_report(store, open_history(historian, site), site, day, rules)
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
