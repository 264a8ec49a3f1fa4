"""A simulated electricity meter on one circuit (air-conditioning, lighting, water heating,
refrigeration or other), and its MQTT variant.

Power follows when the load actually runs: people switch an AC or the lights on a little
after the room's timetable starts and off a little before it ends, on school days, not
every day; a water heater reheats now and then while the room is in use; a fridge's
compressor cycles by itself day and night, whatever the timetable; a wall timer runs a
fixed `runs` window on its own days (holidays too: it does not know them), or else on
its room's days but not on the site's holidays. An injected "left on"
keeps the load running after hours, continuously or cycled by a thermostat (`duty`). The
curve is computed once per night, a value per minute with a little noise, so the meter
is a pure function of time: the MQTT variant (here) samples it on its reporting grid, and
the Modbus RTU variant (simulators/sdm120.py) answers the agent's polls from the same
curve, whenever they come.

The calendar (timetables, a timer's days, holidays) is the simulators' own
(simulators/calendar.py through `ScheduleBook`), not the rules' code, so a calendar bug
in the rules cannot move the traffic with it.

MQTT payload: {"ts": RFC 3339 UTC, "power_w": float, "energy_kwh": float}.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterator

from simulators.base import MQTT, Emission, ScheduleBook, device_rng, epoch, iso_z, place_schedule
from simulators.scenario import AcLeftOn, PowerMeterSpec, Scenario

#: The agent's field mapping for this payload (`mqtt_json` driver).
POWER_FIELDS: dict[str, dict[str, object]] = {
    "power_w": {"quantity": "power", "unit": "W"},
    "energy_kwh": {"quantity": "energy", "unit": "kWh", "cumulative": True},
}
#: SDM120 registers the agent reads from a simulated Modbus meter.
SDM120_INCLUDE = ["voltage", "current", "active_power", "import_energy"]

_MINUTE = 60.0
#: A fridge compressor's own cycle, minutes on and off (drawn per cycle).
_FRIDGE_ON, _FRIDGE_OFF = (8.0, 18.0), (12.0, 30.0)
#: A water heater reheating while its room is in use, minutes on and off.
_HEATER_ON, _HEATER_OFF = (10.0, 25.0), (20.0, 60.0)

Span = tuple[float, float]


def cycles(a: float, b: float, on_minutes: float, off_minutes: float) -> list[Span]:
    """On-periods of a load cycled `on_minutes` on / `off_minutes` off from `a` (on first) until `b`."""
    spans, t = [], a
    while t < b:
        spans.append((t, min(t + on_minutes * _MINUTE, b)))
        t += (on_minutes + off_minutes) * _MINUTE
    return spans


# --------------------------------------------------------------------------- the meter


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
        minutes = int((t1 - t0) // _MINUTE) + 2
        runs = self._runs(book, rng, t0, t1)
        left_on = self._left_on(scenario)
        watts = array("d", bytes(8 * minutes))
        for i in range(minutes):
            t = t0 + i * _MINUTE
            noise = rng.uniform(0.9, 1.0)  # drawn every minute, so the stream never shifts
            draw = max([w for a, b, w in left_on if a <= t < b], default=0.0)
            if any(a <= t < b for a, b in runs):
                draw = max(draw, spec.rated_w)
            watts[i] = round(draw * noise, 1) if draw else spec.standby_w
        self.profile = PowerProfile(t0, watts, base_kwh=round(rng.uniform(800, 4000), 1), standby_w=spec.standby_w)

    # ----------------------------------------------------------------- when it runs

    def _runs(self, book: ScheduleBook, rng: random.Random, t0: float, t1: float) -> list[Span]:
        """When the load runs of itself: a fridge always cycles, a fixed run is a wall
        timer (`ScheduleBook.daily_run`), anything else follows the people using its room."""
        kind, schedule = self.spec.circuit, place_schedule(self.scenario.site, self.device)
        if kind == "refrigeration":
            return self._compressor(rng, t0 - 60 * _MINUTE, t1 + _MINUTE)
        if self.spec.runs is not None:
            start, end = self.spec.runs
            return book.daily_run(start, end, self.spec.runs_days, schedule)
        spans = []
        for a, b in book.intervals(schedule):
            on_after, off_before = {
                "lighting": (rng.uniform(0, 10), rng.uniform(5, 20)),
                "water_heating": (rng.uniform(0, 10), rng.uniform(30, 60)),
            }.get(kind, (rng.uniform(10, 25), rng.uniform(15, 40)))
            if rng.random() < self.spec.use_probability and b - a > (on_after + off_before) * 60:
                a, b = a + on_after * 60, b - off_before * 60
                spans += self._reheats(rng, a, b) if kind == "water_heating" else [(a, b)]
        return spans

    @staticmethod
    def _compressor(rng: random.Random, a: float, b: float) -> list[Span]:
        spans, t = [], a + rng.uniform(0, 20) * _MINUTE
        while t < b:
            on = rng.uniform(*_FRIDGE_ON) * _MINUTE
            spans.append((t, t + on))
            t += on + rng.uniform(*_FRIDGE_OFF) * _MINUTE
        return spans

    @staticmethod
    def _reheats(rng: random.Random, a: float, b: float) -> list[Span]:
        spans, t = [], a
        while t < b:
            on = rng.uniform(*_HEATER_ON) * _MINUTE
            spans.append((t, min(t + on, b)))
            t += on + rng.uniform(*_HEATER_OFF) * _MINUTE
        return spans

    def _left_on(self, scenario: Scenario) -> list[tuple[float, float, float]]:
        """(from, until, watts) of every "left on" incident: continuous, or the on-periods
        of its thermostat's duty cycle. Left on to the night's end runs past it."""
        spans = []
        for incident in scenario.incidents:
            if isinstance(incident, AcLeftOn) and incident.device == self.device:
                at = epoch(scenario.instant(incident.at) if incident.at is not None else scenario.start_utc)
                until = epoch(scenario.instant(incident.until)) if incident.until is not None else epoch(scenario.end_utc) + _MINUTE
                watts = incident.power_w or self.spec.rated_w
                duty = incident.duty
                periods = [(at, until)] if duty is None else cycles(at, until, duty.on_minutes, duty.off_minutes)
                spans += [(a, b, watts) for a, b in periods]
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
