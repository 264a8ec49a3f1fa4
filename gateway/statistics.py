"""Long-term statistics: per reading series and UTC hour, kept in the gateway's state
database whichever historian is chosen, and forever (raw points are pruned).

Why here and not in the historian: the statistics of a batch commit in the same
transaction as its seen event ids (gateway/store.py commit_batch), so a re-sent event,
dropped by those ids before the batch, is never counted twice, and a batch whose commit
failed leaves no partial counts. Late data lands in its own hour (an upsert).

One row per (series, hour), about 91 bytes (docs/storage.md). A series is one site, device,
quantity, unit, channel and whether it is a cumulative register: the sites of a district repeat
device ids (two schools' `meter-main`), so every reader is bound to one site. Kept per hour:

- `n`, `total`, `lo`, `hi`: reading count, sum, min and max (mean = total / n);
- `on_n`: readings of power above `on_watts` (on-minutes = 60 * on_n / n: the share of
  the hour's samples that were on, exact for a meter sampling at a steady rate);
- `first_us`/`first`, `last_us`/`last`: the first and last reading of the hour and their
  times. For a cumulative register (kWh, m3) the period's consumption is the register
  difference, `last` of the period's last hour minus `last` of the hour before it: exact,
  no sums of floats; a register replaced (or reset, rolled over) in the period is summed
  hour by hour in parts instead (`hour_use`), never a negative or giant difference. **Energy comes from cumulative registers only**; power readings give
  min/max/mean and on-minutes, never integrated kWh.

Days are derived (hours grouped by local date, so a DST day has 23 or 25 hours).

On SQLite or PostgreSQL, as the state database is (gateway/db.py); the upsert differs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pydantic import Field

from gateway.db import Connection, bulk_ids, dialect, render_schema, table_columns
from rules.schedule import ScheduleSpans
from rules.water import MAX_FLOW_L_PER_MIN, sample_value
from warden.config import SiteConfig, StrictModel
from warden.events import Event, Quantity, Reading

log = logging.getLogger(__name__)

HOUR_US = 3_600_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

#: Energy units a register may be in, as kWh.
_ENERGY_TO_KWH = {"kwh": 1.0, "wh": 0.001, "mwh": 1000.0}


class StatisticsConfig(StrictModel):
    """Hourly statistics (gateway/statistics.py) and how long the SQLite historian keeps raw points."""

    enabled: bool = Field(default=True, description="Keep hourly statistics in the state database")
    on_watts: float = Field(default=60.0, ge=0, description="Power above this counts as on (on-minutes)")
    raw_retention_days: float | None = Field(
        default=30.0, gt=0, description="Raw points older than this are deleted from the SQLite historian; null: never"
    )
    prune_rows: int = Field(default=5000, ge=100, le=1_000_000, description="Raw points deleted per pruning step")
    prune_every_seconds: float = Field(default=60.0, gt=0, description="Real seconds between pruning passes")


#: Written once for both engines (gateway/db.py render_schema).
SCHEMA = """
CREATE TABLE IF NOT EXISTS statistics_series (
    id {rowid}, site TEXT NOT NULL, device TEXT NOT NULL, quantity TEXT NOT NULL, unit TEXT NOT NULL,
    channel TEXT NOT NULL, cumulative INTEGER NOT NULL, UNIQUE (site, device, quantity, unit, channel, cumulative));
CREATE TABLE IF NOT EXISTS statistics_hour (
    series {int} NOT NULL, hour {int} NOT NULL,        -- hours since the Unix epoch, UTC
    n {int} NOT NULL, total {real} NOT NULL, lo {real} NOT NULL, hi {real} NOT NULL, on_n {int} NOT NULL,
    first_us {int} NOT NULL, first {real} NOT NULL,  -- µs since the epoch
    last_us {int} NOT NULL, last {real} NOT NULL,
    PRIMARY KEY (series, hour)) {without_rowid};
"""

#: The tables SCHEMA makes, parents first (gateway/state_copy.py copies them in this order).
TABLES = ("statistics_series", "statistics_hour")

#: One statement per batch (see gateway/store.py _bulk). SET expressions read the old row.
_UPSERT_SQLITE = """
INSERT INTO statistics_hour (series, hour, n, total, lo, hi, on_n, first_us, first, last_us, last)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6,
       value ->> 7, value ->> 8, value ->> 9, value ->> 10
