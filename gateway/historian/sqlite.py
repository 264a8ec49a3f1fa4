"""Embedded historian: one SQLite file, for the demo and small sites.

Writes are synchronous and commit before write() returns, so there is nothing to
lose on a crash and flush() has nothing to do. One connection is shared under a lock:
the gateway's writer thread and the API's reader threads never use it at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from functools import lru_cache
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.historian.points import Point, event_points, from_epoch_ns, to_epoch_ns
from warden.config import SiteConfig
from warden.events import Event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL UNIQUE,
    time_ns     INTEGER NOT NULL,          -- event time, nanoseconds since the Unix epoch (UTC)
    measurement TEXT    NOT NULL,
    site        TEXT    NOT NULL,
    building    TEXT    NOT NULL,
    room        TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    tags        TEXT    NOT NULL,          -- JSON object: the other tags (unit, action, ...)
    fields      TEXT    NOT NULL           -- JSON object: field name -> number, string or bool
);
CREATE INDEX IF NOT EXISTS points_device_time ON points (device, time_ns);
"""

_COLUMN_TAGS = frozenset({"site", "building", "room", "device"})

_INSERT = """
INSERT OR IGNORE INTO points
    (event_id, time_ns, measurement, site, building, room, device, tags, fields)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


class SqliteHistorian:
    """Points in one SQLite table (WAL mode); a re-written event id is stored once."""

    def __init__(self, path: str | Path, site: SiteConfig) -> None:
        self._path = Path(path)
        self._site = site
        self._lock = threading.Lock()
        self._written = 0
        self._duplicates = 0
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = _connect(self._path)

    def write(self, events: Sequence[Event]) -> None:
        """Insert all events in one transaction; raises sqlite3.Error if that fails."""
        rows = [_row(point) for point in event_points(events, self._site)]
        with self._lock:
            db = self._open_db()
            before = db.total_changes
            with db:
                db.executemany(_INSERT, rows)
            inserted = db.total_changes - before
            self._written += inserted
            self._duplicates += len(rows) - inserted

    def series(
        self,
        device: str,
        measurement: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[Point]:
        """The latest `limit` points of a device in [since, until), oldest first."""
        where, args = ["device = ?"], [device]
        if measurement is not None:
            where.append("measurement = ?")
            args.append(measurement)
        if since is not None:
            where.append("time_ns >= ?")
            args.append(to_epoch_ns(_aware(since)))
        if until is not None:
            where.append("time_ns < ?")
            args.append(to_epoch_ns(_aware(until)))
        sql = (
            "SELECT event_id, time_ns, measurement, site, building, room, device, tags, fields "
            f"FROM points WHERE {' AND '.join(where)} ORDER BY time_ns DESC, id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._open_db().execute(sql, [*args, limit]).fetchall()
        return [_point(row) for row in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            return int(self._open_db().execute("SELECT count(*) FROM points").fetchone()[0])

    def flush(self) -> None:
        """Nothing to do: every write() has committed before it returned."""

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {"points_written": float(self._written), "duplicates_ignored": float(self._duplicates)}

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"historian {self._path} is closed")
        return self._db


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the instance lock, not the creating thread, guards use.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across app crashes, fast commits
    db.execute("PRAGMA busy_timeout=5000")  # another process (a backup, a CLI) may hold the lock
    db.executescript(_SCHEMA)
    db.isolation_level = ""  # back to implicit transactions so `with db:` commits one batch
    return db


_encode = json.JSONEncoder(sort_keys=True).encode  # one encoder for every row: json.dumps builds one per call with options


@lru_cache(maxsize=1024)
def _encode_tags(items: tuple[tuple[str, str], ...]) -> str:
    """The non-column tags (unit, action, ...) take few values by design (each set is a
    series), so their JSON is cached instead of rebuilt for every row."""
    return _encode(dict(items))


def _row(point: Point) -> tuple[Any, ...]:
    tags = point.tags
    return (
        point.event_id,
        to_epoch_ns(point.time),
        point.measurement,
        tags["site"], tags["building"], tags["room"], tags["device"],
        _encode_tags(tuple(item for item in tags.items() if item[0] not in _COLUMN_TAGS)),
        _encode_fields(point.fields),
    )


def _encode_fields(fields: dict[str, Any]) -> str:
    """Most rows are readings, whose fields are {"value": <float>}: written directly, as
    the encoder would (float repr is its JSON, and the schema refuses NaN and infinities),
    because the encoder costs 2 µs a row on the ingest path."""
    if len(fields) == 1 and type(value := fields.get("value")) is float:
        return f'{{"value": {value!r}}}'
    return _encode(fields)


def _point(row: sqlite3.Row | tuple[Any, ...]) -> Point:
    event_id, time_ns, measurement, site, building, room, device, tags, fields = row
    all_tags = {"site": site, "building": building, "room": room, "device": device, **json.loads(tags)}
    return Point(measurement, all_tags, json.loads(fields), from_epoch_ns(time_ns), event_id)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("series() needs timezone-aware datetimes")
    return when
