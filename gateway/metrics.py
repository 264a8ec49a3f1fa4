"""The gateway's metrics, in one Prometheus registry per gateway (served at /metrics).

`counts()` flattens the counters into a plain dict (e.g. {"stored_reading": 12,
"rejected_not_json": 1}) for the health endpoint, the demo summary and tests that wait
for progress.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

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


class GatewayMetrics:
    def __init__(self, queue_depth: Callable[[], int], historian_stats: Callable[[], dict[str, float]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(f"{_PREFIX}messages", "MQTT messages received", registry=r)
        self.rejected = Counter(f"{_PREFIX}rejected", "Messages refused, by reason", ["reason"], registry=r)
        self.dead_letters_pruned = Counter(f"{_PREFIX}dead_letters_pruned", "Oldest dead letters dropped to stay in bounds", registry=r)
        self.duplicates = Counter(f"{_PREFIX}duplicates", "Events dropped as already seen", registry=r)
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
