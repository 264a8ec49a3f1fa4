"""InfluxDB historian: batched, retried writes through influxdb-client's v2 write API.

Works with InfluxDB 2.x, 3.x and 1.8+ (v2 compatibility API), and with anything else
accepting /api/v2/write line protocol (VictoriaMetrics in the tests). Timestamps are
sent in nanoseconds, computed exactly from the event time (which has microseconds).

write() only queues: a background thread sends batches and retries failures with
exponential backoff. A batch that still fails after `max_retries` is dropped, counted
in stats()["points_failed"] and logged; nothing re-sends it later.

influxdb-client's WriteApi.flush() does nothing, and only close() drains the queue.
So flush() swaps in a fresh WriteApi and closes the old one, which waits until its
last batch has been sent or has given up.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from influxdb_client import InfluxDBClient, WriteOptions
from influxdb_client import Point as InfluxPoint
from influxdb_client.client.write_api import WriteApi, WriteType
from influxdb_client.domain.write_precision import WritePrecision
from reactivex.scheduler import ThreadPoolScheduler

from gateway.historian.points import Point, event_points, to_epoch_ns
from warden.config import InfluxHistorianConfig, SiteConfig
from warden.events import Event

logger = logging.getLogger(__name__)

#: Each retry waits between retry_interval * BASE^(n-1) and retry_interval * BASE^n ...
EXPONENTIAL_BASE = 2
#: ... but never longer than this (or than retry_interval, if that is larger).
MAX_RETRY_DELAY_MS = 60_000

_COUNTERS = ("points_queued", "points_written", "points_failed", "batches_written", "batches_failed", "retries")


class InfluxHistorian:
    """Batched writes to one bucket; counters say what was written, failed and retried."""

    def __init__(self, config: InfluxHistorianConfig, site: SiteConfig) -> None:
        self._config = config
        self._site = site
        self._client = InfluxDBClient(url=config.url, token=config.token, org=config.org, timeout=config.timeout_ms)
        # One sender thread for the historian's life: batches go out in order, also across flushes.
        self._sender = ThreadPoolScheduler(max_workers=1)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._api_lock = threading.Lock()  # guards swapping self._api against concurrent write()
        self._flush_lock = threading.Lock()  # one drain at a time, so flush() covers earlier flushes
        self._api: tuple[WriteApi, WriteOptions] | None = self._new_api()

    def write(self, events: Sequence[Event]) -> None:
        """Queue events for the next batch; never blocks on the network, never raises for it."""
        records = [_influx_point(p) for p in event_points(events, self._site)]
        with self._api_lock:
            if self._api is None:
                raise RuntimeError("InfluxHistorian is closed")
            self._count(points_queued=len(records))
            self._api[0].write(bucket=self._config.bucket, org=self._config.org, record=records)

    def flush(self) -> None:
        """Block until every point queued so far is written, or failed after its retries."""
        with self._flush_lock:
            with self._api_lock:
                if self._api is None:
                    return
                old, self._api = self._api, self._new_api()
            self._drain(*old)

    def close(self) -> None:
        with self._flush_lock:
            with self._api_lock:
                old, self._api = self._api, None
            if old is None:
                return
            self._drain(*old)
            self._client.close()
            self._sender.executor.shutdown(wait=False)  # only a batch the drain gave up on could still run

    def stats(self) -> dict[str, float]:
        with self._counts_lock:
            counts = {name: float(n) for name, n in self._counts.items()}
        counts["points_pending"] = counts["points_queued"] - counts["points_written"] - counts["points_failed"]
        return counts

    # ------------------------------------------------------------------ internals

    def _new_api(self) -> tuple[WriteApi, WriteOptions]:
        config = self._config
        options = WriteOptions(
            write_type=WriteType.batching,
            batch_size=config.batch_size,
            flush_interval=config.flush_interval_ms,
            retry_interval=config.retry_interval_ms,
            max_retries=config.max_retries,
            max_retry_delay=_max_retry_delay_ms(config),
            max_retry_time=_retry_budget_ms(config),  # the library's 180 s default would cut retries short
            exponential_base=EXPONENTIAL_BASE,
            write_scheduler=self._sender,
        )
        api = self._client.write_api(
            write_options=options,
            success_callback=self._on_success,
            error_callback=self._on_error,
            retry_callback=self._on_retry,
        )
        return api, options

    def _drain(self, api: WriteApi, options: WriteOptions) -> None:
        """Close `api`: its last window is cut at once and close() waits for the sender.

        The wait is bounded (a dead sender thread must not hang shutdown) by the time
        the pending batches could take if every one of them used all its retries.
        """
        pending = self.stats()["points_pending"]
        batches = max(1, math.ceil(pending / self._config.batch_size))
        options.max_close_wait = batches * _retry_budget_ms(self._config) + self._config.flush_interval_ms
        api.close()
        left = self.stats()["points_pending"]
        if left > 0:
            logger.warning(
                "influx historian stopped waiting with points unsent",
                extra={"url": self._config.url, "bucket": self._config.bucket, "points_pending": left},
            )

    def _on_success(self, batch: tuple[str, str, Any], data: bytes | str) -> None:
        self._count(points_written=_lines(data), batches_written=1)

    def _on_error(self, batch: tuple[str, str, Any], data: bytes | str, error: Exception) -> None:
        points = _lines(data)
        self._count(points_failed=points, batches_failed=1)
        logger.error(
            "influx batch dropped after retries",
            extra={"url": self._config.url, "bucket": batch[0], "points": points, "error": repr(error)},
        )

    def _on_retry(self, batch: tuple[str, str, Any], data: bytes | str, error: Exception) -> None:
        self._count(retries=1)
        logger.warning(
            "influx batch write failed, retrying",
            extra={"url": self._config.url, "bucket": batch[0], "points": _lines(data), "error": repr(error)},
        )

    def _count(self, **increments: int) -> None:
        with self._counts_lock:
            for name, n in increments.items():
                self._counts[name] += n


def _influx_point(point: Point) -> InfluxPoint:
    record = InfluxPoint(point.measurement)
    for key, tag in point.tags.items():
        record.tag(key, tag)
    for key, value in point.fields.items():
        record.field(key, _one_line(value))
    return record.time(to_epoch_ns(point.time), WritePrecision.NS)


def _one_line(value: Any) -> Any:
    """Line protocol cannot carry newlines in string fields (the client does not escape them)."""
    if isinstance(value, str):
        return value.replace("\r", " ").replace("\n", " ")
    return value


def _lines(data: bytes | str) -> int:
    """Points in a batch body: one line each (newlines in values are escaped or removed)."""
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline) + 1  # type: ignore[arg-type]


def _max_retry_delay_ms(config: InfluxHistorianConfig) -> int:
    return max(config.retry_interval_ms, MAX_RETRY_DELAY_MS)


def _retry_budget_ms(config: InfluxHistorianConfig) -> int:
    """Longest one batch can take: every attempt timing out, every backoff at its maximum."""
    delays = sum(
        min(config.retry_interval_ms * EXPONENTIAL_BASE**n, _max_retry_delay_ms(config))
        for n in range(1, config.max_retries + 1)
    )
    return delays + (config.max_retries + 1) * config.timeout_ms
