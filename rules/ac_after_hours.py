"""Air-conditioners left on outside a room's schedule, and the energy they waste.

One alert per room (subject = room id): a room with two AC meters is one "episode" that
lasts while any of its meters draws more than standby after hours, and whose wasted
energy is the sum over its meters. Energy is integrated per meter with the left rectangle
rule (each reading's power holds until the next reading), skipping any interval longer
than max_gap_minutes: we do not guess what a silent meter drew. See docs/rules.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import ScheduleSpans, wall_clock
from warden.config import AcAfterHoursConfig, SiteConfig
from warden.events import Event, Quantity, Reading

SNAPSHOT_VERSION = 1

_WATTS_PER_UNIT = {"w": 1.0, "kw": 1000.0}


@dataclass(frozen=True)
class _Place:
    """Where a meter is: its room's alert subject, building, room and schedule."""

    subject: str
    building: str
    room: str
    schedule: str | None


@dataclass
class _Meter:
    """What one meter last said, and its own after-hours run if it is on."""

    last_time: datetime | None = None
    power_w: float = 0.0
    run_start: datetime | None = None
    run_kwh: float = 0.0


@dataclass
class _Episode:
    """A room's after-hours episode: from the first meter on until the last one is off."""

    since: datetime
    ends_at: datetime | None  # when the schedule starts again; None: never
    meters: set[str] = field(default_factory=set)
    closed_kwh: float = 0.0  # from runs of meters that went off during the episode
    raised: bool = False


