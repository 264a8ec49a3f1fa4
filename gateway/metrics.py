"""The gateway's metrics, in one Prometheus registry per gateway (served at /metrics).
Gauges of state (open alerts, silent devices, agents online, overdue repair requests) are
read from their sources at scrape time; docs/deployment.md lists them.

`counts()` flattens the counters into a plain dict (e.g. {"stored_reading": 12,
"rejected_not_json": 1}) for the health endpoint, the demo summary and tests that wait
for progress.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from rules import deadman

_PREFIX = "warden_gateway_"


class _HistorianStats:
    """Exports whatever counters the historian in use keeps, read at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, float]]) -> None:
        self._stats = stats

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(f"{_PREFIX}historian", "Historian counters and queue depths", labels=["stat"])
        for stat, value in sorted(self._stats().items()):
            family.add_metric([stat], float(value))
        return [family]


#: An alert not yet resolved, as the state gauges need it: (severity, rule, subject).
OpenAlert = tuple[str, str, str]


class _StateGauges:
    """Open alerts by severity and rule, silent devices and agents online, read from the
    store and the agents' availability at scrape time: right after a restart too, and
    never drifting from the alerts the API shows."""

    def __init__(self, open_alerts: Callable[[], Iterable[OpenAlert]], agents: Callable[[], dict[str, str]]) -> None:
        self._open_alerts = open_alerts
        self._agents = agents

    def collect(self) -> list[GaugeMetricFamily]:
        alerts = list(self._open_alerts())
        by_kind = GaugeMetricFamily(f"{_PREFIX}open_alerts", "Alerts open or acknowledged, by severity and rule", labels=["severity", "rule"])
        for (severity, rule), count in sorted(Tally((severity, rule) for severity, rule, _ in alerts).items()):
            by_kind.add_metric([severity, rule], count)
        silent = sum(1 for _, rule, _ in alerts if rule == deadman.DEVICE)
        quiet_agents = {subject for _, rule, subject in alerts if rule == deadman.AGENT}
        agents = self._agents()  # "site/agent" -> latest availability: online, heartbeat, offline
        online = sum(1 for key, state in agents.items() if state != "offline" and key.split("/", 1)[-1] not in quiet_agents)
        return [
            by_kind,
            GaugeMetricFamily(f"{_PREFIX}silent_devices", "Devices with an unresolved no-data (deadman) alert", value=silent),
            GaugeMetricFamily(f"{_PREFIX}agents_online", "Agents whose latest availability is not offline and that are not silent", value=online),
            GaugeMetricFamily(f"{_PREFIX}agents_known", "Agents the gateway heard since it started", value=len(agents)),
        ]


#: An alert not yet resolved, as the per-site gauges need it: (site, severity, rule).
SiteAlert = tuple[str, str, str]


class _SiteGauges:
    """Issue 21, a gateway of several sites: open alerts by site and severity, and silent
    devices by site, at scrape time. Every served site is exported, 0 included."""

    def __init__(self, sites: Iterable[str], open_alerts: Callable[[], Iterable[SiteAlert]]) -> None:
        self._sites = list(sites)
        self._open_alerts = open_alerts

    def collect(self) -> list[GaugeMetricFamily]:
        alerts = list(self._open_alerts())
        by_site = GaugeMetricFamily(f"{_PREFIX}site_open_alerts", "Alerts open or acknowledged, by site and severity",
                                    labels=["site", "severity"])
        silent = GaugeMetricFamily(f"{_PREFIX}site_silent_devices", "Devices with an unresolved no-data alert, by site",
                                   labels=["site"])
        counts = Tally((site, severity) for site, severity, _ in alerts)
        for site in self._sites:
            for severity in ("info", "warning", "critical"):
                by_site.add_metric([site, severity], counts[(site, severity)])
            silent.add_metric([site], sum(1 for s, _, rule in alerts if s == site and rule == deadman.DEVICE))
        return [by_site, silent]