FROM json_each(?) WHERE true
ON CONFLICT (series, hour) DO UPDATE SET
    n = n + excluded.n, total = total + excluded.total,
    lo = min(lo, excluded.lo), hi = max(hi, excluded.hi), on_n = on_n + excluded.on_n,
    first = CASE WHEN excluded.first_us < first_us THEN excluded.first ELSE first END,
    first_us = min(first_us, excluded.first_us),
    last = CASE WHEN excluded.last_us >= last_us THEN excluded.last ELSE last END,
    last_us = max(last_us, excluded.last_us)
"""

#: The same on PostgreSQL: the old row is named by its table, SQLite's two-argument min/max are least/greatest.
_UPSERT_POSTGRES = """
INSERT INTO statistics_hour AS old (series, hour, n, total, lo, hi, on_n, first_us, first, last_us, last)
SELECT (value ->> 0)::bigint, (value ->> 1)::bigint, (value ->> 2)::bigint, (value ->> 3)::float8,
       (value ->> 4)::float8, (value ->> 5)::float8, (value ->> 6)::bigint, (value ->> 7)::bigint, (value ->> 8)::float8,
       (value ->> 9)::bigint, (value ->> 10)::float8
FROM jsonb_array_elements(?::jsonb) AS value
ON CONFLICT (series, hour) DO UPDATE SET
    n = old.n + excluded.n, total = old.total + excluded.total,
    lo = least(old.lo, excluded.lo), hi = greatest(old.hi, excluded.hi), on_n = old.on_n + excluded.on_n,
    first = CASE WHEN excluded.first_us < old.first_us THEN excluded.first ELSE old.first END,
    first_us = least(old.first_us, excluded.first_us),
    last = CASE WHEN excluded.last_us >= old.last_us THEN excluded.last ELSE old.last END,
    last_us = greatest(old.last_us, excluded.last_us)
"""


#: SQLite cannot change a table's UNIQUE constraint in place: the series table is rebuilt, ids kept.
_SITE_MIGRATION_SQLITE = (
    "CREATE TABLE statistics_series_by_site (id INTEGER PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL,"
    " quantity TEXT NOT NULL, unit TEXT NOT NULL, channel TEXT NOT NULL, cumulative INTEGER NOT NULL,"
    " UNIQUE (site, device, quantity, unit, channel, cumulative))",
    "INSERT INTO statistics_series_by_site (id, site, device, quantity, unit, channel, cumulative)"
    " SELECT id, ?, device, quantity, unit, channel, cumulative FROM statistics_series",
    "DROP TABLE statistics_series",
    "ALTER TABLE statistics_series_by_site RENAME TO statistics_series",
)


def create_schema(db: Connection, site: str | None = None) -> None:
    """The statistics tables, and a series table from before issue 21 (keyed without the site)
    given a site column: its rows are `site`'s, the one site the gateway served then."""
    db.executescript(render_schema(SCHEMA, dialect(db)))
    if "site" not in table_columns(db, "statistics_series"):
        if site is None:
            raise ValueError("the statistics tables predate sites: open them once with the gateway's site")
        _add_site(db, site)


