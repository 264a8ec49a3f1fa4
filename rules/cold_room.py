"""Cold rooms, freezers and food stores too warm for too long (食品安全).

A cold room's air warms for a few tens of minutes at every defrost cycle and whenever its
door is open, so a single warm reading means nothing: the alert needs the room above its
limit for `warm_minutes`, chosen longer than the longest defrost. A dip back under the
limit shorter than `clear_minutes` is no break: a sensor's noise around a room hovering
just above its limit, or a compressor failing between lengthening defrosts, would
otherwise restart the timer for ever and never page. The
door left open is the doors rule's (a per-door `held_open_seconds`), a silent sensor the
deadman rule's; this family owns only the temperature. See docs/rules.md#cold_room.

Imports no `warden.config` at module level: warden/config.py hooks ColdRoomConfig into
RulesConfig, and the site model arrives as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from rules.alerts import AlertSignal, Severity, SignalAction
from warden.config import SiteConfig, StrictModel
from warden.events import Event, Quantity, Reading

RULE = "cold_room_warm"
#: The alert rules this family emits (rules/config.py: ALERT_RULES).
RULE_NAMES = (RULE,)
SNAPSHOT_VERSION = 2

_CELSIUS_UNITS = {"c", "°c", "degc", "celsius"}
_FAHRENHEIT_UNITS = {"f", "°f", "degf", "fahrenheit"}


class ColdRoomLimits(StrictModel):
    """One cold room's limits; a key left out takes the family's."""

    max_c: float | None = Field(default=None, description="Warmer than this is too warm, °C")
    warm_minutes: float | None = Field(default=None, gt=0)


class ColdRoomConfig(StrictModel):
    """`rules.cold_room`: which rooms are cold rooms (their temperature sensors are judged)
    and their limits. Defaults: chilled storage 0-8 °C (China's catering food-safety code),
    45 min: longer than a defrost cycle's few tens of minutes."""

    enabled: bool = True
    max_c: float = Field(default=8.0, description="Default limit, °C; a freezer: -12")
    warm_minutes: float = Field(default=45.0, gt=0, description="Above the limit this long, without a break, raises")
    clear_minutes: float = Field(
        default=10.0, ge=0, description="Back at or below the limit this long ends a warm stretch; shorter dips do not"
    )
    update_minutes: float = Field(default=5.0, ge=0)
    rooms: dict[str, ColdRoomLimits] = Field(
        default_factory=dict, description="Room id (or building:room) -> limits; {} takes the defaults"
    )

    def limits(self, room: str) -> tuple[float, float]:
        """(max_c, warm_minutes) of a listed room."""
        own = self.rooms[room]
        return (
            own.max_c if own.max_c is not None else self.max_c,
            own.warm_minutes if own.warm_minutes is not None else self.warm_minutes,
        )


@dataclass(frozen=True)
class _Room:
    subject: str
    building: str
    room: str
    max_c: float
    warm: timedelta


@dataclass
class _Warm:
    """One stretch of a room above its limit: from the first warm reading to the first
    reading back at or below it that stays so for clear_minutes (`cool_since`, `cool_c`:
    that reading, while it is not yet confirmed)."""

    since: datetime
    peak_c: float
    peak_at: datetime
    last_c: float
    last_at: datetime
    devices: set[str] = field(default_factory=set)
    raised: bool = False
    signalled_at: datetime | None = None
    cool_since: datetime | None = None
    cool_c: float = 0.0


class ColdRoomRule:
    """cold_room_warm: a listed room's sensors above max_c for warm_minutes in a row."""

    name = "cold_room"
    reads = frozenset({"reading"})

    def __init__(self, site: SiteConfig, config: ColdRoomConfig) -> None:
        self._site = site
        self._config = config
        self._update = timedelta(minutes=config.update_minutes)
        self._clear = timedelta(minutes=config.clear_minutes)
        self._sensors = _index_sensors(site, config)
        self._last: dict[str, tuple[datetime, float]] = {}  # device -> last reading (time, °C)
        self._warm: dict[str, _Warm] = {}  # subject -> open warm stretch
        self._settled: dict[str, datetime] = {}  # subject -> the reading that ended its last stretch
        self.stats: dict[str, int] = {"out_of_order": 0, "unsupported_unit": 0, "readings": 0, "settled": 0}

    def on_event(self, event: Event) -> list[AlertSignal]:
        if not isinstance(event, Reading) or event.quantity != Quantity.TEMPERATURE:
            return []
        room = self._sensors.get(event.device)
        if room is None:
            return []
        value = to_celsius(event.value, event.unit)
        if value is None:
            self.stats["unsupported_unit"] += 1
            return []
        last = self._last.get(event.device)
        if last is not None and event.event_time < last[0]:
            self.stats["out_of_order"] += 1
            return []
        self.stats["readings"] += 1
        self._last[event.device] = (event.event_time, value)
        return self._judge(room, event.device, event.event_time, value)

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """Nothing is judged on time alone: a silent sensor is the deadman rule's."""
        return []

    def _judge(self, room: _Room, device: str, at: datetime, celsius: float) -> list[AlertSignal]:
        settled = self._settled.get(room.subject)
        if settled is not None and at <= settled and room.subject not in self._warm:
            # Another sensor's backlog of a stretch already judged (its uplink was down): the
            # room's history up to there is told; a second alert for it would be a second page.
            self.stats["settled"] += 1
            return []
        warm = self._warm.get(room.subject)
        if celsius <= room.max_c:
            if warm is None:
                return []
            others_warm = any(
                self._last[d][1] > room.max_c for d in warm.devices if d != device and d in self._last
            )
            if others_warm:
                warm.devices.discard(device)
                return []
            if warm.cool_since is None:
                warm.cool_since, warm.cool_c = at, celsius
            if at - warm.cool_since < self._clear:
                return []  # maybe a dip: the stretch goes on if it warms again within clear_minutes
            del self._warm[room.subject]
            self._settled[room.subject] = at
            if not warm.raised:
                return []  # a defrost or a door opened briefly: tolerated
            return [self._signal(SignalAction.RESOLVE, room, warm, warm.cool_since, warm.cool_c, reason="back_in_range")]
        if warm is None:
            warm = self._warm[room.subject] = _Warm(since=at, peak_c=celsius, peak_at=at, last_c=celsius, last_at=at)
        warm.devices.add(device)
        warm.last_c, warm.last_at, warm.cool_since = celsius, at, None
        if celsius > warm.peak_c:
            warm.peak_c, warm.peak_at = celsius, at
        if not warm.raised:
            if at - warm.since < room.warm:
                return []
            warm.raised, warm.signalled_at = True, at
            return [self._signal(SignalAction.RAISE, room, warm, at, celsius)]
        assert warm.signalled_at is not None
        if at - warm.signalled_at < self._update:
            return []
        warm.signalled_at = at
        return [self._signal(SignalAction.UPDATE, room, warm, at, celsius)]

    def _signal(
        self, action: SignalAction, room: _Room, warm: _Warm, at: datetime, celsius: float, reason: str = ""
    ) -> AlertSignal:
        from rules.schedule import wall_clock  # here: this module is imported while warden.config loads

        minutes = (at - warm.since).total_seconds() / 60
        details: dict[str, float | str] = {
            "temperature_c": round(celsius, 2),
            "peak_c": round(warm.peak_c, 2),
            "peak_at": warm.peak_at.isoformat(),
            "max_c": room.max_c,
            "since": warm.since.isoformat(),
            "until": at.isoformat(),
            "minutes": round(minutes, 2),
            "device": ",".join(sorted(warm.devices)),
            "building": room.building,
            "room": room.room,
        }
        since = wall_clock(self._site, warm.since, ref=at)
        length = _duration(minutes)
        if reason:
            details["reason"] = reason
            message = (f"Cold room {room.room} back to {celsius:.1f} °C at {wall_clock(self._site, at, ref=at)} "
                       f"after {length} above {room.max_c:g} °C since {since} (peak {warm.peak_c:.1f} °C)")
        else:
            message = (f"Cold room {room.room} at {celsius:.1f} °C, above {room.max_c:g} °C for {length} since "
                       f"{since} (peak {warm.peak_c:.1f} °C)")
        return AlertSignal(
            site=self._site.id, rule=RULE, subject=room.subject, action=action, at=at,
            severity=Severity.WARNING, message=message, details=details,
        )

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        """JSON-ready state: a restart continues a warm stretch instead of timing it from zero."""
        return {
            "version": SNAPSHOT_VERSION,
            "last": {d: [t.isoformat(), c] for d, (t, c) in self._last.items()},
            "warm": {
                subject: {
                    "since": w.since.isoformat(), "peak_c": w.peak_c, "peak_at": w.peak_at.isoformat(),
                    "last_c": w.last_c, "last_at": w.last_at.isoformat(), "devices": sorted(w.devices),
                    "raised": w.raised, "signalled_at": w.signalled_at.isoformat() if w.signalled_at else None,
                    "cool_since": w.cool_since.isoformat() if w.cool_since else None, "cool_c": w.cool_c,
                }
                for subject, w in self._warm.items()
            },
            "settled": {subject: at.isoformat() for subject, at in self._settled.items()},
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Version 1 (before clear_minutes) reads as stretches not cooling."""
        if snapshot.get("version") not in (1, SNAPSHOT_VERSION):
            raise ValueError(f"unsupported {self.name} snapshot version {snapshot.get('version')!r}")
        self._last = {d: (datetime.fromisoformat(t), float(c)) for d, (t, c) in snapshot["last"].items()}
        subjects = {r.subject for r in self._sensors.values()}
        self._warm = {
            subject: _Warm(
                since=datetime.fromisoformat(w["since"]), peak_c=float(w["peak_c"]),
                peak_at=datetime.fromisoformat(w["peak_at"]), last_c=float(w["last_c"]),
                last_at=datetime.fromisoformat(w["last_at"]), devices=set(w["devices"]), raised=bool(w["raised"]),
                signalled_at=datetime.fromisoformat(w["signalled_at"]) if w["signalled_at"] else None,
                cool_since=datetime.fromisoformat(w["cool_since"]) if w.get("cool_since") else None,
                cool_c=float(w.get("cool_c", 0.0)),
            )
            for subject, w in snapshot["warm"].items()
            if subject in subjects
        }
        self._settled = {s: datetime.fromisoformat(at) for s, at in snapshot.get("settled", {}).items() if s in subjects}


def cold_rooms(site: SiteConfig, config: ColdRoomConfig) -> list[dict[str, Any]]:
    """Each listed cold room with its limit and devices, in site order (the daily report's
    temperature log reads the rooms this rule judges)."""
    out: dict[str, dict[str, Any]] = {}
    for device, room in _index_sensors(site, config).items():
        entry = out.setdefault(room.subject, {
            "subject": room.subject, "building": room.building, "room": room.room,
            "limit_c": room.max_c, "warm_minutes": room.warm.total_seconds() / 60, "devices": [],
        })
        entry["devices"].append(device)
    return list(out.values())


def _index_sensors(site: SiteConfig, config: ColdRoomConfig) -> dict[str, _Room]:
    """Device -> its cold room, for every device of a room listed in `config.rooms` (by id or
    building:room; the subject is the room id, or building:room if the id repeats)."""
    counts: dict[str, int] = {}
    for building in site.buildings:
        for room in building.rooms:
            counts[room.id] = counts.get(room.id, 0) + 1
    index: dict[str, _Room] = {}
    for building in site.buildings:
        for room in building.rooms:
            key = next((k for k in (room.id, f"{building.id}:{room.id}") if k in config.rooms), None)
            if key is None:
                continue
            max_c, minutes = config.limits(key)
            subject = room.id if counts[room.id] == 1 else f"{building.id}:{room.id}"
            place = _Room(subject, building.id, room.id, max_c, timedelta(minutes=minutes))
            index.update({device: place for device in room.devices})
    return index


def to_celsius(value: float, unit: str) -> float | None:
    """A temperature in °C from a reading in C or F (any usual spelling); None otherwise."""
    unit = unit.strip().lower()
    if unit in _CELSIUS_UNITS:
        return value
    if unit in _FAHRENHEIT_UNITS:
        return (value - 32) * 5 / 9
    return None


def _duration(minutes: float) -> str:
    whole = int(minutes + 1e-9)
    return f"{whole} min" if whole < 60 else f"{whole // 60} h {whole % 60:02d} min"
