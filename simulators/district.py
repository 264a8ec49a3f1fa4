"""A district of schools for benchmarks: N buildings x M rooms, one device per room.

Room roles repeat in every building, so the device count is exactly N x M and every
device type is there: room 0 is the entrance (an MQTT door controller), room 1 the
washrooms (a water meter), room 2 their floor (a leak sensor), room 3 of every tenth
building the guard post (a patrol reader, with a guard walking a route of that building's
checkpoints at 23:30 and 02:00), and every other room a classroom with an AC meter (every
fifth one a lighting circuit instead). Incidents are drawn from the seed, a few per
hundred devices: ACs left on, leaks, a forced door, a skipped checkpoint, a silent meter;
the ground truth follows from them (simulators/ground_truth.py).

`benchmark()` times building the devices and generating every emission of the night,
payloads encoded, without agent or gateway: the figure in docs/simulators.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulators.base import device_rng
from simulators.scenario import Scenario
from simulators.timeline import Night, Tally, tally

#: A Tuesday evening to Wednesday morning: the 12-hour night of the benchmark.
DISTRICT_START = datetime(2026, 11, 17, 19, 0)
DISTRICT_HOURS = 12


def parse_size(text: str) -> tuple[int, int]:
    """'50x40' -> (50, 40)."""
    try:
        buildings, rooms = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected BUILDINGSxROOMS like 50x40, got {text!r}") from None
    if buildings < 1 or rooms < 1:
        raise ValueError(f"expected at least one building and one room, got {text!r}")
    return buildings, rooms


def district_scenario(
    buildings: int,
    rooms: int,
    *,
    seed: int = 1,
    start: datetime = DISTRICT_START,
    hours: float = DISTRICT_HOURS,
    step_seconds: float = 60.0,
    prefix: str = "",
    site: dict[str, Any] | None = None,
    agent: str = "agent-district",
) -> Scenario:
    """A generated district; its `expected` is left to what its incidents imply.
    `prefix` starts every building id (so device ids stay unique across the sites of
    simulators/sites.py) and seeds the incidents apart; `site` overrides keys of the site
    (id, name, timezone, schedules, calendar)."""
    rng = device_rng(seed, "district", buildings, rooms, *([prefix] if prefix else []))
    site_buildings, devices, routes, guards = [], [], [], []
    for b in range(buildings):
        building = f"{prefix}b{b:03d}"
        room_list = []
        for r in range(rooms):
            room = f"{building}-r{r:03d}"
            role, spec = _room_device(b, r, building, room)
            room_list.append({"id": room, "schedule": "entrance" if role == "entrance" else "school-day"})
            devices.append(spec)
            if role == "guard-post":
                tags = [f"cp-{building}-{n}" for n in range(1, 5)]
                routes.append({"id": f"round-{building}", "checkpoints": tags, "rounds": ["23:30", "02:00"]})
                guards.append({"id": f"guard-{building}", "route": f"round-{building}", "reader": spec["device"]})
        site_buildings.append({"id": building, "name": f"School {b + 1}", "rooms": room_list})
    end = datetime.fromtimestamp(start.timestamp() + hours * 3600)
    incidents = _incidents(devices, guards, rng)
    return Scenario.model_validate({
        "name": f"district-{buildings}x{rooms}",
        "description": f"{buildings} buildings x {rooms} rooms, one device per room",
        "agent": agent,
        "start": start,
        "end": end,
        "step_seconds": step_seconds,
        "agent_heartbeat_seconds": 300,
        "site": {
            "id": "district",
            "name": "District schools",
            "timezone": "Europe/Berlin",
            "schedules": {
                "school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}],
                "entrance": [{"days": "mon-fri", "hours": "06:30-19:00"}],
            },
            "buildings": site_buildings,
        } | (site or {}),
        "devices": devices,
        "guards": guards,
        "incidents": incidents,
        "faults": _faults(devices, rng),
        "rules": {"patrol": {"routes": routes}, "deadman": {"heartbeats_count": False, "agent_offline_minutes": 5}},
    })


def _room_device(b: int, r: int, building: str, room: str) -> tuple[str, dict[str, Any]]:
    if r == 0:
        return "entrance", {"type": "door_controller", "device": f"ctl-{building}", "room": room,
                            "doors": [f"door-{building}"], "traffic_per_hour": 20}
    if r == 1:
        return "washroom", {"type": "water_meter", "device": f"wm-{building}", "room": room}
    if r == 2:
        return "floor", {"type": "wet_sensor", "device": f"wet-{building}", "room": room}
    if r == 3 and b % 10 == 0:
        return "guard-post", {"type": "patrol_reader", "device": f"pr-{building}", "room": room,
                              "reader": f"R{b:03d}", "link": "tcp"}
    circuit = "lighting" if r % 5 == 0 else "ac"
    rated = 400.0 if circuit == "lighting" else 1000.0 + (r * 37 % 8) * 100
    return "classroom", {"type": "power_meter", "device": f"{circuit}-{room}", "room": room,
                         "circuit": circuit, "rated_w": rated}


def _incidents(devices: list[dict[str, Any]], guards: list[dict[str, Any]], rng: Any) -> list[dict[str, Any]]:
    def of(kind: str) -> list[dict[str, Any]]:
        return [d for d in devices if d["type"] == kind]

    incidents: list[dict[str, Any]] = []
    acs = [d for d in of("power_meter") if d["circuit"] == "ac"]
    for d in rng.sample(acs, max(1, len(acs) // 100)) if acs else []:
        incidents.append({"type": "ac_left_on", "device": d["device"]})
    meters = of("water_meter")
    for n, d in enumerate(rng.sample(meters, max(1, len(meters) // 10)) if meters else []):
        if n % 2:
            incidents.append({"type": "water_leak", "device": d["device"], "kind": "steady", "at": "01:10"})
        else:
            incidents.append({"type": "water_leak", "device": d["device"], "kind": "burst", "at": "03:20"})
    doors = of("door_controller")
    if doors:
        d = rng.choice(doors)
        incidents.append({"type": "door_forced", "device": d["device"], "door": d["doors"][0], "at": "01:30"})
    if guards:
        g = rng.choice(guards)
        incidents.append({"type": "skip_checkpoint", "guard": g["id"], "round": "02:00", "tag": f"cp-{g['id'][6:]}-3"})
    spare = [d for d in of("power_meter") if d["device"] not in {i.get("device") for i in incidents}]
    if spare:
        incidents.append({"type": "device_silent", "device": rng.choice(spare)["device"], "at": "03:00"})
    return incidents


def _faults(devices: list[dict[str, Any]], rng: Any) -> list[dict[str, Any]]:
    """A few harmless faults, a per cent of the devices each."""
    meters = [d["device"] for d in devices if d["type"] == "power_meter"]
    count = max(1, len(meters) // 100)
    faults: list[dict[str, Any]] = []
    for device in rng.sample(meters, min(count, len(meters))):
        faults.append({"type": "duplicates", "device": device, "every_minutes": 30})
    for device in rng.sample(meters, min(count, len(meters))):
        faults.append({"type": "clock_skew", "device": device, "seconds": rng.choice([-90, 45, 120])})
    return faults


@dataclass(frozen=True)
class Benchmark:
    devices: int
    build_seconds: float  # scenario validation and every device's curve or timetable
    generate_seconds: float  # every emission of the night, payloads encoded
    tally: Tally

    @property
    def seconds(self) -> float:
        return self.build_seconds + self.generate_seconds


def benchmark(buildings: int, rooms: int, *, seed: int = 1, hours: float = DISTRICT_HOURS) -> Benchmark:
    """Time generating a district's night (no agent, no gateway, nothing sent)."""
    started = time.perf_counter()
    scenario = district_scenario(buildings, rooms, seed=seed, hours=hours)
    night = Night(scenario, seed)
    built = time.perf_counter()
    counted = tally(night.emissions())
    return Benchmark(len(scenario.devices), built - started, time.perf_counter() - built, counted)