def _add_site(db: Connection, site: str) -> None:
    """Checked again under the write lock, so two processes opening one database do not both migrate."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if "site" not in table_columns(db, "statistics_series"):
            if dialect(db) == "postgres":
                unique = [r[0] for r in db.execute(
                    "SELECT conname FROM pg_constraint WHERE conrelid = 'statistics_series'::regclass AND contype = 'u'")]
                db.execute("ALTER TABLE statistics_series ADD COLUMN site TEXT NOT NULL DEFAULT ''")
                db.execute("UPDATE statistics_series SET site = ?", (site,))
                db.execute("ALTER TABLE statistics_series ALTER COLUMN site DROP DEFAULT")
                for name in unique:
                    db.execute(f'ALTER TABLE statistics_series DROP CONSTRAINT "{name}"')
                db.execute("ALTER TABLE statistics_series ADD UNIQUE (site, device, quantity, unit, channel, cumulative)")
            else:
                for statement in _SITE_MIGRATION_SQLITE:
                    db.execute(statement, (site,) if "?" in statement else ())
            log.info("statistics series given their site", extra={"site": site})
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def epoch_us(when: datetime) -> int:
    """Exact integer microseconds since the epoch (what an event time carries)."""
    return (when - _EPOCH) // _MICROSECOND


def hour_start(hour: int) -> datetime:
    return _EPOCH + timedelta(hours=hour)


def hour_index(when: datetime) -> int:
    """The hour containing `when` (aware)."""
    return epoch_us(when) // HOUR_US


# --------------------------------------------------------------------------- writing


SeriesKey = tuple[str, str, str, str, str, int]  # site, device, quantity, unit, channel ("" for none), cumulative


def fold(events: Iterable[Event], on_watts: float) -> dict[tuple[SeriesKey, int], list[Any]]:
    """A batch's readings folded per series and hour: [n, total, lo, hi, on_n, first_us,
    first, last_us, last]. Pure Python on the gateway's worker thread, about a
    microsecond a reading, so it is written for speed (docs/benchmarks.md)."""
    acc: dict[tuple[Any, ...], list[Any]] = {}
    power = Quantity.POWER
    for event in events:
        if type(event) is not Reading:
            continue
        # Exact: an event time has microseconds, and 2**53 µs is year 2255.
        us = round(event.event_time.timestamp() * 1e6)
        value = event.value
        key = (event.site, event.device, event.quantity, event.unit, event.channel, event.cumulative, us // HOUR_US)
        row = acc.get(key)
        if row is None:
            acc[key] = [1, value, value, value, int(key[2] is power and value > on_watts), us, value, us, value]
            continue
        row[0] += 1
        row[1] += value
        if value < row[2]:
            row[2] = value
        elif value > row[3]:
            row[3] = value
        if key[2] is power and value > on_watts:
            row[4] += 1
        if us < row[5]:
            row[5], row[6] = us, value
        elif us >= row[7]:
            row[7], row[8] = us, value
    return {((s, d, q.value, u, c or "", int(k)), h): row for (s, d, q, u, c, k, h), row in acc.items()}


class StatisticsWriter:
    """Prepares a batch's statistics for the gateway's commit, knowing the series ids.

    A series new to the file is inserted (and its id learnt) in a short transaction of
    its own before the batch's commit: an unused series row is harmless, and a remembered
    id is then always in the file, whatever happens to the batch's transaction."""

    def __init__(self, on_watts: float) -> None:
        self.on_watts = on_watts
        self._ids: dict[SeriesKey, int] = {}

    def prepare(self, write: Callable[[Callable[[Connection], Any]], Any], events: Iterable[Event]) -> str | None:
        """The JSON parameter of `apply`, or None without readings. `write` runs a function
        in a write transaction of the state database (StateStore.write)."""
        folded = fold(events, self.on_watts)
        if not folded:
            return None
        new = sorted({series for series, _ in folded if series not in self._ids})
        if new:
            self._ids.update(write(lambda db: _series_ids(db, new)))
        ids = self._ids
        return json.dumps([[ids[series], hour, *row] for (series, hour), row in folded.items()])


