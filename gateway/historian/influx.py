"""InfluxDB historian: batched, retried writes through influxdb-client's v2 write API.

Works with InfluxDB 2.x, 3.x and 1.8+ (v2 compatibility API), and with anything else
accepting /api/v2/write line protocol (VictoriaMetrics in the tests). Timestamps are
sent in nanoseconds, computed exactly from the event time (which has microseconds).

write() only queues: a background thread sends batches and retries failures with
exponential backoff. A batch that still fails after `max_retries` is dropped, counted
in stats()["points_failed"] and logged; nothing re-sends it later.

influxdb-client's WriteApi.flush() does nothing; only close() cuts the open batch.
So flush() swaps in a fresh WriteApi, closes the old one and waits until every point
handed to it has been written or has failed (counted by the callbacks).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
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

#: What influxdb-client passes its callbacks first: (bucket, org, precision).
Batch = tuple[str, str, Any]

_COUNTERS = ("points_queued", "points_written", "points_failed", "batches_written", "batches_failed", "retries")


@dataclass
class _Generation:
    """One WriteApi and the points handed to it; flush() retires it for a fresh one."""

    options: WriteOptions
    api: WriteApi = field(init=False)
    queued: int = 0
    settled: int = 0  # points written, or failed for good
    callbacks: int = 0  # any callback at all: proof the sender thread is still working


class InfluxHistorian:
    """Batched writes to one bucket; counters say what was written, failed and retried."""

    def __init__(self, config: InfluxHistorianConfig, site: SiteConfig) -> None:
        self._config = config
        self._site = site
        self._client = InfluxDBClient(url=config.url, token=config.token, org=config.org, timeout=config.timeout_ms)
        # One sender thread for the historian's life: batches go out in order, also across flushes.
        self._sender = ThreadPoolScheduler(max_workers=1)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._changed = threading.Condition()  # guards counters; notified on every callback
        self._api_lock = threading.Lock()  # guards swapping generations against concurrent write()
        self._flush_lock = threading.Lock()  # one drain at a time, so a flush covers earlier ones
        self._current: _Generation | None = self._new_generation()

    def write(self, events: Sequence[Event]) -> None:
        """Queue events for the next batch; never blocks on the network, never raises for it."""
        lines = [_line_protocol(p) for p in event_points(events, self._site)]  # raises before counting
        with self._api_lock:
            generation = self._current
            if generation is None:
                raise RuntimeError("InfluxHistorian is closed")
            with self._changed:
                generation.queued += len(lines)
                self._counts["points_queued"] += len(lines)
            generation.api.write(self._config.bucket, self._config.org, lines, WritePrecision.NS)

    def flush(self) -> None:
        """Block until every point queued so far is written, or failed after its retries."""
        with self._flush_lock:
            with self._api_lock:
                if self._current is None:
                    return
                old, self._current = self._current, self._new_generation()
            self._drain(old)

    def close(self) -> None:
        with self._flush_lock:
            with self._api_lock:
                old, self._current = self._current, None
            if old is None:
                return
            self._drain(old)
            self._client.close()
            self._sender.executor.shutdown(wait=False)  # only a batch the drain gave up on could still run

    def stats(self) -> dict[str, float]:
        with self._changed:
            counts = {name: float(n) for name, n in self._counts.items()}
        counts["points_pending"] = counts["points_queued"] - counts["points_written"] - counts["points_failed"]
        return counts

    # ------------------------------------------------------------------ internals

    def _new_generation(self) -> _Generation:
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
            # close() waits at most this long before giving up; _drain() then keeps waiting.
            max_close_wait=_retry_budget_ms(config) + config.flush_interval_ms,
            write_scheduler=self._sender,
        )
        generation = _Generation(options)
        generation.api = self._client.write_api(
            write_options=options,
            success_callback=partial(self._on_success, generation),
            error_callback=partial(self._on_error, generation),
            retry_callback=partial(self._on_retry, generation),
        )
        return generation

    def _drain(self, generation: _Generation) -> None:
        """Send the generation's last batch and wait until all its points are settled.

        WriteApi.close() cuts the open batch at once. Waiting then goes on as long as
        the sender makes progress; it stops only if one batch is silent for longer
        than its whole retry budget (a dead sender thread must not hang shutdown).
        """
        generation.api.close()
        stall_seconds = _retry_budget_ms(self._config) / 1000
        with self._changed:
            while generation.settled < generation.queued:
                seen = generation.callbacks
                if not self._changed.wait_for(lambda: generation.callbacks != seen, timeout=stall_seconds):
                    logger.warning(
                        "influx historian stopped waiting for a stalled sender",
                        extra={**self._where(), "points_pending": generation.queued - generation.settled},
                    )
                    return

    def _on_success(self, generation: _Generation, batch: Batch, data: bytes | str) -> None:
        points = _lines(data)
        self._count(generation, settled=points, points_written=points, batches_written=1)

    def _on_error(self, generation: _Generation, batch: Batch, data: bytes | str, error: Exception) -> None:
        points = _lines(data)
        self._count(generation, settled=points, points_failed=points, batches_failed=1)
        logger.error(
            "influx batch dropped: write failed and is not retried (again)",
            extra={**self._where(), "points": points, "error": repr(error)},
        )

    def _on_retry(self, generation: _Generation, batch: Batch, data: bytes | str, error: Exception) -> None:
        self._count(generation, retries=1)
        logger.warning(
            "influx batch write failed, retrying",
            extra={**self._where(), "points": _lines(data), "error": repr(error)},
        )

    def _count(self, generation: _Generation, settled: int = 0, **increments: int) -> None:
        with self._changed:
            generation.settled += settled
            generation.callbacks += 1
            for name, n in increments.items():
                self._counts[name] += n
            self._changed.notify_all()

    def _where(self) -> dict[str, str]:
        return {"url": self._config.url, "bucket": self._config.bucket}


def _line_protocol(point: Point) -> str:
    record = InfluxPoint(point.measurement)
    for key, tag in point.tags.items():
        record.tag(key, tag)
    for key, value in point.fields.items():
        record.field(key, _one_line(value))
    return str(record.time(to_epoch_ns(point.time), WritePrecision.NS).to_line_protocol())


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
