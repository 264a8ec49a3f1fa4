"""A district of many sites (issue 21): S schools x D devices, each its own site, zone,
calendar, agent, edge broker and incidents, and the files a real installation of it has.

Each site is a simulators/district.py district of its own (one device per room, every
device type, incidents drawn from the seed and the site id) with a site of its own:
most schools are in Asia/Shanghai, one in Asia/Tokyo and one in Australia/Eucla (UTC+8:45,
a quarter-hour offset catches zone bugs); every third school is a boarding school whose
classrooms are used until 21:30 (evening self-study); every fifth keeps its founding day
on the night's Tuesday, a holiday in its own calendar. Every night covers the same UTC
span, so one gateway clock ticks them all: 19:00 in Shanghai is 20:00 in Tokyo.

The ground truth of each site follows from its incidents (simulators/ground_truth.py),
never from the rules. `agent_events` is what the site's agent would publish: the night's
emissions through the agent's own drivers, in process (simulators/replay.py DriverBank).

`write_district` writes the site files, agent configs, ground truths, each edge broker's
bridge section (the shipped deploy/bridge/edge-bridge.conf, one connection per site it
carries) and one gateway config per partition (every site listed, `partition:` keeps its
share; gateway/sites.py) plus a standby config sharing that partition's state.
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from simulators.base import Emission, epoch, utc
from simulators.district import district_scenario
from simulators.ground_truth import ground_truth_document, write_ground_truth
from simulators.replay import DriverBank, EmissionClock
from simulators.scenario import Scenario
from simulators.timeline import Night
from simulators.wiring import agent_config, write_yaml
from warden.config import BrokerConfig
from warden.events import Event

#: The night every site shares, in UTC: 18:30 (Tue) to 06:30 (Wed) in Shanghai.
NIGHT_START_UTC = datetime(2026, 11, 17, 10, 30, tzinfo=timezone.utc)
NIGHT_HOURS = 12.0
#: The benchmark's shorter night, 00:00-04:30 in Shanghai: every incident of every zone
#: (01:10 to 03:40 local) still falls inside it.
SHORT_START_UTC = datetime(2026, 11, 17, 16, 0, tzinfo=timezone.utc)
SHORT_HOURS = 4.5
DEFAULT_ZONE = "Asia/Shanghai"
#: The sites that are elsewhere, by position: the second and the middle one.
OTHER_ZONES = ("Asia/Tokyo", "Australia/Eucla")
#: A building of at most this many rooms; more devices make more buildings.
MAX_ROOMS = 40
#: The shipped bridge section of a campus broker (its site id is "riverside").
BRIDGE_FILE = Path(__file__).resolve().parents[1] / "deploy" / "bridge" / "edge-bridge.conf"
SAMPLE_SITE = "riverside"


@dataclass(frozen=True)
class District:
    """The sites of a district and the edge broker each publishes to."""

    sites: list[Scenario]
    edges: int
    seed: int

    def edge_of(self, site_id: str) -> int:
        """Sites are spread over the edge brokers in order: a few campuses share one."""
        index = [s.site.id for s in self.sites].index(site_id)
        return index * self.edges // len(self.sites)

    @property
    def devices(self) -> int:
        return sum(len(s.devices) for s in self.sites)


def site_id(n: int) -> str:
    return f"school-{n:02d}"


def layout(devices: int) -> tuple[int, int]:
    """Buildings x rooms with exactly `devices` rooms: the fewest buildings of at most
    MAX_ROOMS rooms that divide it (a prime count is one long building)."""
    if devices < 1:
        raise ValueError(f"devices: expected at least 1, got {devices}")
    for buildings in range(1, devices + 1):
        if devices % buildings == 0 and devices // buildings <= MAX_ROOMS:
            return buildings, devices // buildings
    return 1, devices  # pragma: no cover - buildings == devices always fits


def zone_of(n: int, count: int) -> str:
    """Site n's zone: Tokyo for the second site, Eucla for the middle one (count >= 4)."""
    if count >= 2 and n == 1:
        return OTHER_ZONES[0]
    if count >= 4 and n == count // 2:
        return OTHER_ZONES[1]
    return DEFAULT_ZONE


def is_boarding(n: int) -> bool:
    return n % 3 == 0


def keeps_founding_day(n: int) -> bool:
    return n % 5 == 4


