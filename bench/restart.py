"""Restart: from a gateway's start to ingesting, holding 10 000 devices' rule state.

The gateway's rule state is a snapshot (every few seconds) plus a journal of the batches
since (gateway/service.py: JOURNAL_MAX_EVENTS bounds it). Here both are at their limit:
a snapshot holding every device's state, then a journal of JOURNAL_MAX_EVENTS - 1 events
(the snapshot interval is lifted for the fill, so nothing but the event limit would end
the journal). Measured: the time from constructing the gateway to the first new reading
stored, against the same gateway started on an empty state in the same run.

    python -m bench.restart [--devices 10000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import gateway.service as service
from bench.catch_up import Publisher, minute_of_readings
from bench.ingest import BROKER_TUNING, site
from gateway.config import GatewayConfig
from gateway.service import Gateway
from simulators.broker import MosquittoBroker
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig

T0 = datetime(2026, 11, 17, 19, 0, tzinfo=timezone.utc)


def config_in(workdir: Path, broker: BrokerConfig, name: str) -> GatewayConfig:
    workdir.mkdir(parents=True, exist_ok=True)
    return GatewayConfig.model_validate(
        {"id": name, "site_file": str(workdir / "site.yaml"), "broker": broker.model_dump(),
         "historian": {"type": "sqlite", "path": str(workdir / "history.db")}, "state_db": str(workdir / "state.db")}
    )


def fill(config: GatewayConfig, the_site: SiteConfig, broker: BrokerConfig, devices: int, crash_image: Path) -> tuple[int, int]:
    """A snapshot of every device's state, then a journal near its event limit, copied into
    `crash_image` while the gateway runs (a clean stop would snapshot and empty the journal:
    this is the state a crash leaves); (journal entries, journal events) in the copy."""
    clock = ManualClock(T0 + timedelta(minutes=span_minutes(devices)))  # every fill reading is in the past
    gateway = Gateway(config, the_site, clock)
    gateway.start()
    gateway.subscribed.wait(10)
    agent = Publisher(broker, "bench-restart-agent")
    agent.send(minute_of_readings(0, devices, 0))
    gateway.wait_until(lambda: gateway.events_stored >= devices, timeout=600)
    time.sleep(service.SNAPSHOT_SECONDS + 0.5)  # a bench, not a test: let the snapshot interval pass
    agent.send(minute_of_readings(1, devices, 0))  # this batch commits the snapshot of every device
    gateway.wait_until(lambda: gateway.events_stored >= 2 * devices, timeout=600)
    service.SNAPSHOT_SECONDS = 1e9  # from here on, only the event limit would end the journal
    minute, journalled = 2, 0
    while journalled + 2 * devices < service.JOURNAL_MAX_EVENTS:  # stay below it: reaching it snapshots
        agent.send(minute_of_readings(minute, devices, 0))
        journalled += devices
        minute += 1
    if not gateway.wait_until(lambda: gateway.events_stored >= minute * devices, timeout=600):
        raise RuntimeError(f"stored {gateway.events_stored} of {minute * devices}: {gateway.counts()}")
    crash_image.mkdir(parents=True, exist_ok=True)
    for name in ("state.db", "history.db"):  # SQLite's online backup: a consistent copy of a live file
        with sqlite3.connect(config.state_db.parent / name) as source, sqlite3.connect(crash_image / name) as copy:
            source.backup(copy)
    agent.close()
    gateway.stop()
    with sqlite3.connect(crash_image / "state.db") as copy:
        entries = copy.execute("SELECT count(*) FROM rule_journal").fetchone()[0]
    return entries, journalled


def span_minutes(devices: int) -> int:
    """Minutes of readings the fill sends (one a minute per device), with room to spare."""
    return service.JOURNAL_MAX_EVENTS // devices + 10


def start_to_ingest(config: GatewayConfig, the_site: SiteConfig, broker: BrokerConfig, minute: int) -> float:
    """Seconds from constructing the gateway to its first new reading stored."""
    agent = Publisher(broker, "bench-restart-live")
    started = time.perf_counter()
    gateway = Gateway(config, the_site, ManualClock(T0 + timedelta(minutes=minute + 5)))
    gateway.start()
    before = gateway.events_stored
    agent.send(minute_of_readings(minute, 1, 0))  # 5 min behind the gateway's clock
    if not gateway.wait_until(lambda: gateway.events_stored > before, timeout=600):
        raise RuntimeError(f"the reading was not stored: {gateway.counts()}")
    elapsed = time.perf_counter() - started
    gateway.stop()
    agent.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    the_site = site(args.devices)
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mq", extra_config=BROKER_TUNING)
        try:
            mqtt = BrokerConfig(host=broker.host, port=broker.port)
            last = span_minutes(args.devices)
            empty = start_to_ingest(config_in(Path(tmp) / "empty", mqtt, "bench-empty"), the_site, mqtt, last)
            fill_config = config_in(Path(tmp) / "fill", mqtt, "bench-full")
            full_config = config_in(Path(tmp) / "full", mqtt, "bench-full")  # the same session, the crash image
            entries, events = fill(fill_config, the_site, mqtt, args.devices, Path(tmp) / "full")
            full = start_to_ingest(full_config, the_site, mqtt, last + 1)
        finally:
            broker.stop()
    print(f"rule state: {args.devices} devices in the snapshot, then a journal of {entries} batches, {events} events "
          f"(limit {service.JOURNAL_MAX_EVENTS})")
    print(f"{'gateway start to first reading stored':<52} {'seconds':>8} {'ratio':>7}")
    print(f"{'empty state (baseline)':<52} {empty:>8.2f} {1.0:>7.1f}")
    print(f"{'snapshot and journal at their limits':<52} {full:>8.2f} {full / empty:>7.1f}")


if __name__ == "__main__":
    main()