def _series_ids(db: Connection, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
    db.executemany("INSERT INTO statistics_series (site, device, quantity, unit, channel, cumulative)"
                   " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", keys)
    return {key: int(db.execute("SELECT id FROM statistics_series WHERE site = ? AND device = ? AND quantity = ?"
                                " AND unit = ? AND channel = ? AND cumulative = ?", key).fetchone()[0]) for key in keys}


def apply(db: Connection, prepared: str | None) -> None:
    """Add a batch's statistics (from StatisticsWriter.prepare) inside the caller's transaction."""
    if prepared is not None:
        db.execute(_UPSERT_POSTGRES if dialect(db) == "postgres" else _UPSERT_SQLITE, (prepared,))


# --------------------------------------------------------------------------- reading


#: A register's last reading before an hour and its time (µs since the epoch).
Previous = tuple[float, int]


@dataclass(frozen=True)
class Series:
    id: int
    device: str
    quantity: str
    unit: str
    channel: str
    cumulative: bool


@dataclass(frozen=True)
class HourRow:
    series: Series
    hour: int
    n: int
    total: float
    lo: float
    hi: float
    on_n: int
    first: float
    last: float
    first_us: int = 0
    last_us: int = 0

    @property
    def start(self) -> datetime:
        return hour_start(self.hour)


def in_kwh(value: float, unit: str) -> float | None:
    factor = _ENERGY_TO_KWH.get(unit.strip().lower())
    return None if factor is None else value * factor


def in_litres(value: float, unit: str) -> float | None:
    return sample_value("volume", value, unit)


class StatisticsReader:
    """Queries over one site's statistics in a state database (a connection the caller owns):
    bound to the site, since sites repeat device ids."""

    def __init__(self, db: Connection, site: str) -> None:
        self.db = db
        self.site = site
        create_schema(db, site)  # a state database from before statistics: empty tables, not errors

    def series(self, devices: Sequence[str] | None = None, quantity: str | None = None) -> dict[int, Series]:
        sql = "SELECT id, device, quantity, unit, channel, cumulative FROM statistics_series WHERE site = ?"
        args: list[Any] = [self.site]
        if quantity is not None:
            sql += " AND quantity = ?"
            args.append(quantity)
        found = {r[0]: Series(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in self.db.execute(sql, args)}
        if devices is not None:
            wanted = set(devices)
            found = {k: s for k, s in found.items() if s.device in wanted}
        return found

    def hours(self, since: datetime, until: datetime, devices: Sequence[str] | None = None,
              quantity: str | None = None) -> list[HourRow]:
        """Hour rows whose hour starts in [since, until), by series then hour."""
        known = self.series(devices, quantity)
        rows = self.db.execute(  # one primary-key range per series: never a scan of every hour ever kept
            "SELECT series, hour, n, total, lo, hi, on_n, first, last, first_us, last_us FROM statistics_hour"
            f" WHERE series IN ({bulk_ids(self.db)}) AND hour >= ? AND hour < ? ORDER BY series, hour",
            (json.dumps(sorted(known)), _ceil_hour(since), _ceil_hour(until)),
        )
        return [HourRow(known[r[0]], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]

    def last_before(self, series_ids: Iterable[int], before: datetime) -> dict[int, Previous]:
        """Each register's last reading in an hour before `before` and its time (µs since the epoch)."""
        bound = _ceil_hour(before)
        out: dict[int, Previous] = {}
        for sid in series_ids:
            row = self.db.execute("SELECT last, last_us FROM statistics_hour WHERE series = ? AND hour < ?"
                                  " ORDER BY hour DESC LIMIT 1", (sid, bound)).fetchone()
            if row is not None:
                out[sid] = (row[0], row[1])
        return out

    def first_in(self, series_ids: Iterable[int], since: datetime, until: datetime) -> dict[int, float]:
        """Each register's first reading in [since, until), for meters with nothing before."""
        out: dict[int, float] = {}
        for sid in series_ids:
            row = self.db.execute(
                "SELECT first FROM statistics_hour WHERE series = ? AND hour >= ? AND hour < ? ORDER BY hour LIMIT 1",
                (sid, _ceil_hour(since), _ceil_hour(until)),
            ).fetchone()
            if row is not None:
                out[sid] = row[0]
        return out

    def resets(self, since: datetime, until: datetime) -> dict[int, int]:
        """Per register, the hours in [since, until) where it went down (reset, rollover,
        replaced meter): its difference is then not its consumption."""
        rows = self.db.execute(
            "SELECT series, count(*) FROM (SELECT series, first, last,"
            " lag(last) OVER (PARTITION BY series ORDER BY hour) AS before FROM statistics_hour"
            " WHERE hour >= ? AND hour < ?"
            " AND series IN (SELECT id FROM statistics_series WHERE site = ? AND cumulative = 1)) AS hours"
            " WHERE last < first OR first < before GROUP BY series", (_ceil_hour(since), _ceil_hour(until), self.site),
        )
        return {r[0]: r[1] for r in rows}


def _ceil_hour(when: datetime) -> int:
    """The first hour starting at or after `when`."""
    return -(-epoch_us(when) // HOUR_US)


# --------------------------------------------------------------------------- derived figures


@dataclass(frozen=True)
class MeterReading:
    """A meter's register at the start and end of a period and what it counted between:
    their difference, or, when the register went down (replaced, reset, rolled over), the
    sum of its parts (`used`), since a difference across a drop is negative or wrong."""

    series: Series
    start: float | None
    end: float | None
    resets: int
    used: float | None = None
    #: No reading in the period: what it used is unknown, not 0 (its end is its last reading before).
    silent: bool = False
    #: When `end` was read: hours before the period's end, readings may still come (a backlog).
    end_at: datetime | None = None

    @property
    def consumption(self) -> float | None:
        if self.silent:
            return None
        if self.used is not None:
            return self.used
        return None if self.start is None or self.end is None else self.end - self.start


def hour_use(previous: Previous | None, row: HourRow) -> tuple[float, bool]:
    """What a register counted in its hour `row` after the reading `previous` (None: from the
    hour's first), and whether it was replaced. A drop before the hour (a new meter's first
    reading below the old one's last) counts the new meter's part, last - first; a drop
    inside it counts the old meter's part up to its highest reading and the new meter's
    from its lowest. A water register jumping up faster than any meter runs (rules/water.py
    MAX_FLOW_L_PER_MIN: a meter replaced by one reading higher) is a replacement too. What
    was used between the old meter's last and the new one's first reading is not guessed."""
    start = row.first if previous is None else previous[0]
    if row.last < row.first:
        return max(row.hi - start, 0.0) + (row.last - row.lo), True
    jumped = previous is not None and _too_fast(row.series, row.first - start, row.first_us - previous[1])
    if row.first < start or jumped:
        return row.last - row.first, True
    return row.last - start, False


def _too_fast(series: Series, step: float, elapsed_us: int) -> bool:
    """A volume register's step above the largest flow a meter runs at over `elapsed_us`."""
    litres = in_litres(step, series.unit) if series.quantity == "volume" else None
    minutes = max(elapsed_us, 0) / 60e6
    return litres is not None and litres > MAX_FLOW_L_PER_MIN * max(minutes, 1.0)


def _used_across_drops(reader: StatisticsReader, before: dict[int, Previous], since: datetime, until: datetime,
                       devices: Sequence[str] | None) -> dict[int, float]:
    """Per register replaced in [since, until) (or below its reading `before` it): the sum of its parts."""
    used: dict[int, float] = {}
    dropped: set[int] = set()
    previous = dict(before)
    for row in reader.hours(since, until, devices):
        sid = row.series.id
        if not row.series.cumulative:
            continue
        part, down = hour_use(previous.get(sid), row)
        used[sid] = used.get(sid, 0.0) + part
        previous[sid] = (row.last, row.last_us)
        if down:
            dropped.add(sid)
    return {sid: used[sid] for sid in dropped}


def meter_readings(reader: StatisticsReader, since: datetime, until: datetime,
                   devices: Sequence[str] | None = None) -> list[MeterReading]:
    """Start and end register of every cumulative series with data up to `until`: start is
    the last reading before `since` (else the first after it), end the last before `until`;
    a register that went down is summed in parts, one with no reading in the period is `silent`
    (MeterReading). Bounds are UTC hours: exact for zones with whole-hour offsets."""
    meters = {k: s for k, s in reader.series(devices).items() if s.cumulative}
    ends = reader.last_before(meters, until)
    before = reader.last_before(ends, since)
    firsts = reader.first_in(ends, since, until)
    starts = {**firsts, **{sid: value for sid, (value, _) in before.items()}}
    resets = reader.resets(since, until)
    used = _used_across_drops(reader, before, since, until, devices)
    return [MeterReading(meters[sid], starts.get(sid), ends[sid][0], max(resets.get(sid, 0), int(sid in used)),
                         used.get(sid), silent=sid not in firsts, end_at=_EPOCH + timedelta(microseconds=ends[sid][1]))
            for sid in sorted(ends, key=lambda k: (meters[k].device, meters[k].quantity, meters[k].channel))]


def silent_meters(reader: StatisticsReader, site: SiteConfig, since: datetime, until: datetime) -> list[str]:
    """The site's meters (devices of the site file with a register) with no reading in
    [since, until): a report says their data is missing rather than 0 consumption."""
    _same_site(reader, site)
    meters = {sid: s for sid, s in reader.series().items() if s.cumulative and site.locate(s.device) is not None}
    heard = {meters[sid].device for sid in reader.first_in(meters, since, until)}
    return sorted({s.device for s in meters.values()} - heard)


@dataclass
class DeviceDay:
    """Derived figures of one device over a period."""

    device: str
    energy_kwh: float = 0.0
    after_hours_kwh: float = 0.0
    water_litres: float = 0.0
    on_minutes: float = 0.0
    readings: int = 0


def device_totals(reader: StatisticsReader, site: SiteConfig, since: datetime, until: datetime) -> dict[str, DeviceDay]:
    """Energy (register differences per hour), after-hours energy (hours whose middle the
    device's room schedule leaves unoccupied), water, on-minutes and reading counts."""
    _same_site(reader, site)
    rows = reader.hours(since, until)
    previous = reader.last_before({r.series.id for r in rows if r.series.cumulative}, since)
    spans = ScheduleSpans(site)
    out: dict[str, DeviceDay] = {}
    for row in rows:  # by series, then hour
        s = row.series
        day = out.setdefault(s.device, DeviceDay(s.device))
        day.readings += row.n
        if s.quantity == "power" and row.n:
            day.on_minutes += 60.0 * row.on_n / row.n
        if not s.cumulative:
            continue
        delta, _ = hour_use(previous.get(s.id), row)
        previous[s.id] = (row.last, row.last_us)
        if s.quantity == "energy" and (kwh := in_kwh(delta, s.unit)) is not None:
            day.energy_kwh += kwh
            location = site.locate(s.device)
            middle = row.start + timedelta(minutes=30)
            if not spans.is_scheduled(location.schedule if location else None, middle):
                day.after_hours_kwh += kwh
        elif s.quantity == "volume" and (litres := in_litres(delta, s.unit)) is not None:
            day.water_litres += litres
    return out


def daily(reader: StatisticsReader, site: SiteConfig, since: datetime, until: datetime,
          devices: Sequence[str] | None = None, quantity: str | None = None) -> list[dict[str, Any]]:
    """Hour rows folded per series and local date (a DST day has 23 or 25 hours)."""
    _same_site(reader, site)
    zone = site.zone
    days: dict[tuple[int, date], dict[str, Any]] = {}
    for row in reader.hours(since, until, devices, quantity):
        key = (row.series.id, row.start.astimezone(zone).date())
        d = days.get(key)
        if d is None:
            days[key] = d = {**_series_json(row.series), "day": key[1].isoformat(), "hours": 0, "n": 0, "total": 0.0,
                             "min": row.lo, "max": row.hi, "on_n": 0, "first": row.first, "last": row.last}
        d["hours"] += 1
        d["n"] += row.n
        d["total"] += row.total
        d["min"], d["max"] = min(d["min"], row.lo), max(d["max"], row.hi)
        d["on_n"] += row.on_n
        d["last"] = row.last
    for d in days.values():
        d["mean"] = d["total"] / d["n"] if d["n"] else None
    return list(days.values())


def _same_site(reader: StatisticsReader, site: SiteConfig) -> None:
    """A site's schedules judged against another site's meters would be silently wrong."""
    if reader.site != site.id:
        raise ValueError(f"statistics of site {reader.site!r} read with the site file of {site.id!r}")


def hour_json(row: HourRow) -> dict[str, Any]:
    return {**_series_json(row.series), "hour": row.start.isoformat(), "n": row.n, "min": row.lo, "max": row.hi,
            "mean": row.total / row.n if row.n else None, "on_n": row.on_n, "first": row.first, "last": row.last}


def _series_json(s: Series) -> dict[str, Any]:
    return {"device": s.device, "quantity": s.quantity, "unit": s.unit, "channel": s.channel or None,
            "cumulative": s.cumulative}