def site_overrides(n: int, count: int) -> dict[str, Any]:
    """Id, name, zone, schedules and calendar of site n."""
    school_day = [{"days": "mon-thu", "hours": "07:30-21:30"}, {"days": "fri", "hours": "07:30-16:30"}] if is_boarding(n) \
        else [{"days": "mon-fri", "hours": "07:30-18:00"}]  # fmt: skip
    start = NIGHT_START_UTC.date()
    holidays = [{"name": "sports day", "start": (start + timedelta(days=10 + n % 7)).isoformat(),
                 "end": (start + timedelta(days=10 + n % 7)).isoformat()}]  # fmt: skip
    if keeps_founding_day(n):
        holidays.append({"name": "founding day", "start": start.isoformat(), "end": start.isoformat()})
    calendar = {
        "name": f"school {n} calendar",
        "holidays": holidays,
        "periods": [{"name": "autumn term", "start": "2026-09-01", "end": "2027-01-22"}],
    }
    return {
        "id": site_id(n),
        "name": f"School {n}" + (" (boarding)" if is_boarding(n) else ""),
        "timezone": zone_of(n, count),
        "schedules": {"school-day": school_day, "entrance": [{"days": "mon-fri", "hours": "06:30-19:00"}]},
        "calendar": calendar,
    }


def site_scenario(
    n: int, count: int, devices: int, *, seed: int = 1, start: datetime = NIGHT_START_UTC, hours: float = NIGHT_HOURS
) -> Scenario:
    """Site n of a district of `count`: a district of `devices` rooms of its own, over
    the night from `start` (UTC)."""
    buildings, rooms = layout(devices)
    zone = zone_of(n, count)
    local_start = start.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    return district_scenario(
        buildings, rooms, seed=seed, start=local_start, hours=hours, prefix=f"s{n:02d}-",
        site=site_overrides(n, count), agent=f"agent-{site_id(n)}",
    )


def district_sites(
    count: int, devices: int, *, seed: int = 1, edges: int | None = None, start: datetime = NIGHT_START_UTC,
    hours: float = NIGHT_HOURS,
) -> District:
    """`count` sites of `devices` devices; `edges` brokers (default: one per site)."""
    if count < 1:
        raise ValueError(f"sites: expected at least 1, got {count}")
    edges = count if edges is None else max(1, min(edges, count))
    return District([site_scenario(n, count, devices, seed=seed, start=start, hours=hours) for n in range(count)], edges, seed)


def truth(scenario: Scenario, seed: int) -> dict[str, Any]:
    """The site's ground-truth document, from its incidents."""
    return ground_truth_document(scenario, seed)


def agent_events(scenario: Scenario, seed: int) -> list[tuple[float, Event]]:
    """(UTC epoch seconds it was made, event) for every event the site's agent publishes
    over the night, in order: emissions through the agent's drivers, Modbus meters polled
    every poll interval, as the replay does (simulators/replay.py)."""
    night = Night(scenario, seed)
    clock = EmissionClock(scenario.start_utc)
    out: list[tuple[float, Event]] = []
    with tempfile.TemporaryDirectory(prefix="warden-sites-") as spool:
        bank = DriverBank(night, Path(spool), clock, lambda event: out.append((epoch(clock.at), event)))
        start, end = epoch(scenario.start_utc), epoch(scenario.end_utc)
        for t, _, item in heapq.merge(_emissions(night), _polls(bank, start, end)):
            clock.at = utc(t)
            if isinstance(item, str):
                bank.drivers[item].poll(clock.at)
            else:
                bank.take(item)
    return out


def _emissions(night: Night) -> Iterator[tuple[float, int, Emission]]:
    for n, e in enumerate(night.emissions()):
        yield e.t, n, e


