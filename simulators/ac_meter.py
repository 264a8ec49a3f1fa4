"""A simulated electricity meter on an AC or lighting circuit, and its MQTT variant.

Power follows when the unit actually runs: people switch it on a little after the room's
timetable starts and off a little before it ends, on school days, not every day (or
during a fixed `runs` window). An injected "left on" keeps it running after hours. The
curve is computed once per night, a value per minute with a little noise, so the meter
is a pure function of time: the MQTT variant (here) samples it on its reporting grid, and
the Modbus RTU variant (simulators/sdm120.py) answers the agent's polls from the same
curve, whenever they come.

MQTT payload: {"ts": RFC 3339 UTC, "power_w": float, "energy_kwh": float}.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterator
from datetime import timedelta

from rules.schedule import local_instant
from simulators.base import MQTT, Emission, ScheduleBook, device_rng, epoch, iso_z, place_schedule, utc
from simulators.scenario import AcLeftOn, PowerMeterSpec, Scenario

#: The agent's field mapping for this payload (`mqtt_json` driver).
POWER_FIELDS: dict[str, dict[str, object]] = {
    "power_w": {"quantity": "power", "unit": "W"},
    "energy_kwh": {"quantity": "energy", "unit": "kWh", "cumulative": True},
}
#: SDM120 registers the agent reads from a simulated Modbus meter.
SDM120_INCLUDE = ["voltage", "current", "active_power", "import_energy"]

_MINUTE = 60.0


class PowerProfile:
    """Watts per minute over the night, and the energy register that integrates them."""

    def __init__(self, t0: float, watts: array, base_kwh: float, standby_w: float) -> None:
        self.t0 = t0
        self.watts = watts
        self.standby_w = standby_w
        self.kwh = array("d", [base_kwh])
        for w in watts:
            self.kwh.append(self.kwh[-1] + w * _MINUTE / 3.6e6)

    def _index(self, t: float) -> int:
        return min(max(int((t - self.t0) // _MINUTE), 0), len(self.watts) - 1)

    def power(self, t: float) -> float:
        return self.watts[self._index(t)]

    def energy(self, t: float) -> float:
        i = self._index(t)
        into = min(max(t - (self.t0 + i * _MINUTE), 0.0), _MINUTE)
        return self.kwh[i] + self.watts[i] * into / 3.6e6

    def on(self, t: float) -> bool:
        return self.power(t) > self.standby_w


class PowerMeterSim:
    """One meter; `emissions()` is its MQTT output, `registers_at()` its SDM120 registers."""

    def __init__(self, spec: PowerMeterSpec, scenario: Scenario, seed: int, book: ScheduleBook) -> None:
        self.spec = spec
        self.device = spec.device
        self.scenario = scenario
        rng = device_rng(seed, "power", spec.device)
        t0 = math.floor(epoch(scenario.start_utc) / _MINUTE) * _MINUTE
        t1 = epoch(scenario.end_utc)
        spans = self._runs(book, rng, t0, t1) + self._left_on(scenario)
        minutes = int((t1 - t0) // _MINUTE) + 2
        watts = array("d", bytes(8 * minutes))
        spans.sort()
        for i in range(minutes):
            t = t0 + i * _MINUTE
            noise = rng.uniform(0.9, 1.0)  # drawn every minute, so the stream never shifts
            running = any(a <= t < b for a, b in spans)
            watts[i] = round(spec.rated_w * noise, 1) if running else spec.standby_w
        self.profile = PowerProfile(t0, watts, base_kwh=round(rng.uniform(800, 4000), 1), standby_w=spec.standby_w)

    # ----------------------------------------------------------------- when it runs

    def _runs(self, book: ScheduleBook, rng: random.Random, t0: float, t1: float) -> list[tuple[float, float]]:
        if self.spec.runs is not None:
            return self._fixed_runs(t0, t1)
        ac = self.spec.circuit == "ac"
        spans = []
        for a, b in book.intervals(place_schedule(self.scenario.site, self.device)):
            on_after = rng.uniform(10, 25) if ac else rng.uniform(0, 10)
            off_before = rng.uniform(15, 40) if ac else rng.uniform(5, 20)
            if rng.random() < self.spec.use_probability and b - a > (on_after + off_before) * 60:
                spans.append((a + on_after * 60, b - off_before * 60))
        return spans

    def _fixed_runs(self, t0: float, t1: float) -> list[tuple[float, float]]:
        assert self.spec.runs is not None
        zone = self.scenario.site.zone
        start, end = self.spec.runs
        first = utc(t0).astimezone(zone).date() - timedelta(days=1)
        spans = []
        for n in range(int((t1 - t0) // 86400) + 3):
            day = first + timedelta(days=n)
            on = epoch(local_instant(zone, day, start))
            off = epoch(local_instant(zone, day if end > start else day + timedelta(days=1), end))
            spans.append((on, off))
        return spans

    def _left_on(self, scenario: Scenario) -> list[tuple[float, float]]:
        spans = []
        for incident in scenario.incidents:
            if isinstance(incident, AcLeftOn) and incident.device == self.device:
                at = scenario.instant(incident.at) if incident.at is not None else scenario.start_utc
                until = scenario.instant(incident.until) if incident.until is not None else scenario.end_utc
                spans.append((epoch(at), epoch(until) + _MINUTE))
        return spans

    # ----------------------------------------------------------------- what it says

    def payload(self, t: float, skew: float = 0.0) -> bytes:
        p, e = self.profile.power(t), self.profile.energy(t)
        return f'{{"ts":"{iso_z(t + skew)}","power_w":{p:.1f},"energy_kwh":{e:.4f}}}'.encode()

    def emissions(self, topic: str, step: float, skew: float = 0.0) -> Iterator[Emission]:
        t, end = epoch(self.scenario.start_utc), epoch(self.scenario.end_utc)
        while t <= end:
            yield Emission(t, self.device, MQTT, self.payload(t, skew), topic, events=len(POWER_FIELDS))
            t += step

    def registers_at(self, t: float) -> dict[str, float]:
        """What an Eastron SDM120 on this circuit shows at `t` (simulators/sdm120.py)."""
        power = self.profile.power(t)
        factor = 0.93 if self.profile.on(t) else 1.0
        voltage = 230.0 + ((int(t // _MINUTE) * 7919) % 41 - 20) / 10  # a deterministic wobble of +-2 V
        apparent = power / factor
        energy = self.profile.energy(t)
        return {
            "voltage": voltage,
            "current": apparent / voltage,
            "active_power": power,
            "apparent_power": apparent,
            "reactive_power": math.sqrt(max(apparent**2 - power**2, 0.0)),
            "power_factor": factor,
            "frequency": 50.0,
            "import_energy": energy,
            "export_energy": 0.0,
            "total_energy": energy,
        }
