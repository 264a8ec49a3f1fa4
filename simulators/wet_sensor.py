"""A simulated leak (wet floor) sensor over MQTT.

Battery sensors report their state every few minutes, which doubles as their heartbeat,
and at once when it changes: a flood must not wait for the next report.

MQTT payload: {"ts": RFC 3339 UTC, "wet": 0 or 1, "battery_pct": int}.
"""

from __future__ import annotations

from collections.abc import Iterator

from simulators.base import MQTT, Emission, device_rng, epoch, iso_z
from simulators.scenario import Scenario, WetFloor, WetSensorSpec

WET_FIELDS: dict[str, dict[str, object]] = {"wet": {"quantity": "wet", "unit": "1"}}


class WetSensorSim:
    def __init__(self, spec: WetSensorSpec, scenario: Scenario, seed: int) -> None:
        self.spec = spec
        self.device = spec.device
        self.scenario = scenario
        self.battery = device_rng(seed, "wet", spec.device).randint(40, 100)
        end = epoch(scenario.end_utc)
        self.wet_spans = [
            (epoch(scenario.instant(i.at)), epoch(scenario.instant(i.until)) if i.until is not None else end + 1)
            for i in scenario.incidents
            if isinstance(i, WetFloor) and i.device == spec.device
        ]

    def wet(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.wet_spans)

    def payload(self, t: float, skew: float = 0.0) -> bytes:
        return f'{{"ts":"{iso_z(t + skew)}","wet":{int(self.wet(t))},"battery_pct":{self.battery}}}'.encode()

    def emissions(self, topic: str, skew: float = 0.0) -> Iterator[Emission]:
        start, end = epoch(self.scenario.start_utc), epoch(self.scenario.end_utc)
        period = self.spec.report_minutes * 60
        changes = sorted(t for span in self.wet_spans for t in span if start < t <= end)
        times = sorted({start + n * period for n in range(int((end - start) // period) + 1)} | set(changes))
        for t in times:
            yield Emission(t, self.device, MQTT, self.payload(t, skew), topic, events=1)
