"""InfluxDB historian: a durable on-disk spool in front of InfluxDB's v2 write API.

Works with InfluxDB 2.x, 3.x and 1.8+ (v2 compatibility API), and with anything else
accepting /api/v2/write line protocol (VictoriaMetrics in the tests). Timestamps are
sent in nanoseconds, computed exactly from the event time (which has microseconds).

write() turns events into line protocol and commits the lines to a SQLite spool (WAL,
synchronous=FULL) before it returns, so a point the gateway acknowledged to the broker
is on disk. One forwarder thread sends the oldest spooled points in batches (through
influxdb-client's synchronous write API) and deletes them only after the server
accepted them. Failures are retried without limit, with exponential backoff and jitter;
only points the server refuses for good (HTTP 4xx about the data) are moved to the
`rejected_points` table, after the batch is split to find them. When the spool holds
`spool_max_points`, write() raises SpoolFull and the gateway stops acknowledging.

Why not influxdb-client's batching WriteApi: it keeps batches in memory and drops one
when its retries run out, and its callbacks get a batch's body, not which spooled rows
it held. A synchronous request per batch, from a thread of our own, maps each request
to a range of spool rows exactly, and the spool already is the batch buffer.
"""

from __future__ import annotations

import fcntl
import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from influxdb_client import InfluxDBClient
from influxdb_client import Point as InfluxPoint
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from gateway.config import InfluxHistorianConfig
from gateway.historian.points import Point, SeriesUnavailable, Sites, event_points, to_epoch_ns
from warden.events import Event

__all__ = ["RETRYABLE_4XX", "InfluxHistorian", "SpoolFull", "retry_delay_seconds"]

logger = logging.getLogger(__name__)

#: HTTP 4xx answers that say nothing against the points themselves: a timeout or rate
#: limit, and a wrong token or unknown bucket (an operator fixes that; the points wait).
RETRYABLE_4XX = frozenset({401, 403, 404, 408, 429})

