"""Historian throughput: points/s through the InfluxDB historian (on-disk spool, then
influxdb-client) into a real server speaking the InfluxDB v2 write API (VictoriaMetrics),
and through the embedded SQLite historian. Baseline in the same run: posting the same
points as pre-built line protocol straight to the server.

    python -m bench.historian [--points N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from gateway.config import InfluxHistorianConfig
from gateway.historian.influx import InfluxHistorian
from gateway.historian.points import event_points
from gateway.historian.sqlite import SqliteHistorian
from tests.support.victoria import VictoriaMetrics, find_binary
from warden.config import SiteConfig
from warden.events import Reading, stable_event_id

T0 = datetime(2026, 11, 17, 20, 0, tzinfo=timezone.utc)
SITE = SiteConfig.model_validate(
    {"id": "bench", "timezone": "UTC", "buildings": [{"id": "B", "rooms": [{"id": f"R{i}", "devices": [f"m-{i}"]} for i in range(100)]}]}
)
GATEWAY_BATCH = 1000  # events per historian.write(), as the gateway hands them over


def readings(count: int, offset: int = 0) -> list[Reading]:
    return [
        Reading(
            id=stable_event_id("hist", offset + n), site="bench", device=f"m-{n % 100}",
            event_time=T0 + timedelta(milliseconds=offset + n), quantity="power", value=float(n % 1000), unit="W",
        )
        for n in range(count)
    ]


def line_protocol(events: list[Reading]) -> list[str]:
    lines = []
    for point in event_points(events, SITE):
        tags = ",".join(f"{k}={v}" for k, v in sorted(point.tags.items()))
        fields = ",".join(f"{k}={v}" for k, v in point.fields.items())
        ns = int(point.time.timestamp()) * 1_000_000_000 + point.time.microsecond * 1000
        lines.append(f"{point.measurement},{tags} {fields} {ns}")
    return lines


def direct_post(url: str, lines: list[str], batch: int) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(0, len(lines), batch):
            client.post("/api/v2/write", params={"bucket": "bench", "org": "-", "precision": "ns"}, content="\n".join(lines[i : i + batch])).raise_for_status()
    return time.perf_counter() - start


def through_influx_historian(url: str, events: list[Reading], work: Path, batch: int) -> float:
    config = InfluxHistorianConfig(type="influxdb", url=url, bucket="bench", batch_size=batch, flush_interval_ms=100, spool_path=work / "spool.db")
    historian = InfluxHistorian(config, SITE)
    start = time.perf_counter()
    for i in range(0, len(events), GATEWAY_BATCH):
        historian.write(events[i : i + GATEWAY_BATCH])
    if not historian.flush(timeout=600):
        raise RuntimeError("the spool did not drain")
    elapsed = time.perf_counter() - start
    historian.close()
    return elapsed


def through_sqlite_historian(events: list[Reading], work: Path) -> float:
    historian = SqliteHistorian(work / "history.db", SITE)
    start = time.perf_counter()
    for i in range(0, len(events), GATEWAY_BATCH):
        historian.write(events[i : i + GATEWAY_BATCH])
    elapsed = time.perf_counter() - start
    historian.close()
    return elapsed


def run(points: int, batch: int) -> list[tuple[str, float]]:
    binary = find_binary()
    if binary is None:
        raise SystemExit("victoria-metrics is not installed (scripts/install-system-packages.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "vm").mkdir()
        server = VictoriaMetrics(binary, work / "vm")
        server.start()
        try:
            baseline = points / direct_post(server.url, line_protocol(readings(points)), batch)
            influx = points / through_influx_historian(server.url, readings(points, offset=points), work, batch)
        finally:
            server.stop()
        embedded = points / through_sqlite_historian(readings(points), work)
    return [
        ("pre-built line protocol posted directly (baseline)", baseline),
        ("InfluxDB historian: spool on disk -> influxdb-client", influx),
        ("embedded SQLite historian", embedded),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000, help="points per HTTP request")
    args = parser.parse_args()
    results = run(args.points, args.batch)
    baseline = results[0][1]
    print(f"{'path':<56} {'points/s':>10} {'ratio':>6}")
    for name, rate in results:
        print(f"{name:<56} {rate:>10.0f} {rate / baseline:>6.2f}")


if __name__ == "__main__":
    main()