class AcAfterHoursRule:
    """Raise when a room's AC draws more than standby after hours for grace_minutes."""

    name = "ac_after_hours"
    reads = frozenset({"reading"})

    def __init__(self, site: SiteConfig, config: AcAfterHoursConfig) -> None:
        self._site = site
        self._schedules = ScheduleSpans(site)
        self._config = config
        self._grace = timedelta(minutes=config.grace_minutes)
        self._max_gap = timedelta(minutes=config.max_gap_minutes)
        self._places = _index_places(site)
        self._rooms = {place.subject: place for place in self._places.values()}
        self._meters: dict[str, _Meter] = {}
        self._episodes: dict[str, _Episode] = {}
        self.stats: dict[str, int] = {
            "out_of_order": 0,
            "gaps": 0,
            "unlocated": 0,
            "unsupported_unit": 0,
        }

    # ----------------------------------------------------------------- Rule protocol

    def on_event(self, event: Event) -> list[AlertSignal]:
        if not isinstance(event, Reading) or event.quantity != Quantity.POWER:
            return []
        place = self._places.get(event.device)
        if place is None:
            self.stats["unlocated"] += 1
            return []
        factor = _WATTS_PER_UNIT.get(event.unit.strip().lower())
        if factor is None:
            self.stats["unsupported_unit"] += 1
            return []
        return self._on_power(place, event.device, event.event_time, event.value * factor)

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """Resolve episodes whose room schedule has started by `now`.

        A silent meter keeps its episode open: telling silence apart is the deadman rule's job.
        """
        signals = []
        for subject, episode in list(self._episodes.items()):
            if episode.ends_at is not None and now >= episode.ends_at:
                signal = self._close_at_schedule(self._rooms[subject], episode)
                signals += [signal] if signal else []
        return signals

    # ----------------------------------------------------------------- readings

    def _on_power(self, place: _Place, meter_id: str, at: datetime, watts: float) -> list[AlertSignal]:
        meter = self._meters.setdefault(meter_id, _Meter())
        episode = self._episodes.get(place.subject)
        if (meter.last_time is not None and at < meter.last_time) or (episode and at < episode.since):
            self.stats["out_of_order"] += 1
            return []
        signals: list[AlertSignal] = []
        if episode is not None and episode.ends_at is not None and at >= episode.ends_at:
            resolved = self._close_at_schedule(place, episode)
            signals += [resolved] if resolved else []
            episode = None
        if episode is None:
            episode = self._maybe_start(place, meter_id, meter, at, watts)
            if episode is None:
                return signals
        else:
            self._advance(episode, meter_id, meter, at, watts)
        return signals + self._progress(place, episode, at)

    def _maybe_start(
        self, place: _Place, meter_id: str, meter: _Meter, at: datetime, watts: float
    ) -> _Episode | None:
        meter.last_time, meter.power_w = at, watts
        if watts <= self._config.standby_watts or self._schedules.is_scheduled(place.schedule, at):
            return None
        meter.run_start, meter.run_kwh = at, 0.0
        episode = _Episode(since=at, ends_at=self._schedules.next_change(place.schedule, at), meters={meter_id})
        self._episodes[place.subject] = episode
        return episode

    def _advance(self, episode: _Episode, meter_id: str, meter: _Meter, at: datetime, watts: float) -> None:
        """Integrate the meter up to `at`, then start or end its own run."""
        if meter.run_start is not None:
            meter.run_kwh += self._energy_kwh(meter, at)
        meter.last_time, meter.power_w = at, watts
        on = watts > self._config.standby_watts
        if meter.run_start is not None and not on:
            episode.closed_kwh += meter.run_kwh
            meter.run_start, meter.run_kwh = None, 0.0
        elif meter.run_start is None and on:
            meter.run_start, meter.run_kwh = at, 0.0
            episode.meters.add(meter_id)

    def _progress(self, place: _Place, episode: _Episode, at: datetime) -> list[AlertSignal]:
        """The one signal (if any) this reading earns: RAISE, UPDATE or RESOLVE."""
        if not any(self._meter(m).run_start is not None for m in episode.meters):
            del self._episodes[place.subject]
            if not episode.raised:
                return []
            return [self._signal(SignalAction.RESOLVE, place, episode, at, reason="power_off")]
        if episode.raised:
            return [self._signal(SignalAction.UPDATE, place, episode, at)]
        if at - episode.since >= self._grace:
            episode.raised = True
            return [self._signal(SignalAction.RAISE, place, episode, at)]
        return []

    def _close_at_schedule(self, place: _Place, episode: _Episode) -> AlertSignal | None:
        """End the episode where the schedule starts; later readings before it are stale."""
        assert episode.ends_at is not None
        end = episode.ends_at
        for meter_id in episode.meters:
            meter = self._meter(meter_id)
            if meter.run_start is not None:
                meter.run_kwh += self._energy_kwh(meter, end)
                episode.closed_kwh += meter.run_kwh
                meter.run_start, meter.run_kwh = None, 0.0
            meter.last_time = end if meter.last_time is None else max(meter.last_time, end)
        del self._episodes[place.subject]
        if not episode.raised:
            return None
        return self._signal(SignalAction.RESOLVE, place, episode, end, reason="schedule_started")

    def _energy_kwh(self, meter: _Meter, until: datetime) -> float:
        """Left rectangle from the meter's last reading; nothing across a too-long gap."""
        assert meter.last_time is not None
        span = until - meter.last_time
        if span > self._max_gap:
            self.stats["gaps"] += 1
            return 0.0
        return meter.power_w * span.total_seconds() / 3_600_000

    def _meter(self, meter_id: str) -> _Meter:
        return self._meters.setdefault(meter_id, _Meter())

    # ----------------------------------------------------------------- signals

    def _signal(
        self, action: SignalAction, place: _Place, episode: _Episode, at: datetime, reason: str = ""
    ) -> AlertSignal:
        meters = [self._meter(m) for m in sorted(episode.meters)]
        kwh = episode.closed_kwh + sum(m.run_kwh for m in meters)
        tariff = self._site.tariff
        cost = kwh * tariff.energy_per_kwh
        minutes = (at - episode.since).total_seconds() / 60
        details: dict[str, float | str] = {
            "wasted_kwh": round(kwh, 6),
            "cost": round(cost, 4),
            "currency": tariff.currency,
            "power_w": round(sum(m.power_w for m in meters), 3),
            "since": episode.since.isoformat(),
            "minutes": round(minutes, 2),
            "device": ",".join(sorted(episode.meters)),
            "building": place.building,
            "room": place.room,
        }
        if reason:
            details["reason"] = reason
        summary = f"{kwh:.2f} kWh wasted ({cost:.2f} {tariff.currency})"
        if reason == "power_off":
            message = f"AC in {place.room} off after {_duration(minutes)} after hours, {summary}"
        elif reason == "schedule_started":
            local = wall_clock(self._site, at)
            message = (
                f"Schedule of {place.room} started at {local}; AC was on after hours for "
                f"{_duration(minutes)}, {summary}"
            )
        else:
            message = f"AC in {place.room} on after hours for {_duration(minutes)}, {summary}"
        return AlertSignal(
            site=self._site.id,
            rule=self.name,
            subject=place.subject,
            action=action,
            at=at,
            severity=Severity.WARNING,
            message=message,
            details=details,
        )

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        """Plain JSON-ready state, so a restart continues open episodes instead of restarting them."""
        return {
            "version": SNAPSHOT_VERSION,
            "meters": {
                meter_id: {
                    "last_time": _iso(m.last_time),
                    "power_w": m.power_w,
                    "run_start": _iso(m.run_start),
                    "run_kwh": m.run_kwh,
                }
                for meter_id, m in self._meters.items()
            },
            "episodes": {
                subject: {
                    "since": e.since.isoformat(),
                    "meters": sorted(e.meters),
                    "closed_kwh": e.closed_kwh,
                    "raised": e.raised,
                }
                for subject, e in self._episodes.items()
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with a snapshot; episodes of rooms no longer configured are dropped.

        The schedule end of each episode is recomputed from the current site configuration.
        """
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported {self.name} snapshot version {snapshot.get('version')!r}")
        self._meters = {
            meter_id: _Meter(
                last_time=_parse(m["last_time"]),
                power_w=float(m["power_w"]),
                run_start=_parse(m["run_start"]),
                run_kwh=float(m["run_kwh"]),
            )
            for meter_id, m in snapshot["meters"].items()
        }
        self._episodes = {}
        for subject, e in snapshot["episodes"].items():
            if subject not in self._rooms:
                continue
            since = datetime.fromisoformat(e["since"])
            self._episodes[subject] = _Episode(
                since=since,
                ends_at=self._schedules.next_change(self._rooms[subject].schedule, since),
                meters=set(e["meters"]),
                closed_kwh=float(e["closed_kwh"]),
                raised=bool(e["raised"]),
            )


# --------------------------------------------------------------------------- helpers


def _index_places(site: SiteConfig) -> dict[str, _Place]:
    """Meter id -> place. Subject is the room id, or "building:room" if the id repeats."""
    counts: dict[str, int] = {}
    for building in site.buildings:
        for room in building.rooms:
            counts[room.id] = counts.get(room.id, 0) + 1
    places = {}
    for building in site.buildings:
        for room in building.rooms:
            subject = room.id if counts[room.id] == 1 else f"{building.id}:{room.id}"
            place = _Place(subject=subject, building=building.id, room=room.id, schedule=room.schedule)
            places.update({device: place for device in room.devices})
    return places


def _duration(minutes: float) -> str:
    whole = int(minutes)
    return f"{whole} min" if whole < 60 else f"{whole // 60} h {whole % 60:02d} min"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
