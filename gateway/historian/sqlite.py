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
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.historian.points import Point, Sites, from_epoch_ns, located, place, point_parts, to_epoch_ns
from warden.config import DeviceLocation
from warden.events import Event

#: Files made before compact rows (one row per point, text columns); still read and written.
_LEGACY_SCHEMA = """
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
"""

#: New files: compact rows (docs/storage.md, about 80 bytes a reading instead of 168). The
#: tags of a point (site, building, room, device, measurement, extra tags) are one row of
#: `point_series`, named by its id in each sample; a UUID event id is two integers; a
#: reading's value is a REAL column, other fields stay JSON. `points` is a view with the
#: legacy columns (plus `value`), so every query reads both kinds of file alike.
_COMPACT_SCHEMA = """
CREATE TABLE IF NOT EXISTS point_series (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, measurement TEXT NOT NULL, tags TEXT NOT NULL,
    site TEXT NOT NULL, building TEXT NOT NULL, room TEXT NOT NULL,
    UNIQUE (device, measurement, tags, site, building, room));
CREATE TABLE IF NOT EXISTS samples (
    id      INTEGER PRIMARY KEY,               -- the write order: positions are "<history id>:<id>"
    series  INTEGER NOT NULL,                  -- point_series.id
    time_ns INTEGER NOT NULL,                  -- event time, nanoseconds since the Unix epoch (UTC)
    id_hi   INTEGER, id_lo INTEGER,            -- a UUID event id's 16 bytes, as two signed integers...
    id_text TEXT,                              -- ...or any other event id
    value   REAL,                              -- a reading's value, when the fields are just {"value": <float>}
    fields  TEXT);                             -- else the fields' JSON
CREATE INDEX IF NOT EXISTS samples_series_time ON samples (series, time_ns);
CREATE VIEW IF NOT EXISTS points AS
    SELECT s.id AS id, coalesce(s.id_text,
               substr(printf('%016x', s.id_hi), 1, 8) || '-' || substr(printf('%016x', s.id_hi), 9, 4) || '-' ||
               substr(printf('%016x', s.id_hi), 13, 4) || '-' || substr(printf('%016x', s.id_lo), 1, 4) || '-' ||
               substr(printf('%016x', s.id_lo), 5, 12)) AS event_id,
           s.time_ns AS time_ns, p.measurement AS measurement, p.site AS site, p.building AS building,
           p.room AS room, p.device AS device, p.tags AS tags, s.fields AS fields, s.value AS value
    FROM samples AS s JOIN point_series AS p ON p.id = s.series;
"""

_META_SCHEMA = """
CREATE TABLE IF NOT EXISTS history_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO history_meta (key, value) VALUES ('history_id', lower(hex(randomblob(8))));
"""