class _OverdueWorkOrders:
    """Repair requests past the deadline they run against (not taken by `take_by`, not done by
    `resolve_by`), by category, read at scrape time. Every configured category is exported,
    0 included, so a dashboard's sum and alert rules see the series before the first is late."""

    def __init__(self, overdue: Callable[[], Iterable[str]], categories: Iterable[str]) -> None:
        self._overdue = overdue
        self._categories = sorted(categories)

    def collect(self) -> list[GaugeMetricFamily]:
        counts = Tally(self._overdue())
        family = GaugeMetricFamily(f"{_PREFIX}overdue_work_orders", "Open repair requests past their take or resolve deadline, by category",
                                   labels=["category"])
        for category in sorted(set(self._categories) | set(counts)):
            family.add_metric([category], counts.get(category, 0))
        return [family]


class GatewayMetrics:
    def __init__(self, queue_depth: Callable[[], int], historian_stats: Callable[[], dict[str, float]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(f"{_PREFIX}messages", "MQTT messages received", registry=r)
        self.rejected = Counter(f"{_PREFIX}rejected", "Messages refused, by reason", ["reason"], registry=r)
        self.dead_letters_pruned = Counter(f"{_PREFIX}dead_letters_pruned", "Oldest dead letters dropped to stay in bounds", registry=r)
        self.duplicates = Counter(f"{_PREFIX}duplicates", "Events dropped as already seen", registry=r)
        self.clock_ahead = Counter(f"{_PREFIX}clock_ahead", "Events kept at their agent's receive time: the device's "
                                   "clock ran ahead (warden.events.clamp_device_clock), by kind", ["kind"], registry=r)
        self.received = Counter(f"{_PREFIX}events_received", "Valid events received, by kind", ["kind"], registry=r)
        self.stored = Counter(f"{_PREFIX}events_stored", "Events stored for the first time, by kind", ["kind"], registry=r)
        self.alerts = Counter(f"{_PREFIX}alert_changes", "Alerts opened, updated, resolved, by rule", ["rule", "change"], registry=r)
        self.batch_retries = Counter(f"{_PREFIX}batch_retries", "Batches retried after a storage failure", registry=r)
        self.rule_errors = Counter(f"{_PREFIX}rule_errors", "Rule evaluations that raised", registry=r)
        self.historian_seconds = Histogram(f"{_PREFIX}historian_write_seconds", "Time to hand a batch to the historian", registry=r)
        self.rules_seconds = Histogram(f"{_PREFIX}rule_evaluation_seconds", "Time to run the rules on a batch", registry=r)
        self.commit_seconds = Histogram(f"{_PREFIX}commit_seconds", "Time to commit a batch's state", registry=r)
        Gauge(f"{_PREFIX}queue_depth", "Messages received, not yet processed", registry=r).set_function(queue_depth)
        r.register(_HistorianStats(historian_stats))

    def watch_state(self, open_alerts: Callable[[], Iterable[OpenAlert]], agents: Callable[[], dict[str, str]]) -> None:
        """Export the state gauges (open alerts, silent devices, agents online) from these sources."""
        self.registry.register(_StateGauges(open_alerts, agents))

    def watch_work_orders(self, overdue: Callable[[], Iterable[str]], categories: Iterable[str] = ()) -> None:
        """Export the overdue repair requests gauge: `overdue()` gives the category of each overdue order."""
        self.registry.register(_OverdueWorkOrders(overdue, categories))

    def watch_sites(self, sites: Iterable[str], open_alerts: Callable[[], Iterable[SiteAlert]]) -> None:
        """Export the per-site gauges (a gateway of several sites); a second call does nothing."""
        if getattr(self, "_sites_watched", False):
            return
        self._sites_watched = True
        self.registry.register(_SiteGauges(sites, open_alerts))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def counts(self) -> dict[str, float]:
        """Counter values by flat key: the family ("rejected", a total over its labels) and
        each labelled series ("rejected_not_json", "events_stored_reading")."""
        flat: dict[str, float] = {}
        for family in self.registry.collect():
            name = family.name.removeprefix(_PREFIX)
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = "_".join([name, *sample.labels.values()])
                flat[key] = flat.get(key, 0.0) + sample.value
                if sample.labels:
                    flat[name] = flat.get(name, 0.0) + sample.value
        return flat
