"""Embedded historian: one SQLite file, for the demo and small sites.

Writes are synchronous and commit (with fsync) before write() returns, so there is
nothing to lose on a crash and flush() has nothing to do. One connection is shared
under a lock: the gateway's writer thread and the API's reader threads never use it
at once.

Event ids are not indexed here: a random 36-character key made every insert touch a
random page of a second B-tree, which was half the cost of a write and grew with the
file. The gateway stores each event once by its own seen ids, and a batch written here
whose commit never happened (a crash between the two) is cut off at the next start by
position (`discard_after`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.historian.points import Point, from_epoch_ns, located, place, point_parts, to_epoch_ns
from warden.config import DeviceLocation, SiteConfig
from warden.events import Event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id          INTEGER PRIMARY KEY,       -- the write order: positions are "<history id>:<id>"
    event_id    TEXT    NOT NULL,          -- UNIQUE in files from before positions: harmless
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
CREATE TABLE IF NOT EXISTS history_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO history_meta (key, value) VALUES ('history_id', lower(hex(randomblob(8))));
"""

log = logging.getLogger(__name__)

#: All rows of a write in one parameter, a JSON array of row arrays: one sqlite3 call
#: per batch, which SQLite runs without the GIL (the rules run meanwhile), where
#: executemany would take and release the GIL once per row. (OR IGNORE only matters for
#: older files, whose event_id is UNIQUE.)
_INSERT = """
INSERT OR IGNORE INTO points
    (event_id, time_ns, measurement, site, building, room, device, tags, fields)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8
FROM json_each(?)
"""

#: The ->> operator of _INSERT.
MIN_SQLITE = (3, 38, 0)


class SqliteHistorian:
    """Points in one SQLite table (WAL mode), in write order."""

    def __init__(self, path: str | Path, site: SiteConfig) -> None:
        self._path = Path(path)
        self._site = site
        self._lock = threading.Lock()
        self._written = 0
        self._duplicates = 0
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = _connect(self._path)
        self._history_id = str(self._db.execute("SELECT value FROM history_meta WHERE key = 'history_id'").fetchone()[0])

    def write(self, events: Sequence[Event]) -> str:
        """Insert all events in one transaction and return the position after them;
        raises sqlite3.Error if that fails."""
        rows = [_row(event, location) for event, location in located(events, self._site)]
        batch = _encode(rows)
        with self._lock:
            db = self._open_db()
            before = db.total_changes
            if rows:
                with db:
                    db.execute(_INSERT, (batch,))
            inserted = db.total_changes - before
            self._written += inserted
            self._duplicates += len(rows) - inserted
            return self._position(db)

    def position(self) -> str:
        with self._lock:
            return self._position(self._open_db())

    def _position(self, db: sqlite3.Connection) -> str:
        last = db.execute("SELECT max(id) FROM points").fetchone()[0]
        return f"{self._history_id}:{last or 0}"

    def discard_after(self, position: str) -> int:
        """Delete what was written after `position` (from write()); returns how many
        points. A position of another file (the historian was replaced) deletes nothing."""
        history_id, _, last = position.partition(":")
        if history_id != self._history_id or not last.isdigit():
            log.warning("not discarding: position is not of this history file", extra={"position": position, "file": str(self._path)})
            return 0
        with self._lock:
            db = self._open_db()
            with db:
                return db.execute("DELETE FROM points WHERE id > ?", (int(last),)).rowcount

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


class SqliteHistoryReader:
    """Read-only access to a SQLite historian file, for the report: it opens the file per
    query, so a report can run beside a live gateway (or with none) without a writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def points(self, measurement: str, since: datetime, until: datetime) -> list[tuple[int, Point]]:
        """Every point of `measurement` in [since, until), oldest first, with its write order."""
        rows = self._query(
            "SELECT id, event_id, time_ns, measurement, site, building, room, device, tags, fields FROM points"
            " WHERE measurement = ? AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id",
            (measurement, to_epoch_ns(_aware(since)), to_epoch_ns(_aware(until))),
        )
        return [(row[0], _point(row[1:])) for row in rows]

    def newest_before(self, row: int, window: int, skip_measurement: str) -> datetime | None:
        """The newest event time among the `window` points written just before point `row`,
        other than `skip_measurement`: about when that point arrived (the file keeps the
        write order, not arrival times)."""
        found = self._query(
            "SELECT max(time_ns) FROM (SELECT time_ns FROM points WHERE id < ? AND measurement != ?"
            " ORDER BY id DESC LIMIT ?)", (row, skip_measurement, window),
        )
        return None if not found or found[0][0] is None else from_epoch_ns(int(found[0][0]))

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def _connect(path: Path) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        needed = ".".join(map(str, MIN_SQLITE))
        raise RuntimeError(f"the SQLite historian needs SQLite >= {needed}; this Python links {sqlite3.sqlite_version}")
    # check_same_thread=False: the instance lock, not the creating thread, guards use.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an fsync per batch: a power cut keeps what the gateway acknowledged
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


def _row(event: Event, location: DeviceLocation | None) -> tuple[Any, ...]:
    """The event's point (points.py) as a row, built from its parts: the same values as
    event_point gives, without assembling the Point for every row."""
    measurement, tags, fields = point_parts(event)
    building, room = place(location)
    return (
        event.id, to_epoch_ns(event.event_time), measurement, event.site, building, room, event.device,
        _encode_tags(tuple(tags.items())), _encode_fields(fields),
    )  # fmt: skip


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
