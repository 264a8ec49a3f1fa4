"""GET /api/overview at district size: one row per site (open alerts by severity, today's
after-hours waste, last night's patrol compliance, silent devices), each read per site.

    python -m bench.overview [--sites 50] [--devices 20] [--requests 20]

A gateway of `--sites` schools, `--devices` devices each (the device ids repeat across
sites, as in a district), its API on loopback, its state in SQLite (or `--state-db
postgresql://...`). Each site has 4 open after-hours alerts with their energy, 1 silent
device (deadman) and 1 acknowledged water alert; the historian holds one reading of every
device so the device list's history look-ups find something. Timed over real HTTP with the
district manager's token: the overview (every site), and as baselines in the same run
GET /api/sites (the same request path and auth, no store reads) and one school's overview
(a token of one site); the figures are medians, the ratios are what docs/benchmarks.md keeps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median

import httpx

from gateway.api import ApiServer, create_app
from gateway.auth import hash_token
from gateway.config import GatewayConfig
from gateway.service import Gateway
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.config import RulesConfig
from warden.clock import ManualClock
from warden.config import SiteConfig
from warden.events import Reading, stable_event_id

NOW = datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)  # 07:00 in Berlin, the morning after
DISTRICT = "wdn_bench-district-0123456789abcdefghijklmnop"
SCHOOL = "wdn_bench-school-0123456789abcdefghijklmnopqr"


def school(index: int, devices: int) -> SiteConfig:
    return SiteConfig.model_validate({
        "id": f"school-{index:03d}", "timezone": "Europe/Berlin",
        "tariff": {"energy_per_kwh": 0.30, "currency": "EUR"},
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "A", "rooms": [{"id": f"A-{r}", "schedule": "school-day",
                                              "devices": [f"ac-{r}-{d}" for d in range(10)]}
                                             for r in range(devices // 10)]}],
    })  # fmt: skip


def rules() -> RulesConfig:
    return RulesConfig.model_validate({
        "ac_after_hours": {"standby_watts": 60, "grace_minutes": 15},
        "patrol": {"routes": [{"id": "night", "checkpoints": ["cp-1", "cp-2", "cp-3"], "rounds": ["23:30"]}]},
    })  # fmt: skip


def signals(site: SiteConfig) -> list[AlertSignal]:
    """Per site: 4 after-hours alerts with 2 kWh each, a silent device, a water alert (acknowledged later)."""
    devices = [d for b in site.buildings for r in b.rooms for d in r.devices]
    evening = NOW - timedelta(hours=10)
    out = [AlertSignal(site.id, "ac_after_hours", devices[i], SignalAction.RAISE, evening, Severity.WARNING,
                       "AC on after hours", {"energy_kwh": 2.0, "room": "A-0"}) for i in range(4)]
    out.append(AlertSignal(site.id, "deadman", devices[5], SignalAction.RAISE, evening, Severity.WARNING, "silent",
                           {"last_event": (evening - timedelta(hours=1)).isoformat()}))
    out.append(AlertSignal(site.id, "water_burst", "meter-main", SignalAction.RAISE, evening, Severity.CRITICAL, "burst"))
    return out


def build(folder: Path, sites: int, devices: int, state_db: str | None) -> Gateway:
    schools = [school(i, devices) for i in range(sites)]
    config = GatewayConfig.model_validate({
        "id": "bench-overview", "site_file": str(folder / "site.yaml"),
        "broker": {"host": "127.0.0.1", "port": 1},  # never connected: the gateway is not started
        "historian": {"type": "sqlite", "path": str(folder / "history.db")},
        "state_db": state_db or str(folder / "state.db"),
        "work_orders": {"photo_dir": str(folder / "photos")},
        "api": {"host": "127.0.0.1", "port": 0, "tokens": [
            {"name": "district", "role": "manager", "sha256": hash_token(DISTRICT)},
            {"name": "school", "role": "manager", "sites": [schools[0].id], "sha256": hash_token(SCHOOL)}]},
    })  # fmt: skip
    gateway = Gateway(config, [(s, rules()) for s in schools], ManualClock(NOW), tick_every=None)
    for site in schools:
        changes = gateway.store.commit_batch([], signals(site), {})
        water = next(c.alert.id for c in changes if c.alert.rule == "water_burst")
        gateway.store.acknowledge(water, by="bench")
        readings = [Reading(id=stable_event_id(site.id, d), site=site.id, device=d, event_time=NOW - timedelta(hours=2),
                            quantity="power", value=5.0, unit="W")
                    for b in site.buildings for r in b.rooms for d in r.devices]
        gateway.historian.write(readings)
    return gateway


def timed(client: httpx.Client, path: str, requests: int) -> tuple[float, int]:
    """Median milliseconds of `requests` GETs of `path` (after one warm-up) and the rows of the last."""
    client.get(path).raise_for_status()
    times, rows = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        rows = len(answer.json())
    return median(times), rows


def measure(sites: int, devices: int, requests: int, state_db: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        gateway = build(Path(tmp), sites, devices, state_db)
        server = ApiServer(create_app(gateway), "127.0.0.1", 0)
        server.start()
        try:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {DISTRICT}"}, timeout=60) as district, \
                    httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {SCHOOL}"}, timeout=60) as one:
                overview, rows = timed(district, "/api/overview", requests)
                assert rows == sites, rows
                listing, _ = timed(district, "/api/sites", requests)
                single, _ = timed(one, "/api/overview", requests)
        finally:
            server.stop()
            gateway.store.close()
            gateway.historian.close()
    return {"overview_ms": overview, "sites_ms": listing, "one_site_ms": single}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--devices", type=int, default=20, help="devices per site (a multiple of 10)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--state-db", default=None, help="a postgresql:// URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    figures = measure(args.sites, args.devices, args.requests, args.state_db)
    print(f"GET /api/overview, {args.sites} sites x {args.devices} devices, median of {args.requests}:")
    print(f"  all sites       {figures['overview_ms']:8.1f} ms  ({figures['overview_ms'] / figures['sites_ms']:.1f} x GET /api/sites"
          f" at {figures['sites_ms']:.1f} ms)")
    print(f"  one site        {figures['one_site_ms']:8.1f} ms  (all sites = {figures['overview_ms'] / figures['one_site_ms']:.1f}"
          f" x one site; per site {figures['overview_ms'] / args.sites:.1f} ms)")


if __name__ == "__main__":
    main()
