"""A simulated AC circuit meter that publishes JSON readings over MQTT.

Power follows when the unit actually runs (people switch it on and off, not the
timetable), with a little noise; the cumulative energy register integrates it.
Payload: {"ts": ISO-8601 UTC, "power_w": float, "energy_kwh": float}.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, tzinfo

from simulators.scenario import AcMeterSpec


class AcMeterSim:
    def __init__(self, spec: AcMeterSpec, zone: tzinfo, rng: random.Random, energy_kwh: float = 1000.0) -> None:
        self.spec = spec
        self.zone = zone
        self.rng = rng
        self.energy_kwh = energy_kwh
        self._last: datetime | None = None
        self._was_on = False

    def running(self, at: datetime) -> bool:
        """Inside the run window; once on, a unit `left_on` never switches off."""
        local = at.astimezone(self.zone).time()
        start, end = self.spec.runs
        inside = start <= local < end if start <= end else (local >= start or local < end)
        return inside or (self.spec.left_on and self._was_on)

    def power_w(self, at: datetime) -> float:
        on = self.running(at)
        self._was_on = self._was_on or on
        if not on:
            return self.spec.standby_w
        return round(self.spec.rated_w * self.rng.uniform(0.9, 1.0), 1)

    def sample(self, at: datetime) -> dict[str, float | str]:
        power = self.power_w(at)
        if self._last is not None:
            self.energy_kwh += power * (at - self._last).total_seconds() / 3_600_000
        self._last = at
        return {"ts": at.isoformat().replace("+00:00", "Z"), "power_w": power, "energy_kwh": round(self.energy_kwh, 4)}

    def payload(self, at: datetime) -> bytes:
        return json.dumps(self.sample(at)).encode()
