"""Long-term statistics: bytes stored per reading (raw SQLite historian and hourly
statistics), the year of a big site, the reports' time, and what statistics cost ingest.

    python -m bench.statistics [--devices 2000] [--ingest-messages 2000] [--skip-ingest]

- bytes: `--devices` meters, one reading a minute, written through SqliteHistorian.write
  in gateway-sized batches (raw) and through StatisticsWriter.prepare/apply (statistics);
  bytes are the database's used pages (page_count - freelist_count) * page_size.
- reports: a month of hourly statistics for `--devices` meters (half energy registers,
  half power gauges), then the daily report (gateway/report_jobs.daily_report: the morning
  report from alerts plus its statistics section, no raw points) and the monthly report
  (build_monthly_report) timed on it.
- ingest: the gateway draining the same backlog from Mosquitto with statistics on and
  off (bench/ingest.py's consumer), alternated twice: the ratio is the cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from statistics import median

from gateway import statistics
from gateway.config import GatewayConfig
from gateway.historian.sqlite import SqliteHistorian
from gateway.monthly import build_monthly_report
from gateway.report_jobs import daily_report
from gateway.store import StateStore
from warden.config import SiteConfig
from warden.events import Reading, stable_event_id

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
BATCH = 1000
MINUTES_A_YEAR = 365 * 24 * 60
HOURS_A_YEAR = 365 * 24


def site(devices: int) -> SiteConfig:
    """A campus: 20 buildings, rooms of 10 meters, each room a tenant group."""
    rooms = [{"id": f"room-{r:04d}", "schedule": "office", "group": f"tenant-{r % 50:02d}",
              "devices": [f"meter-{d:05d}" for d in range(r * 10, min(r * 10 + 10, devices))]}
             for r in range((devices + 9) // 10)]
    buildings = [{"id": f"building-{b:02d}", "rooms": rooms[b::20]} for b in range(20)]
    return SiteConfig.model_validate({"id": "campus", "timezone": "Asia/Shanghai",
                                      "schedules": {"office": [{"days": "mon-fri", "hours": "08:00-18:00"}]},
                                      "buildings": [b for b in buildings if b["rooms"]]})  # fmt: skip


def used_bytes(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size"))
        return int((pages - free) * size)
    finally:
        db.close()


def minute_readings(devices: int, minute: int) -> list[Reading]:
    """One reading per meter at `minute`: even meters an energy register, odd ones power."""
    at = T0 + timedelta(minutes=minute)
    out = []
    for d in range(devices):
        energy = d % 2 == 0
        out.append(Reading(id=stable_event_id("campus", d, minute), site="campus", device=f"meter-{d:05d}", event_time=at,
                           quantity="energy" if energy else "power", value=1000.0 + minute * 0.01 if energy else 800.0 + d % 7,
                           unit="kWh" if energy else "W", cumulative=energy))
    return out


def bytes_per_reading(devices: int, minutes: int, folder: Path) -> tuple[float, float, float]:
    """Raw bytes/reading, statistics bytes/hour row, statistics bytes/reading (60 a row)."""
    the_site = site(devices)
    raw = SqliteHistorian(folder / "history.db", the_site)
    store = StateStore(folder / "state.db")
    store.read(statistics.create_schema)
    pending: list[Reading] = []
    writer = statistics.StatisticsWriter(60.0)
    count = 0
    for minute in range(minutes):
        pending += minute_readings(devices, minute)
        while len(pending) >= BATCH:
            batch, pending = pending[:BATCH], pending[BATCH:]
            raw.write(batch)
            prepared = writer.prepare(store.write, batch)
            store.commit_batch([], [], None, also=lambda db, p=prepared: statistics.apply(db, p))
            count += len(batch)
    raw.close()
    before = used_bytes(folder / "empty.db") if (folder / "empty.db").exists() else 0
    rows = store.read(lambda db: db.execute("SELECT count(*) FROM statistics_hour").fetchone()[0])
    stats_bytes = store.read(lambda db: db.execute(
        "SELECT sum(pgsize - unused) FROM dbstat WHERE name IN ('statistics_hour', 'statistics_series', "
        "'sqlite_autoindex_statistics_series_1')").fetchone()[0])
    store.close()
    return (used_bytes(folder / "history.db") - before) / count, stats_bytes / rows, stats_bytes / count


def month_of_statistics(devices: int, path: Path) -> StateStore:
    """30 days of hour rows for every meter, written as the gateway would (one apply per
    batch of rows); the rows are built directly (60 readings folded) to save time."""
    store = StateStore(path)
    store.read(statistics.create_schema)
    hour0 = statistics.hour_index(T0)
    keys = [("campus", f"meter-{d:05d}", "energy", "kWh", "", 1) if d % 2 == 0
            else ("campus", f"meter-{d:05d}", "power", "W", "", 0)
            for d in range(devices)]
    ids = store.write(lambda db: statistics._series_ids(db, keys))
    for hour in range(hour0 - 24, hour0 + 31 * 24):
        rows = []
        for d, key in enumerate(keys):
            first_us = hour * statistics.HOUR_US
            if d % 2 == 0:
                start = 1000.0 + (hour - hour0) * 0.5
                rows.append([ids[key], hour, 60, start * 60, start, start + 0.49, 0, first_us, start,
                             first_us + 59 * 60_000_000, start + 0.49])
            else:
                rows.append([ids[key], hour, 60, 48_000.0, 700.0, 900.0, 40, first_us, 800.0,
                             first_us + 59 * 60_000_000, 800.0])
        store.commit_batch([], [], None, also=lambda db, p=json.dumps(rows): statistics.apply(db, p))
    return store


def report_times(devices: int, folder: Path) -> tuple[float, float]:
    the_site = site(devices)
    store = month_of_statistics(devices, folder / "month.db")
    config = GatewayConfig.model_validate({"site_file": str(folder / "site.yaml"), "state_db": str(folder / "month.db")})
    started = time.perf_counter()
    data = daily_report(store, None, the_site, config, date(2026, 11, 17))  # alerts + statistics, no raw points
    daily = time.perf_counter() - started
    assert len(data["statistics"]["devices"]) == devices
    started = time.perf_counter()
    report = build_monthly_report(store, the_site, "2026-11")
    monthly = time.perf_counter() - started
    assert len(report["meters"]) == devices // 2 + devices % 2
    store.close()
    return daily, monthly


def ingest_cost(messages: int, devices: int, rounds: int = 3) -> list[tuple[str, float, float]]:
    """readings/s of the gateway with statistics off and on, alternated `rounds` times, and
    the gateway process's CPU µs per reading (user + system; Mosquitto is another process):
    on a shared machine the CPU per reading is the steadier figure."""
    from bench import ingest
    from gateway.service import Gateway
    from simulators.broker import MosquittoBroker
    from warden.clock import ManualClock
    from warden.config import BrokerConfig

    results = []
    data = ingest.payloads(messages, 100, devices)
    expected = messages * 100
    for run, enabled in enumerate([False, True] * rounds):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            broker = MosquittoBroker(workdir=work / "mq", extra_config=ingest.BROKER_TUNING)
            try:
                broker_config = BrokerConfig(host=broker.host, port=broker.port)
                config = GatewayConfig.model_validate({
                    "id": f"bench-gw-{run}", "site_file": str(work / "site.yaml"), "broker": broker_config.model_dump(),
                    "historian": {"type": "sqlite", "path": str(work / "history.db")}, "state_db": str(work / "state.db"),
                    "statistics": {"enabled": enabled}})  # fmt: skip
                clock = ManualClock(ingest.T0 + timedelta(days=1))
                first = Gateway(config, ingest.site(devices), clock)
                first.start()
                first.subscribed.wait(10)
                first.stop()
                ingest.enqueue(broker_config, data)
                started, cpu = time.perf_counter(), _cpu_seconds()
                gateway = Gateway(config, ingest.site(devices), clock)
                gateway.start()
                gateway.wait_until(lambda: gateway.events_stored >= expected, timeout=600)
                elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
                gateway.stop()
            finally:
                broker.stop()
        results.append(("on" if enabled else "off", expected / elapsed, cpu / expected * 1e6))
    return results


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--minutes", type=int, default=120, help="minutes of readings for the bytes measurement")
    parser.add_argument("--ingest-messages", type=int, default=2000, help="messages of 100 readings for the ingest cost")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs of ingest runs")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, per_row, per_reading = bytes_per_reading(args.devices, args.minutes, Path(tmp))
    print(f"bytes: raw {raw:.1f} B/reading; statistics {per_row:.1f} B/hour row = {per_row / 60:.2f} B/reading at 1/min")
    raw_30 = args.devices * 30 * 24 * 60 * raw
    stats_year = args.devices * HOURS_A_YEAR * per_row
    print(f"year of {args.devices} devices at 1/min: raw 30 days {raw_30 / 1e9:.2f} GB + statistics {stats_year / 1e9:.2f} GB"
          f" = {(raw_30 + stats_year) / 1e9:.2f} GB (raw kept a year: {args.devices * MINUTES_A_YEAR * raw / 1e9:.0f} GB)")
    with tempfile.TemporaryDirectory() as tmp:
        daily, monthly = report_times(args.devices, Path(tmp))
    print(f"reports from statistics, {args.devices} devices: daily report {daily:.2f} s, monthly report {monthly:.2f} s")
    if not args.skip_ingest:
        results = ingest_cost(args.ingest_messages, args.devices, args.rounds)
        for name, rate, cpu_us in results:
            print(f"ingest statistics {name:>3}: {rate:,.0f} readings/s, {cpu_us:.1f} µs CPU a reading")
        off = [r for n, r, _ in results if n == "off"]
        on = [r for n, r, _ in results if n == "on"]
        cpu_off = [c for n, _, c in results if n == "off"]
        cpu_on = [c for n, _, c in results if n == "on"]
        print(f"ingest cost of statistics: throughput {1 - median(on) / median(off):.1%}, "
              f"CPU a reading {median(cpu_on) / median(cpu_off) - 1:.1%} (medians of {args.rounds} runs each)")


if __name__ == "__main__":
    main()
