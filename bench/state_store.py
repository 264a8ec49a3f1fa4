"""The cost of one batch commit (gateway/store.py commit_batch), the gateway's hot path, on
SQLite and on PostgreSQL, in the same run.

Each batch is what the gateway commits for `--batch` readings: their ids marked seen,
their hourly statistics (gateway/statistics.py) and a rule journal entry, plus an alert
raised, updated or resolved every few batches. The figure is the median per batch.

    python -m bench.state_store [--batches N] [--batch B] [--postgres]

With `--postgres` a throwaway cluster is started (simulators/postgres.py) and the ratio
PostgreSQL / SQLite is printed; that cluster runs without fsync, so the like-for-like
ratio is against SQLite without fsync (synchronous=OFF), printed with the other.
"""

from __future__ import annotations

import argparse
import statistics as stats
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway import statistics
from gateway.store import StateStore
from rules.alerts import AlertSignal, SignalAction
from warden.clock import ManualClock
from warden.events import Reading, stable_event_id

T0 = datetime(2026, 11, 17, 20, 0, tzinfo=timezone.utc)


def batch_readings(batch: int, number: int) -> list[Reading]:
    at = T0 + timedelta(seconds=number)
    return [Reading(id=stable_event_id("bench", number, n), site="bench", device=f"meter-{n % 200:03d}", event_time=at,
                    quantity="power", value=100.0 + n % 7, unit="W") for n in range(batch)]


def signals(number: int) -> list[AlertSignal]:
    """Every 4th batch an alert step: raise, update, resolve in turn."""
    if number % 4:
        return []
    action = (SignalAction.RAISE, SignalAction.RAISE, SignalAction.RESOLVE)[number // 4 % 3]
    return [AlertSignal(site="bench", rule="leak", subject=f"room-{number // 12 % 50}", action=action,
                        at=T0 + timedelta(seconds=number), message="water", details={"litres": number})]


def seconds_per_batch(target: str | Path, batches: int, batch: int, sync: bool = True) -> float:
    """The median seconds of one commit_batch against `target` (a path or a postgresql:// URL);
    `sync` False: SQLite without fsync (synchronous=OFF), as the test cluster of PostgreSQL runs."""
    store = StateStore(target, clock=ManualClock(T0))
    if not sync:
        store.read(lambda db: db.execute("PRAGMA synchronous=OFF"))
    store.read(statistics.create_schema)
    writer = statistics.StatisticsWriter(60.0)
    times = []
    try:
        for number in range(batches):
            readings = batch_readings(batch, number)
            prepared = writer.prepare(store.write, readings)
            started = time.perf_counter()
            store.commit_batch([r.id for r in readings], signals(number), None, journal_entry=b"x" * 64 * batch,
                               also=lambda db, p=prepared: statistics.apply(db, p))
            times.append(time.perf_counter() - started)
    finally:
        store.close()
    return stats.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--postgres", action="store_true", help="also against a throwaway PostgreSQL cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        lite = seconds_per_batch(Path(folder) / "state.db", args.batches, args.batch)
    print(f"sqlite: {lite * 1e3:.3f} ms per batch of {args.batch}")
    if args.postgres:
        from simulators.postgres import PostgresServer  # here: only with --postgres

        with tempfile.TemporaryDirectory() as folder:
            lite_nosync = seconds_per_batch(Path(folder) / "state.db", args.batches, args.batch, sync=False)
        server = PostgresServer()  # runs with fsync=off (tests): compared with SQLite without fsync too
        try:
            pg = seconds_per_batch(server.dsn, args.batches, args.batch)
        finally:
            server.close()
        print(f"sqlite, synchronous=OFF: {lite_nosync * 1e3:.3f} ms; postgres (fsync=off): {pg * 1e3:.3f} ms; "
              f"postgres/sqlite without fsync = {pg / lite_nosync:.2f} (with SQLite's fsync: {pg / lite:.2f})")

if __name__ == "__main__":
    main()
