"""What every device simulator shares: the emission record, times, seeds and timetables.

A device simulator turns the scenario into *emissions*: what the device puts on its wire
and when (an MQTT payload, the bytes of a serial sentence, a wand batch file), in the
device's own format. Emissions are plain data, computed before anything is sent, so a
night can be generated without any transport (the district benchmark), replayed through
the agent's drivers alone (simulators/replay.py), or played in real (accelerated) time
against the real agent (simulators/night.py), and the same seed always gives the same
emissions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, time, timezone
from functools import lru_cache

from simulators.calendar import day_spans, holiday_for_everyone, local_days, merge, schedule_spans
from warden.config import SiteConfig

#: Channels, i.e. how an emission travels.
MQTT, LINE, WAND, MODBUS, BROKER = "mqtt", "line", "wand", "modbus", "broker"


@dataclass(frozen=True, slots=True)
class Emission:
    """One thing a device does at one instant.

    `events` is how many warden events the agent should make of it (0 for noise or a
    malformed payload), so a player knows when everything it sent has been read.
    """

    t: float  # when it goes on the wire, UTC epoch seconds
    device: str
    channel: str  # MQTT, LINE, WAND, MODBUS (a control of the simulated meter), BROKER
    payload: bytes = b""
    topic: str = ""  # MQTT topic, or the batch file name for WAND
    kind: str = "data"  # data, heartbeat, noise, malformed, duplicate, control
    events: int = 0
    action: str = ""  # MODBUS/BROKER controls: mute, refuse:<code>, clear, down, up

    @property
    def at(self) -> datetime:
        return utc(self.t)


def epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("simulated times must be timezone-aware")
    return moment.timestamp()


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


@lru_cache(maxsize=1 << 16)
def iso_z(t: float) -> str:
    """RFC 3339 UTC with a Z; whole seconds unless the instant has a fraction (ms then).
    Cached: thousands of meters report on the same grid of instants."""
    moment = utc(t)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def device_rng(seed: int, *parts: object) -> random.Random:
    """A random stream of its own per device (and purpose): adding a device to a scenario
    does not change what the others do. String seeds are hashed with SHA-512, stable
    across runs and machines."""
    return random.Random(f"{seed}\x1f" + "\x1f".join(str(p) for p in parts))


class ScheduleBook:
    """The site's schedules as concrete UTC intervals over the night, computed once per
    schedule with the simulators' own calendar (simulators/calendar.py, written from
    docs/rules.md and not from the rules' code), so a calendar bug in the rules shows up
    as simulated occupancy the rules misjudge, not as an agreement."""

    def __init__(self, site: SiteConfig, t0: float, t1: float, margin_days: float = 1.5) -> None:
        self.site = site
        self.t0 = t0 - margin_days * 86400
        self.t1 = t1 + margin_days * 86400
        self._cache: dict[str | None, list[tuple[float, float]]] = {}

    def intervals(self, schedule: str | None) -> list[tuple[float, float]]:
        """Scheduled (occupied) intervals of `schedule` overlapping the night and a margin."""
        if schedule not in self._cache:
            self._cache[schedule] = [
                (max(a, self.t0), min(b, self.t1)) for a, b in schedule_spans(self.site, schedule, self.t0, self.t1)
            ]
        return self._cache[schedule]

    def scheduled(self, schedule: str | None, t: float) -> bool:
        return any(a <= t < b for a, b in self.intervals(schedule))

    def daily_run(
        self, start: time, end: time, days: frozenset[int] | None, schedule: str | None
    ) -> list[tuple[float, float]]:
        """A fixed daily run (a wall timer: `runs`) over the night and margin: on `days`
        (holidays too: a timer does not know them), or by default on the weekdays of
        `schedule`'s windows (every day without one) but never on a holiday."""
        holidays: list = []
        if days is None:
            windows = self.site.schedules.get(schedule or "", [])
            days = frozenset(d for w in windows for d in w.days) if windows else frozenset(range(7))
            holidays = list(self.site.holidays)
            if self.site.calendar is not None:  # the calendar's days off too (docs/rules.md#calendars)
                holidays = [d for d in local_days(self.site.zone, self.t0, self.t1) if holiday_for_everyone(self.site, d)]
        zone = self.site.zone
        spans = day_spans(zone, local_days(zone, self.t0, self.t1), start, end, days, holidays)
        return [(max(a, self.t0), min(b, self.t1)) for a, b in merge(spans) if b > self.t0 and a < self.t1]


def place_schedule(site: SiteConfig, device: str) -> str | None:
    place = site.locate(device)
    return place.schedule if place else None