#: How much of a server's refusal message is kept in rejected_points and logs.
REASON_KEEP_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- send order; never reused
    line       TEXT    NOT NULL,                   -- one point in line protocol, ns precision
    spooled_at REAL    NOT NULL                    -- Unix time when write() committed it
);
CREATE TABLE IF NOT EXISTS rejected_points (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    line        TEXT    NOT NULL,
    spooled_at  TEXT    NOT NULL,                  -- ISO 8601, UTC
    rejected_at TEXT    NOT NULL,                  -- ISO 8601, UTC
    status      INTEGER NOT NULL,                  -- the server's HTTP status
    reason      TEXT    NOT NULL                   -- the server's answer
);
"""


class _Stopping(Exception):
    """Ends the forwarder thread."""


class SpoolFull(RuntimeError):
    """write() refused: the spool holds spool_max_points. The caller must not acknowledge."""


class InfluxHistorian:
    """Durable, ordered, retried-forever writes to one bucket (see the module docstring)."""

    def __init__(self, config: InfluxHistorianConfig, site: Sites) -> None:
        self._config = config
        self._site = site
        self._spool = _Spool(Path(config.spool_path))
        try:
            # No retries inside the client (urllib3 retries=False is its default): the forwarder retries.
            self._client = InfluxDBClient(url=config.url, token=config.token, org=config.org, timeout=config.timeout_ms)
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        except BaseException:
            self._spool.close()
            raise
        _quiet_library_loggers()

        self._cond = threading.Condition()  # guards everything below and the spool connection
        self._pending, self._last_id, first_id = self._spool.summary()
        self._done_through = first_id - 1 if self._pending else self._last_id  # every id <= this is settled
        self._counts = dict.fromkeys(
            ("points_spooled", "points_written", "points_rejected", "batches_written", "failed_attempts", "writes_refused"), 0
        )
        self._closed = False
        self._stopping = False
        self._flush_waiters = 0
        self._flush_requests = 0  # bumped by flush(): cuts a retry wait short
        self._failing = False  # the last attempt failed and is being retried
        self._cap = config.batch_size  # halved while looking for the points a server refuses
        self._suspect_end = 0  # last spool id of the refused batch being split
        self._last_attempt = time.monotonic()  # partial batches go out once per flush interval

        if self._pending:
            logger.info("influx spool holds points from before; sending them", extra={**self._where(), "points": self._pending})
        self._forwarder = threading.Thread(target=self._forward, name="influx-forwarder", daemon=True)
        self._forwarder.start()

    # ------------------------------------------------------------------ Historian API

    def series(
        self, device: str, measurement: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int = 1000, site: str | None = None,
    ) -> list[Point]:
        """The latest `limit` points of a device in [since, until), oldest first, read back
        with a Flux query (the v2 query API: InfluxDB 2.x, 1.8+ with Flux enabled). Raises
        SeriesUnavailable with the server's answer where it does not speak Flux (InfluxDB 3,
        VictoriaMetrics): the API turns that into 501 with the reason."""
        flux = _series_flux(self._config.bucket, device, measurement, since, until, limit, site)
        try:
            tables = self._client.query_api().query(flux, org=self._config.org)
        except ApiException as exc:
            raise SeriesUnavailable(f"{self._config.url} answered the Flux query with HTTP {exc.status}: "
                                    f"{_reason(exc)[:200]} (InfluxDB 3 and VictoriaMetrics have no Flux)") from None
        except Exception as exc:  # noqa: BLE001 - unreachable, or an answer that is not Flux CSV
            raise SeriesUnavailable(f"the Flux query to {self._config.url} failed: {type(exc).__name__}") from None
        points = [_flux_point(record.values) for table in tables for record in table.records]
        points.sort(key=lambda p: p.time)
        return points[-limit:]

    def write(self, events: Sequence[Event]) -> None:
        """Commit the events' points to the spool, or raise (SpoolFull, sqlite3.Error).

        When this returns the points are on disk and will reach the server; it never
        waits for the network."""
        lines = [_line_protocol(p) for p in event_points(events, self._site)]  # raises before spooling
        with self._cond:
            if self._closed:
                raise RuntimeError("InfluxHistorian is closed")
            if not lines:
                return
            if self._pending >= self._config.spool_max_points:
                self._counts["writes_refused"] += 1
                raise SpoolFull(
                    f"influx spool {self._config.spool_path} is full ({self._pending} points pending, "
                    f"spool_max_points={self._config.spool_max_points}); not accepting more until the server takes some"
                )
            self._last_id = self._spool.append(lines, time.time())
            was_empty = self._pending == 0
            self._pending += len(lines)
            self._counts["points_spooled"] += len(lines)
            if was_empty or self._pending >= self._config.batch_size:
                self._cond.notify_all()  # the forwarder starts the interval, or sends a full batch

    def position(self) -> None:
        """No positions: a point written again overwrites itself."""
        return None

    def discard_after(self, position: str) -> int:
        """Never asked: there are no positions."""
        return 0

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every point spooled before the call has been accepted by the server
        (or moved to rejected_points). False if `timeout` seconds passed first; the points
        then stay spooled. A forwarder waiting to retry tries once more at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._last_id
            self._flush_waiters += 1
            self._flush_requests += 1
            self._cond.notify_all()
            try:
                while self._done_through < target:
                    if not self._forwarder.is_alive():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self) -> None:
        """Stop the forwarder, keeping unsent points on disk for the next start.

        If the server is answering, what is spooled is sent first, for at most timeout_ms;
        if it is not, close() does not wait for it."""
        with self._cond:
            if self._closed:
                return
            self._closed = True  # write() refuses from now on
            drain = not self._failing
        if drain:
            self.flush(timeout=self._config.timeout_ms / 1000)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._forwarder.join()  # at most one request in flight, bounded by timeout_ms
        self._client.close()
        with self._cond:
            left = self._pending
            self._spool.close()
        if left:
            logger.info("influx historian closed with points still spooled", extra={**self._where(), "points": left})

    def stats(self) -> dict[str, float]:
        with self._cond:
            stats = {name: float(n) for name, n in self._counts.items()}
            stats["points_pending"] = float(self._pending)
            oldest = self._spool.oldest_spooled_at() if self._pending and not self._spool.closed else None
        stats["oldest_pending_age_seconds"] = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        return stats

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest points the server refused for good, newest first (for ops and tests)."""
        with self._cond:
            return self._spool.rejected(limit)

    # ------------------------------------------------------------------ forwarder thread

    def _forward(self) -> None:
        attempt = 0  # failed attempts in a row
        while True:
            try:
                attempt = self._forward_once(attempt)
            except _Stopping:
                return
            except Exception:  # a bug or a spool error must not end the thread: points would wait forever
                attempt += 1
                delay = retry_delay_seconds(self._config, attempt, random.random())
                logger.exception("influx forwarder failed; retrying", extra={**self._where(), "retry_in_s": round(delay, 3)})
                with self._cond:
                    self._failing = True
                    self._cond.wait_for(lambda: self._stopping, timeout=delay)

    def _forward_once(self, attempt: int) -> int:
        """Send one batch (or wait for one); returns the count of failed attempts in a row."""
        with self._cond:
            if attempt == 0 and not self._wait_for_batch():
                raise _Stopping
            if self._stopping:
                raise _Stopping
            rows = self._spool.head(self._cap)
            if not rows:  # rows removed behind our back (by hand): trust the file
                self._pending, self._done_through = 0, self._last_id
                self._cond.notify_all()
                return 0
        self._last_attempt = time.monotonic()
        try:
            self._write_api.write(
                self._config.bucket, self._config.org, "\n".join(line for _, line in rows), WritePrecision.NS
            )
        except Exception as error:  # noqa: BLE001 - anything but a refusal is retried
            status = getattr(error, "status", None) if isinstance(error, ApiException) else None
            if status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
                self._refused(rows, status, _reason(error))
                return 0
            self._retry_later(rows, attempt + 1, error)
            return attempt + 1
        self._delivered(rows)
        if attempt:
            logger.info("influx writes resumed", extra={**self._where(), "failed_attempts": attempt})
        return 0

    def _wait_for_batch(self) -> bool:
        """Wait (holding the condition) until a batch should go; False when stopping."""
        interval = self._config.flush_interval_ms / 1000
        while not self._stopping:
            if self._pending:
                splitting = self._cap < self._config.batch_size
                if self._pending >= self._config.batch_size or self._flush_waiters or splitting:
                    return True
                remaining = self._last_attempt + interval - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)
            else:
                self._cond.wait()
        return False

    def _delivered(self, rows: list[tuple[int, str]]) -> None:
        last = rows[-1][0]
        with self._cond:
            self._spool.delete_through(last)
            self._settle(last, len(rows))
            self._counts["points_written"] += len(rows)
            self._counts["batches_written"] += 1
            if last >= self._suspect_end:
                self._cap = self._config.batch_size
            self._failing = False

    def _refused(self, rows: list[tuple[int, str]], status: int, reason: str) -> None:
        """A 4xx about the data: split the batch until the refused points are alone, and
        move each of those to rejected_points. Good points are never rejected with them."""
        with self._cond:
            self._failing = False
            if len(rows) > 1:
                self._cap = math.ceil(len(rows) / 2)
                self._suspect_end = max(self._suspect_end, rows[-1][0])
                logger.warning(
                    "influx server refused a batch; splitting it to find the refused points",
                    extra={**self._where(), "points": len(rows), "status": status, "reason": reason},
                )
                return
            row_id, line = rows[0]
            self._spool.reject(row_id, status, reason)
            self._settle(row_id, 1)
            self._counts["points_rejected"] += 1
            self._cap = self._config.batch_size
        logger.error(
            "influx server refused a point; moved to rejected_points",
            extra={**self._where(), "status": status, "reason": reason, "line": line[:500]},
        )

    def _retry_later(self, rows: list[tuple[int, str]], attempt: int, error: Exception) -> None:
        delay = retry_delay_seconds(self._config, attempt, random.random())
        retry_after = _retry_after_seconds(error)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._config.max_retry_delay_ms / 1000))
        status = getattr(error, "status", None) if isinstance(error, ApiException) else None
        level = logging.ERROR if status in (401, 403, 404) else logging.WARNING  # needs an operator
        logger.log(
            level,
            "influx write failed; the points stay spooled and are retried",
            extra={**self._where(), "points": len(rows), "attempt": attempt, "retry_in_s": round(delay, 3),
                   "status": status, "error": _describe(error)},
        )  # fmt: skip
        with self._cond:
            self._counts["failed_attempts"] += 1
            self._failing = True
            requests = self._flush_requests
            self._cond.wait_for(lambda: self._stopping or self._flush_requests != requests, timeout=delay)

    def _settle(self, through_id: int, points: int) -> None:
        self._pending -= points
        self._done_through = through_id
        self._cond.notify_all()

    def _where(self) -> dict[str, str]:
        return {"url": self._config.url, "bucket": self._config.bucket}