def _polls(bank: DriverBank, start: float, end: float) -> Iterator[tuple[float, int, str]]:
    polls = []
    for device, meter in bank.meters.items():
        period = meter.sim.spec.poll_seconds
        polls += [(start + k * period, -1, device) for k in range(int((end - start) // period) + 1)]
    return iter(sorted(polls))


# --------------------------------------------------------------------------- the files


def bridge_section(site: str, central: BrokerConfig) -> str:
    """The shipped bridge section for one campus, pointed at `central` on the loopback
    (no TLS, no password: the central broker of a simulation is anonymous)."""
    text = BRIDGE_FILE.read_text()
    for line, replacement in (
        ("address CENTRAL:8883", f"address {central.host}:{central.port}"),
        ("bridge_cafile /etc/mosquitto/central-ca.crt", ""),
        ("remote_password CHANGE-ME", ""),
        ("remote_username riverside", ""),
    ):
        if line not in text:
            raise ValueError(f"{BRIDGE_FILE}: expected the line {line!r} to rewrite")
        text = text.replace(line, replacement)
    return text.replace(SAMPLE_SITE, site)


@dataclass(frozen=True)
class DistrictFiles:
    folder: Path
    site_files: dict[str, Path]  # site id -> site file
    agent_files: dict[str, Path]
    truth_files: dict[str, Path]
    gateway_files: list[Path]  # one per partition, in partition order
    standby_files: list[Path]  # the standby of each partition, same state
    edge_files: list[Path]  # each edge broker's bridge sections


def write_district(
    district: District,
    folder: Path,
    *,
    partitions: int,
    central: BrokerConfig,
    edges: list[BrokerConfig] | None = None,
    state_dbs: list[str] | None = None,
    lease_dsn: str | None = None,
) -> DistrictFiles:
    """Write the installation: sites/, agents/, truth/, edges/, gateways/ and district.json.
    `state_dbs`: each partition's state (a postgresql:// URL: one database per partition,
    gateway/db.py), default: a SQLite file each. `edges`: the edge brokers' addresses
    (default: the central's). A standby config has the lease when `lease_dsn` is given."""
    edges = edges or [central] * district.edges
    folder.mkdir(parents=True, exist_ok=True)
    site_files, agent_files, truth_files = {}, {}, {}
    sections: list[list[str]] = [[] for _ in range(district.edges)]
    entries = []
    for scenario in district.sites:
        sid = scenario.site.id
        site_files[sid] = write_yaml(folder / "sites" / f"{sid}.yaml", scenario.site.model_dump(mode="json"))
        edge = district.edge_of(sid)
        night = Night(scenario, district.seed)
        config = agent_config(night, broker=edges[edge], buffer_path=Path(f"data/{scenario.agent}-outbox.db"),
                              ports=_ports(scenario), spool_root=Path("spool") / sid)  # fmt: skip
        agent_files[sid] = write_yaml(folder / "agents" / f"{sid}.yaml", config.model_dump(mode="json", exclude_none=True))
        truth_files[sid] = write_ground_truth(folder / "truth" / f"{sid}.json", truth(scenario, district.seed))
        sections[edge].append(bridge_section(sid, central))
        entries.append({"site_file": f"../sites/{sid}.yaml", "rules": scenario.rules.model_dump(mode="json")})
    edge_files = [_write_text(folder / "edges" / f"edge-{n}.conf", "\n".join(s)) for n, s in enumerate(sections)]
    gateway_files, standby_files = [], []
    for index in range(partitions):
        name = f"district-p{index}"
        document: dict[str, Any] = {
            "id": name,
            "sites": entries,
            "partition": {"count": partitions, "index": index},
            "broker": central.model_dump(mode="json", exclude_none=True),
            "historian": {"type": "sqlite", "path": f"../data/{name}/history.db"},
            "state_db": state_dbs[index] if state_dbs else f"../data/{name}/state.db",
            "api": {"host": "127.0.0.1", "port": 0},
        }
        if state_dbs:  # photos are files, not rows: a folder of the partition's own
            document["work_orders"] = {"photo_dir": f"../data/{name}/photos"}
        gateway_files.append(write_yaml(folder / "gateways" / f"{name}.yaml", document))
        standby = document | ({"lease": {"dsn": lease_dsn, "name": name}} if lease_dsn else {})
        standby_files.append(write_yaml(folder / "gateways" / f"{name}-standby.yaml", standby))
    manifest = {
        "seed": district.seed,
        "partitions": partitions,
        "sites": [{"id": s.site.id, "timezone": s.site.timezone, "agent": s.agent, "devices": len(s.devices),
                   "edge": district.edge_of(s.site.id)} for s in district.sites],  # fmt: skip
    }
    (folder / "district.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return DistrictFiles(folder, site_files, agent_files, truth_files, gateway_files, standby_files, edge_files)


def _ports(scenario: Scenario) -> dict[str, str]:
    """Where a campus's serial devices hang: one RS-485 bus for the meters, a line each
    for the rest (names a real agent's host would have)."""
    ports = {}
    for n, spec in enumerate(scenario.devices):
        ports[spec.device] = "/dev/ttyUSB0" if spec.type == "power_meter" else f"/dev/ttyS{n}"
    return ports


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
