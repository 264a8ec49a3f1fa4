"""A simulated cold room and its temperature sensor over MQTT.

The air holds the setpoint; while the room's door is open (a `door_held_open` incident on
that door) it warms at a steady rate, and once the door shuts the compressor pulls it
back down at a slower one; each defrost cycle lifts it to a peak and back. The effects
add up. The curve is stepped minute by minute from those facts (the ground truth works
the same facts out in closed form, simulators/ground_truth.py), with a little noise.

MQTT payload: {"ts": RFC 3339 UTC, "temp_c": float, "battery_pct": int}.
"""

from __future__ import annotations

from collections.abc import Iterator

from simulators.base import MQTT, Emission, device_rng, epoch, iso_z
from simulators.calendar import local_days, local_instant
from simulators.scenario import DoorHeldOpen, Scenario, TemperatureSensorSpec

#: The agent's field mapping for this payload (`mqtt_json` driver).
TEMPERATURE_FIELDS: dict[str, dict[str, object]] = {"temp_c": {"quantity": "temperature", "unit": "C"}}

_MINUTE = 60.0
#: Sensor noise, ± °C: well under the tolerances of the ground truth.
_NOISE_C = 0.05

Span = tuple[float, float]


def door_open_spans(scenario: Scenario, spec: TemperatureSensorSpec) -> list[Span]:
    """When the sensor's cold-room door stood open (UTC epoch seconds)."""
    if spec.door is None:
        return []
    spans = []
    for incident in scenario.incidents:
        if isinstance(incident, DoorHeldOpen) and incident.door == spec.door:
            a = epoch(scenario.instant(incident.at))
            spans.append((a, a + incident.seconds))
    return sorted(spans)


def defrost_starts(scenario: Scenario, spec: TemperatureSensorSpec) -> list[float]:
    """Every defrost start from the day before the night to its end."""
    if spec.defrost is None:
        return []
    zone = scenario.site.zone
    t0, t1 = epoch(scenario.start_utc), epoch(scenario.end_utc)
    return sorted(
        local_instant(zone, day, at).timestamp() for day in local_days(zone, t0, t1) for at in spec.defrost.at
    )


class TemperatureSensorSim:
    def __init__(self, spec: TemperatureSensorSpec, scenario: Scenario, seed: int) -> None:
        self.spec = spec
        self.device = spec.device
        self.scenario = scenario
        self.rng = device_rng(seed, "temperature", spec.device)
        self.battery = self.rng.randint(40, 100)
        self.doors = door_open_spans(scenario, spec)
        self.defrosts = defrost_starts(scenario, spec)

    def celsius(self, t: float) -> float:
        """The air temperature at `t`, without noise."""
        spec = self.spec
        excess = 0.0
        for a, b in self.doors:  # warm while open, then cool back
            if t < a:
                continue
            warmed = spec.warm_c_per_min * (min(t, b) - a) / _MINUTE
            cooled = spec.cool_c_per_min * max(0.0, t - b) / _MINUTE
            excess += max(0.0, warmed - cooled)
        if spec.defrost is not None:
            half = spec.defrost.minutes * _MINUTE / 2
            rise = spec.defrost.peak_c - spec.setpoint_c
            for start in self.defrosts:
                into = t - start
                if 0 <= into < 2 * half:
                    excess += rise * (into / half if into < half else (2 * half - into) / half)
        return spec.setpoint_c + excess

    def payload(self, t: float, skew: float = 0.0) -> bytes:
        value = round(self.celsius(t) + self.rng.uniform(-_NOISE_C, _NOISE_C), 2)
        return f'{{"ts":"{iso_z(t + skew)}","temp_c":{value},"battery_pct":{self.battery}}}'.encode()

    def emissions(self, topic: str, step_seconds: float, skew: float = 0.0) -> Iterator[Emission]:
        start, end = epoch(self.scenario.start_utc), epoch(self.scenario.end_utc)
        t = start
        while t <= end:
            yield Emission(t, self.device, MQTT, self.payload(t, skew), topic, events=1)
            t += step_seconds