class _Spool:
    """The SQLite file; the caller serialises access (InfluxHistorian._cond)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Two forwarders on one spool would send every point twice: one owner at a time.
        self._lock_file = open(f"{path}.lock", "a+b")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"influx spool {path} is in use by another historian (lock {path}.lock)") from None
        self._db: sqlite3.Connection | None = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed write survives power loss, not only a crash
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @property
    def closed(self) -> bool:
        return self._db is None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"influx spool {self.path} is closed")
        return self._db

    def summary(self) -> tuple[int, int, int]:
        """(points pending, last id ever spooled, first pending id or 0)."""
        count, first, last = self.db.execute("SELECT count(*), min(id), max(id) FROM spool").fetchone()
        sequence = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
        return int(count), max(int(last or 0), int(sequence[0]) if sequence else 0), int(first or 0)

    def append(self, lines: list[str], at: float) -> int:
        """One transaction; returns the last id written."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO spool (line, spooled_at) VALUES (?, ?)", [(line, at) for line in lines])
            last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return last

    def head(self, limit: int) -> list[tuple[int, str]]:
        return [(int(i), str(line)) for i, line in self.db.execute("SELECT id, line FROM spool ORDER BY id LIMIT ?", (limit,))]

    def delete_through(self, last_id: int) -> None:
        self.db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))

    def reject(self, row_id: int, status: int, reason: str) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO rejected_points (line, spooled_at, rejected_at, status, reason)"
                " SELECT line, strftime('%Y-%m-%dT%H:%M:%fZ', spooled_at, 'unixepoch'), ?, ?, ? FROM spool WHERE id = ?",
                (_now_iso(), status, reason, row_id),
            )
            db.execute("DELETE FROM spool WHERE id = ?", (row_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def oldest_spooled_at(self) -> float | None:
        row = self.db.execute("SELECT spooled_at FROM spool ORDER BY id LIMIT 1").fetchone()
        return float(row[0]) if row else None

    def rejected(self, limit: int) -> list[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT id, line, spooled_at, rejected_at, status, reason FROM rejected_points ORDER BY id DESC LIMIT ?", (limit,)
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._lock_file.close()  # releases the flock


def retry_delay_seconds(config: InfluxHistorianConfig, attempt: int, jitter: float) -> float:
    """Wait before retry `attempt` (1, 2, ...): uniform (jitter in [0, 1)) between
    retry_interval * base^(attempt-1) and retry_interval * base^attempt, capped at
    max_retry_delay (or at retry_interval, if that is larger)."""
    base = config.exponential_base
    cap = max(config.max_retry_delay_ms, config.retry_interval_ms)
    exponent = min(attempt, 200)  # the cap is reached long before; keeps base**n finite
    low = min(config.retry_interval_ms * base ** (exponent - 1), cap)
    high = min(config.retry_interval_ms * base**exponent, cap)
    return (low + (high - low) * jitter) / 1000


def _quiet_library_loggers() -> None:
    """The historian logs each failure once, with context; the libraries need not repeat it.

    Called after InfluxDBClient() is built: its configuration sets these loggers to
    WARNING itself. A stricter level set by an operator is kept."""
    for name, level in (("influxdb_client", logging.WARNING), ("urllib3", logging.ERROR)):
        library = logging.getLogger(name)
        library.setLevel(max(level, library.level))


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


def _reason(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    text = " ".join(part for part in (str(getattr(error, "reason", "") or ""), str(body or "")) if part)
    return (text or repr(error))[:REASON_KEEP_CHARS]


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status}: {_reason(error)}"
    return repr(error)[:REASON_KEEP_CHARS]


def _retry_after_seconds(error: Exception) -> float | None:
    headers = getattr(error, "headers", None) if isinstance(error, ApiException) else None
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from InfluxDB; the backoff applies


#: Tags every point may carry (gateway/historian/points.py); other pivoted columns are fields.
_TAGS = frozenset({"site", "building", "room", "device", "unit", "channel", "action", "door", "source", "reader", "state"})
_FLUX_META = frozenset({"result", "table", "_start", "_stop", "_time", "_measurement"})


def _flux_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def _flux_time(value: datetime | None, default: str) -> str:
    if value is None:
        return default
    if value.tzinfo is None:
        raise ValueError("series() needs timezone-aware datetimes")
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _series_flux(bucket: str, device: str, measurement: str | None, since: datetime | None,
                 until: datetime | None, limit: int, site: str | None = None) -> str:
    """One device's points, one row per point (fields pivoted into columns), newest `limit`;
    `site`: that site's device only (sites repeat device ids)."""
    where = f"r.device == {_flux_string(device)}"
    if site is not None:
        where += f" and r.site == {_flux_string(site)}"
    if measurement is not None:
        where += f" and r._measurement == {_flux_string(measurement)}"
    return (
        f"from(bucket: {_flux_string(bucket)})"
        f" |> range(start: {_flux_time(since, '0')}, stop: {_flux_time(until, 'now()')})"
        f" |> filter(fn: (r) => {where})"
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        ' |> group() |> sort(columns: ["_time"], desc: true)'
        f" |> limit(n: {int(limit)})"
    )


def _flux_point(values: dict[str, Any]) -> Point:
    tags = {k: str(v) for k, v in values.items() if k in _TAGS and v is not None}
    fields = {k: v for k, v in values.items() if k not in _TAGS and k not in _FLUX_META and v is not None}
    return Point(str(values["_measurement"]), tags, fields, values["_time"].astimezone(timezone.utc), "")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

