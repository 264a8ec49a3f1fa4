"""A simulated water meter: cumulative volume and flow over MQTT.

Use follows the building: taps and flushes (a few litres a minute for a minute or three)
while the room is occupied, now and then in the evening, almost never at night, which is
exactly why utilities look for leaks between 02:00 and 05:00. Injected leaks add a
constant flow on top: a drip (a fraction of a litre a minute, visible only to a meter
that resolves it), a steady leak, or a burst (far above any normal use, for minutes).
Like the power meter, the flow is computed per minute once, so volume and flow are a
pure function of time. A meter replaced during the night (`meter_replaced`) restarts its
register at the new meter's reading; the flow it reports stays what really runs.

MQTT payload: {"ts": RFC 3339 UTC, "volume_m3": cumulative register, "flow_lpm": flow},
or the register alone for a meter that reports only its volume (`register_only`).
The agent maps the register (`WATER_FIELDS`): its deltas give the exact litres between
two readings, even across a lost message; the flow field is for dashboards.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator

from simulators.base import MQTT, Emission, ScheduleBook, device_rng, epoch, iso_z, place_schedule, utc
from simulators.scenario import MeterReplaced, Scenario, WaterLeak, WaterMeterSpec

WATER_FIELDS: dict[str, dict[str, object]] = {
    "volume_m3": {"quantity": "volume", "unit": "m3", "cumulative": True},
}

_MINUTE = 60.0


class WaterProfile:
    """Litres per minute over the night, and the register that totals them; `resets`
    (minute index -> litres) is where a new meter's register takes over."""

    def __init__(self, t0: float, flow: array, base_litres: float, resets: dict[int, float] | None = None) -> None:
        self.t0 = t0
        self.flow_lpm = flow
        self.litres = array("d", [base_litres])
        resets = resets or {}
        for i, f in enumerate(flow):
            if i in resets:
                self.litres[i] = resets[i]
            self.litres.append(self.litres[-1] + f)

    def _index(self, t: float) -> int:
        return min(max(int((t - self.t0) // _MINUTE), 0), len(self.flow_lpm) - 1)

    def flow(self, t: float) -> float:
        return self.flow_lpm[self._index(t)]

    def volume_m3(self, t: float) -> float:
        i = self._index(t)
        into = min(max(t - (self.t0 + i * _MINUTE), 0.0), _MINUTE)
        return (self.litres[i] + self.flow_lpm[i] * into / _MINUTE) / 1000


class WaterMeterSim:
    def __init__(self, spec: WaterMeterSpec, scenario: Scenario, seed: int, book: ScheduleBook) -> None:
        self.spec = spec
        self.device = spec.device
        self.scenario = scenario
        rng = device_rng(seed, "water", spec.device)
        t0 = math.floor(epoch(scenario.start_utc) / _MINUTE) * _MINUTE
        minutes = int((epoch(scenario.end_utc) - t0) // _MINUTE) + 2
        flow = array("d", bytes(8 * minutes))
        occupied = book.intervals(place_schedule(scenario.site, spec.device))
        zone = scenario.site.zone
        for i in range(minutes):
            t = t0 + i * _MINUTE
            hour = utc(t).astimezone(zone).hour
            if any(a <= t < b for a, b in occupied):
                rate = spec.uses_per_hour / 60
            elif 6 <= hour < 22:
                rate = 2 / 60  # cleaners, caretaker, evening use
            else:
                rate = spec.night_uses / (8 * 60)
            if rng.random() < rate:
                use = rng.uniform(4.0, 10.0)
                for k in range(i, min(i + rng.randint(1, 3), minutes)):
                    flow[k] += use
        for incident in scenario.incidents:
            if isinstance(incident, WaterLeak) and incident.device == spec.device:
                a, b = leak_span(scenario, incident)
                for i in range(minutes):
                    if a <= t0 + i * _MINUTE < b:
                        flow[i] += incident.flow
        for i in range(minutes):
            flow[i] = round(flow[i], 3)
        base_litres = spec.base_m3 * 1000 + round(rng.uniform(0, 5000), 1)
        self.profile = WaterProfile(t0, flow, base_litres, resets=replacements(scenario, spec.device, t0))
        self.register_only = spec.register_only

    def payload(self, t: float, skew: float = 0.0) -> bytes:
        volume, flow = self.profile.volume_m3(t), self.profile.flow(t)
        if self.register_only:
            return f'{{"ts":"{iso_z(t + skew)}","volume_m3":{volume:.5f}}}'.encode()
        return f'{{"ts":"{iso_z(t + skew)}","volume_m3":{volume:.5f},"flow_lpm":{flow:.3f}}}'.encode()

    def emissions(self, topic: str, step: float, skew: float = 0.0) -> Iterator[Emission]:
        t, end = epoch(self.scenario.start_utc), epoch(self.scenario.end_utc)
        while t <= end:
            yield Emission(t, self.device, MQTT, self.payload(t, skew), topic, events=len(WATER_FIELDS))
            t += step


def leak_span(scenario: Scenario, leak: WaterLeak) -> tuple[float, float]:
    """When a leak runs: a burst defaults to 20 minutes, other leaks to the rest of the night."""
    a = epoch(scenario.instant(leak.at))
    if leak.until is not None:
        return a, epoch(scenario.instant(leak.until))
    return a, (a + 20 * _MINUTE if leak.kind == "burst" else epoch(scenario.end_utc) + _MINUTE)


def replacements(scenario: Scenario, device: str, t0: float) -> dict[int, float]:
    """Minute index -> litres on the new register, for each `meter_replaced` of `device`
    (the register restarts at `new_base_m3` at the start of that minute)."""
    resets = {}
    for incident in scenario.incidents:
        if isinstance(incident, MeterReplaced) and incident.device == device:
            at = epoch(scenario.instant(incident.at))
            resets[int((at - t0) // _MINUTE)] = incident.new_base_m3 * 1000
    return resets
