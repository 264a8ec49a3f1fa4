"""The gateway's scheduled reports, wired: how a daily and a monthly report are made and
archived, and which sinks of `alerts.sinks` send them (gateway/report_schedule.py runs it).
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any, Callable

from gateway import monthly, report, statistics, workorders
from gateway.config import GatewayConfig, SmtpSinkConfig, WebhookSinkConfig
from gateway.historian.points import SeriesUnavailable
from gateway.notify import SmtpSink, WebhookSink
from gateway.report_schedule import Made, ReportScheduler, connections, report_mail, webhook_body
from gateway.store import StateStore
from warden.config import SiteConfig
from warden.i18n import N_, gettext_for

log = logging.getLogger(__name__)


def report_history(config: GatewayConfig, historian: Any, site: SiteConfig) -> Any:
    """What the daily report reads raw points from: the SQLite file, or a historian that
    answers series queries; None (alerts and statistics only) for an InfluxDB-compatible
    server without Flux, found by asking it for one point."""
    path = getattr(config.historian, "path", None)
    if path is not None:
        return report.SqliteHistory(path, site.id)
    history = report.open_history(historian, site)
    if isinstance(history, report.SeriesHistory) and history.devices:
        try:
            historian.series(history.devices[0], None, None, None, 1)
        except SeriesUnavailable as exc:
            log.warning("the report's raw-point sections are left out: the historian answers no series query",
                        extra={"reason": str(exc)})
            return None
    return history


def daily_report(store: StateStore, history: Any, site: SiteConfig, config: GatewayConfig, day: date) -> dict[str, Any]:
    """The morning report of `day` with the day's statistics per device (energy from
    registers, after-hours energy, water, on-minutes) and repair-request counts when the
    work-order tables exist."""
    data = report.build_morning_report(store, history, site, day, config.rules, day_start=config.report.day_start)
    period = report.report_period(site, day, config.report.day_start)
    totals = store.read(lambda db: statistics.device_totals(statistics.StatisticsReader(db, site.id), site, period.start, period.end))
    silent = store.read(
        lambda db: statistics.silent_meters(statistics.StatisticsReader(db, site.id), site, period.start, period.end))
    data["statistics"] = {
        "silent_meters": silent,
        "energy_kwh": sum(t.energy_kwh for t in totals.values()),
        "after_hours_kwh": sum(t.after_hours_kwh for t in totals.values()),
        "water_litres": sum(t.water_litres for t in totals.values()),
        "devices": [vars(t) for t in sorted(totals.values(), key=lambda t: t.device)],
    }
    orders = store.read(lambda db: workorders.day_counts(db, period.start, period.end, site.id))
    if orders is not None:
        data["repair_requests"] = orders
    return data


_STATISTICS_HTML = """
<section id="statistics"><h2>{{ t.title }}</h2>
<p>{{ t.summary }}</p>
{% if t.silent %}<p class="missing">{{ t.silent }}</p>{% endif %}
{% if top %}<table><tr>{% for h in t.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for d in top %}<tr><td>{{ d.device }}</td><td>{{ "%.2f"|format(d.energy_kwh) }}</td>
<td>{{ "%.2f"|format(d.after_hours_kwh) }}</td>
<td>{{ "%.0f"|format(d.water_litres) }}</td><td>{{ "%.0f"|format(d.on_minutes) }}</td><td>{{ d.readings }}</td></tr>{% endfor %}
</table>{% endif %}
{% if t.orders %}<h2>{{ t.orders_title }}</h2><p>{{ t.orders }}</p>{% endif %}
</section>
"""
_HEADERS = (N_("device"), N_("kWh"), N_("after hours kWh"), N_("water L"), N_("on min"), N_("readings"))


def _statistics_texts(stats: dict[str, Any], orders: dict[str, int] | None, locale: str) -> dict[str, Any]:
    """The statistics section's words in the report's language."""
    _ = gettext_for(locale)
    summary = _("Energy from registers {energy} kWh, of it after hours {after} kWh; water {water} L.").format(
        energy=f"{stats['energy_kwh']:.1f}", after=f"{stats['after_hours_kwh']:.1f}", water=f"{stats['water_litres']:.0f}")
    return {
        "title": _("Meters (hourly statistics)"), "summary": summary, "headers": [_(h) for h in _HEADERS],
        "orders_title": _("Repair requests"),
        "orders": _("opened {opened}, closed {closed}, overdue at its end {overdue}").format(**orders) if orders else None,
        "silent": _("No readings from {meters}: their data is missing, not 0.").format(
            meters=", ".join(stats["silent_meters"])) if stats.get("silent_meters") else None,
    }  # fmt: skip


def with_statistics(html: str, data: dict[str, Any]) -> str:
    """The morning report's page with the statistics section (the 20 devices with the
    most after-hours energy) and repair-request counts, before the end of its body."""
    from jinja2 import Environment

    stats = data.get("statistics")
    if not stats:
        return html
    top = sorted(stats["devices"], key=lambda d: (-d["after_hours_kwh"], -d["energy_kwh"], d["device"]))[:20]
    texts = _statistics_texts(stats, data.get("repair_requests"), data.get("site", {}).get("locale", "en"))
    section = Environment(autoescape=True).from_string(_STATISTICS_HTML).render(
        t=texts, top=[d for d in top if d["energy_kwh"] or d["water_litres"] or d["on_minutes"]])
    end = html.rfind("</body>")
    return html[:end] + section + html[end:] if end >= 0 else html + section


def build_scheduler(config: GatewayConfig, site: SiteConfig, store: StateStore, history: Callable[[], Any],
                    scoped: bool = False) -> ReportScheduler:
    """`scoped`: one of several sites' schedulers (issue 21), archiving under a folder of the site's id."""
    send = config.report.send
    root = Path(send.archive_dir) / site.id if scoped else Path(send.archive_dir)

    def make(kind: str, label: str) -> Made:
        folder = root / kind / label
        if kind == "daily":
            data = daily_report(store, history(), site, config, date.fromisoformat(label))
            files = report.write_report_files(data, folder)
            html = with_statistics(files.html.read_text(encoding="utf-8"), data)
            files.html.write_text(html, encoding="utf-8")
            return Made(kind, label, folder, html, data["summary"])
        data = monthly.build_monthly_report(store, site, label, routes=config.rules.patrol.routes, work_orders=config.work_orders)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"month-{label}.csv").write_text(monthly.monthly_csv(data), encoding="utf-8", newline="")
        html = monthly.monthly_html(data)
        (folder / f"month-{label}.html").write_text(html, encoding="utf-8")
        (folder / f"month-{label}.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        return Made(kind, label, folder, html, {"site_totals": data["site_totals"], "groups": data["groups"]})

    senders: dict[str, Callable[[Made, str], None]] = {}
    for name in send.sinks:
        sink = config.alerts.sinks.get(name)
        if isinstance(sink, WebhookSinkConfig):
            hook = WebhookSink(name, sink)
            senders[name] = lambda made, key, hook=hook: hook.post(webhook_body(made, site.id, key), key)  # type: ignore[misc]
        elif isinstance(sink, SmtpSinkConfig):
            mailer = SmtpSink(name, sink)
            senders[name] = lambda made, key, mailer=mailer, c=sink: mailer.deliver(  # type: ignore[misc]
                report_mail(made, site.id, key, c.sender, c.to, c.subject_prefix))
        else:
            log.error("report.send.sinks names no sink of alerts.sinks; reports are archived only", extra={"sink": name})
    return ReportScheduler(connections(config.state_db), send, site.id, make, senders, scoped)