_INSERT_SAMPLES = """
INSERT INTO samples (series, time_ns, id_hi, id_lo, id_text, value, fields)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6 FROM json_each(?)
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

    def __init__(self, path: str | Path, site: Sites) -> None:
        self._path = Path(path)
        self._site = site
        self._lock = threading.Lock()
        self._written = 0
        self._duplicates = 0
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = _connect(self._path)
        self._history_id = str(self._db.execute("SELECT value FROM history_meta WHERE key = 'history_id'").fetchone()[0])
        self._compact = _is_compact(self._db)
        self._table = "samples" if self._compact else "points"  # where rows are deleted and counted
        self._value = "value" if self._compact else "NULL"  # the view's value column; legacy rows have JSON only
        self._series: dict[tuple[str, ...], int] = {}  # point_series key -> id (compact files)

    def write(self, events: Sequence[Event]) -> str:
        """Insert all events in one transaction and return the position after them;
        raises sqlite3.Error if that fails."""
        with self._lock:
            db = self._open_db()
            if self._compact:
                return self._write_compact(db, events)
            rows = [_row(event, location) for event, location in located(events, self._site)]
            batch = _encode(rows)
            before = db.total_changes
            if rows:
                with db:
                    db.execute(_INSERT, (batch,))
            inserted = db.total_changes - before
            self._written += inserted
            self._duplicates += len(rows) - inserted
            return self._position(db)

    def _write_compact(self, db: sqlite3.Connection, events: Sequence[Event]) -> str:
        parts = [(_series_key(event, location), event) for event, location in located(events, self._site)]
        with db:
            new = {key for key, _ in parts if key not in self._series}
            if new:
                db.executemany("INSERT OR IGNORE INTO point_series (device, measurement, tags, site, building, room)"
                               " VALUES (?, ?, ?, ?, ?, ?)", sorted(new))
                for key in new:
                    self._series[key] = int(db.execute(
                        "SELECT id FROM point_series WHERE device = ? AND measurement = ? AND tags = ? AND site = ?"
                        " AND building = ? AND room = ?", key).fetchone()[0])
            if parts:
                db.execute(_INSERT_SAMPLES, (_encode([_sample(self._series[key], event) for key, event in parts]),))
        self._written += len(parts)
        return self._position(db)

    def position(self) -> str:
        with self._lock:
            return self._position(self._open_db())

    def _position(self, db: sqlite3.Connection) -> str:
        last = db.execute(f"SELECT max(id) FROM {self._table}").fetchone()[0]
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
                return db.execute(f"DELETE FROM {self._table} WHERE id > ?", (int(last),)).rowcount

    def prune(self, before: datetime, max_rows: int = 5000) -> int:
        """Delete at most `max_rows` points with an event time before `before`; how many.

        Bounded so that the lock is held briefly (the gateway calls it off the ingest path,
        step by step). Old points are found by write order, which follows event time: the
        last row older than `before` is found by bisecting the ids (no index on time), and
        only rows up to it are looked at. A point written late with an old time is pruned
        once the rows written before it have expired too."""
        cutoff = to_epoch_ns(_aware(before))
        with self._lock:
            db = self._open_db()
            low, high = db.execute(f"SELECT min(id), max(id) FROM {self._table}").fetchone()
            if low is None or low == high:
                return 0
            frontier = _last_id_before(db, self._table, low, high - 1, cutoff)
            if frontier is None:
                return 0
            # The newest row always stays: ids are max(id) + 1, so an emptied table would
            # hand out ids again and positions (discard_after) would cut the wrong rows.
            frontier = min(frontier, high - 1)
            with db:
                return db.execute(
                    f"DELETE FROM {self._table} WHERE id IN"
                    f" (SELECT id FROM {self._table} WHERE id <= ? AND time_ns < ? ORDER BY id LIMIT ?)",
                    (frontier, cutoff, max_rows),
                ).rowcount

    def last_written_time(self) -> datetime | None:
        """The event time of the newest row (by write order): what "now" is for the data."""
        with self._lock:
            row = self._open_db().execute(f"SELECT time_ns FROM {self._table} ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else from_epoch_ns(int(row[0]))

    def series(
        self,
        device: str,
        measurement: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        site: str | None = None,
    ) -> list[Point]:
        """The latest `limit` points of a device in [since, until), oldest first. `site`: that
        site's device only (the sites of a district repeat device ids)."""
        where, args = ["device = ?"], [device]
        if site is not None:
            where.append("site = ?")
            args.append(site)
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
            f"SELECT event_id, time_ns, measurement, site, building, room, device, tags, fields, {self._value} "
            f"FROM points WHERE {' AND '.join(where)} ORDER BY time_ns DESC, id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._open_db().execute(sql, [*args, limit]).fetchall()
        return [_point(row) for row in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            return int(self._open_db().execute(f"SELECT count(*) FROM {self._table}").fetchone()[0])

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
            "SELECT id, event_id, time_ns, measurement, site, building, room, device, tags, fields, {value} FROM points"
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
            if "{value}" in sql:  # compact files have a value column, legacy ones JSON fields only
                sql = sql.replace("{value}", "value" if _is_compact(db) else "NULL")
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def _last_id_before(db: sqlite3.Connection, table: str, low: int, high: int, cutoff_ns: int) -> int | None:
    """The largest id in [low, high] whose row is older than `cutoff_ns`, assuming time
    grows with the id (write order); None if the first row is not older."""
    def time_at(row_id: int) -> tuple[int, int]:
        found = db.execute(f"SELECT id, time_ns FROM {table} WHERE id >= ? ORDER BY id LIMIT 1", (row_id,)).fetchone()
        return int(found[0]), int(found[1])

    first_id, first_time = time_at(low)
    if first_time >= cutoff_ns:
        return None
    best = first_id
    lo, hi = first_id + 1, high
    while lo <= hi:
        middle = (lo + hi) // 2
        row_id, row_time = time_at(middle)
        if row_time < cutoff_ns:
            best, lo = row_id, row_id + 1
        else:
            hi = middle - 1
    return best


def _connect(path: Path) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        needed = ".".join(map(str, MIN_SQLITE))
        raise RuntimeError(f"the SQLite historian needs SQLite >= {needed}; this Python links {sqlite3.sqlite_version}")
    # check_same_thread=False: the instance lock, not the creating thread, guards use.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an fsync per batch: a power cut keeps what the gateway acknowledged
    db.execute("PRAGMA busy_timeout=5000")  # another process (a backup, a CLI) may hold the lock
    legacy = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'points' AND type = 'table'").fetchone() is not None
    db.executescript((_LEGACY_SCHEMA if legacy else _COMPACT_SCHEMA) + _META_SCHEMA)
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
    event_id, time_ns, measurement, site, building, room, device, tags, fields, value = row
    all_tags = {"site": site, "building": building, "room": room, "device": device, **json.loads(tags)}
    return Point(measurement, all_tags, json.loads(fields) if fields is not None else {"value": value},
                 from_epoch_ns(time_ns), event_id)


def _is_compact(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'samples' AND type = 'table'").fetchone() is not None


def _series_key(event: Event, location: DeviceLocation | None) -> tuple[str, ...]:
    measurement, tags, _ = point_parts(event)
    building, room = place(location)
    return (event.device, measurement, _encode_tags(tuple(tags.items())), event.site, building, room)


def _sample(series: int, event: Event) -> tuple[Any, ...]:
    """One compact row: (series, time_ns, id_hi, id_lo, id_text, value, fields)."""
    _, _, fields = point_parts(event)
    hi: int | None = None
    lo: int | None = None
    text: str | None = event.id
    try:
        raw = uuid.UUID(event.id)
        if str(raw) == event.id:  # only the canonical form comes back the same
            hi = int.from_bytes(raw.bytes[:8], "big", signed=True)
            lo, text = int.from_bytes(raw.bytes[8:], "big", signed=True), None
    except ValueError:
        pass
    value = fields.get("value")
    if len(fields) == 1 and type(value) is float:
        return (series, to_epoch_ns(event.event_time), hi, lo, text, value, None)
    return (series, to_epoch_ns(event.event_time), hi, lo, text, None, _encode(fields))


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("series() needs timezone-aware datetimes")
    return when
