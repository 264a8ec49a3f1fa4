"""A scenario's whole night as one time-ordered stream of emissions, from its seed.

`Night` builds one simulator per device (simulators/<device>.py), the guards' rounds
(simulators/guards.py) and the faults (simulators/faults.py), and merges what they emit.
Building is deterministic: the same scenario and seed give the same stream, byte for
byte (tests/simulators/test_timeline.py). Nothing is sent here; see simulators/night.py
(the real agent, accelerated clock), simulators/replay.py (the drivers and rules alone)
and simulators/district.py (the benchmark).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from simulators.ac_meter import PowerMeterSim
from simulators.base import BROKER, Emission, ScheduleBook, epoch
from simulators.cold_room import TemperatureSensorSim
from simulators.door_controller import DoorControllerSim
from simulators.faults import apply_faults, modbus_controls
from simulators.guards import guard_taps, wand_uploads
from simulators.patrol_reader import reader_emissions
from simulators.scenario import (
    BrokerRestart,
    ClockSkew,
    DoorControllerSpec,
    PatrolReaderSpec,
    PowerMeterSpec,
    Scenario,
    TemperatureSensorSpec,
    WandDockSpec,
    WaterMeterSpec,
    WetSensorSpec,
)
from simulators.water_meter import WaterMeterSim
from simulators.wet_sensor import WetSensorSim


def device_topic(site: str, device: str) -> str:
    """Where a simulated MQTT meter or sensor publishes (the device side, not warden's tree)."""
    return f"devices/{site}/{device}/state"


def door_topic(site: str, device: str) -> str:
    """Where a simulated MQTT door controller publishes its events and heartbeats."""
    return f"devices/{site}/{device}/events"


@dataclass
class Night:
    """Every device of a scenario, ready to emit the night."""

    scenario: Scenario
    seed: int = 1
    power: dict[str, PowerMeterSim] = field(default_factory=dict)
    water: dict[str, WaterMeterSim] = field(default_factory=dict)
    wet: dict[str, WetSensorSim] = field(default_factory=dict)
    doors: dict[str, DoorControllerSim] = field(default_factory=dict)
    temperature: dict[str, TemperatureSensorSim] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scenario, seed = self.scenario, self.seed
        start, end = epoch(scenario.start_utc), epoch(scenario.end_utc)
        book = ScheduleBook(scenario.site, start, end)
        site = scenario.site.id
        for spec in scenario.devices:
            if isinstance(spec, PowerMeterSpec):
                self.power[spec.device] = PowerMeterSim(spec, scenario, seed, book)
            elif isinstance(spec, WaterMeterSpec):
                self.water[spec.device] = WaterMeterSim(spec, scenario, seed, book)
            elif isinstance(spec, WetSensorSpec):
                self.wet[spec.device] = WetSensorSim(spec, scenario, seed)
            elif isinstance(spec, TemperatureSensorSpec):
                self.temperature[spec.device] = TemperatureSensorSim(spec, scenario, seed)
            elif isinstance(spec, DoorControllerSpec):
                self.doors[spec.device] = DoorControllerSim(spec, scenario, seed, book)
            if isinstance(spec, DoorControllerSpec) and spec.transport == "mqtt":
                self.topics[spec.device] = door_topic(site, spec.device)
            elif isinstance(spec, (PowerMeterSpec, WaterMeterSpec, WetSensorSpec, TemperatureSensorSpec)) and getattr(spec, "transport", "mqtt") == "mqtt":
                self.topics[spec.device] = device_topic(site, spec.device)

    @property
    def modbus_meters(self) -> dict[str, PowerMeterSim]:
        return {d: m for d, m in self.power.items() if m.spec.transport == "modbus"}

    def skew(self, device: str) -> float:
        return sum(f.seconds for f in self.scenario.faults if isinstance(f, ClockSkew) and f.device == device)

    # ----------------------------------------------------------------- the stream

    def emissions(self) -> Iterator[Emission]:
        """The whole night, in time order (ties: device order of the scenario)."""
        streams = [apply_faults(self.scenario, d, s, self.seed) for d, s in self._device_streams()]
        streams.append(iter(self._broker_controls()))
        return heapq.merge(*streams, key=lambda e: e.t)

    def _device_streams(self) -> Iterator[tuple[str, Iterable[Emission]]]:
        scenario = self.scenario
        start, end = epoch(scenario.start_utc), epoch(scenario.end_utc)
        taps = {g.id: guard_taps(scenario, g, self.seed) for g in scenario.guards}
        for spec in scenario.devices:
            device, skew = spec.device, self.skew(spec.device)
            if isinstance(spec, PowerMeterSpec) and spec.transport == "mqtt":
                yield device, self.power[device].emissions(self.topics[device], scenario.step_seconds, skew)
            elif isinstance(spec, PowerMeterSpec):
                yield device, modbus_controls(scenario, device)
            elif isinstance(spec, WaterMeterSpec):
                yield device, self.water[device].emissions(self.topics[device], scenario.step_seconds, skew)
            elif isinstance(spec, WetSensorSpec):
                yield device, self.wet[device].emissions(self.topics[device], skew)
            elif isinstance(spec, TemperatureSensorSpec):
                yield device, self.temperature[device].emissions(self.topics[device], scenario.step_seconds, skew)
            elif isinstance(spec, DoorControllerSpec):
                yield device, self.doors[device].emissions(self.topics.get(device, ""), skew)
            elif isinstance(spec, PatrolReaderSpec):
                walked = [(t.t, t.tag, t.guard) for g in scenario.guards if g.reader == device for t in taps[g.id]]
                yield device, reader_emissions(
                    device, spec.reader or device, walked, start=start, end=end,
                    heartbeat_seconds=spec.heartbeat_minutes * 60, skew=skew,
                )
            elif isinstance(spec, WandDockSpec):
                guards = [g for g in scenario.guards if g.dock == device]
                yield device, sorted((e for g in guards for e in wand_uploads(scenario, g, taps[g.id], skew)), key=lambda e: e.t)

    def _broker_controls(self) -> list[Emission]:
        controls = []
        for incident in self.scenario.incidents:
            if isinstance(incident, BrokerRestart):
                t = epoch(self.scenario.instant(incident.at))
                controls += [
                    Emission(t, "", BROKER, kind="control", action="down"),
                    Emission(t + incident.down_seconds, "", BROKER, kind="control", action="up"),
                ]
        return sorted(controls, key=lambda e: e.t)


@dataclass(frozen=True)
class Tally:
    """What a stream holds, for progress, accounting and the benchmark's figures."""

    emissions: int
    events: int
    bytes: int
    by_channel: dict[str, int]
    by_kind: dict[str, int]


def tally(stream: Iterable[Emission]) -> Tally:
    channels: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    events = size = count = 0
    for e in stream:
        count += 1
        events += e.events if e.kind != "duplicate" else 0
        size += len(e.payload)
        channels[e.channel] += 1
        kinds[e.kind] += 1
    return Tally(count, events, size, dict(channels), dict(kinds))

