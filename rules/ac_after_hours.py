"""Circuits left on outside a room's schedule (AC, lights, water heating, other), and the
energy they waste.

The judgement is per *stretch*, not per on-period: a thermostat cycling an AC 12 min on /
8 min off all night is one unit left on, so it earns one alert with all its kWh, never
one alert per cycle, and its short runs add up instead of each staying under the grace.
One stretch per room and circuit kind (lights and AC in one room are two alerts, under
the rule name of the kind, `AFTER_HOURS_RULES`); refrigeration is always on and never
judged. Energy is integrated per meter with the left rectangle rule (each reading's power
holds until the next reading), skipping any interval longer than max_gap_minutes: we do
not guess what a silent meter drew. A meter is judged on with hysteresis (on above
standby + hysteresis_watts, off at or below standby), so a unit at standby whose readings
wander across the limit is never on, and a page needs min_kwh of waste. See docs/rules.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from rules import state
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import ScheduleSpans, wall_clock
from warden.calendar import Season, split_by_band
from warden.config import CircuitKind, SiteConfig, StrictModel
from warden.events import Event, Quantity, Reading
from warden.i18n import N_, Message, minutes_text

SNAPSHOT_VERSION = 3


#: Alert rule name per circuit kind judged after hours; refrigeration has none (always on).
#: The one place these names are written: the rule, the report and ALERT_RULES read it.
AFTER_HOURS_RULES: dict[CircuitKind, str] = {
    "ac": "ac_after_hours",
    "lighting": "lights_after_hours",
    "water_heating": "water_heating_after_hours",
    "other": "power_after_hours",
}


#: The alert rules this family emits (rules/config.py: ALERT_RULES).
RULE_NAMES = tuple(AFTER_HOURS_RULES.values())


class AcAfterHoursConfig(StrictModel):
    """Circuits left on after hours (AC, lights, water heating, other); docs/rules.md."""

    enabled: bool = True
    standby_watts: float = Field(default=60.0, ge=0, description="At or below this a meter is off")
    hysteresis_watts: float = Field(
        default=20.0, ge=0, description="On only above standby_watts + this; in between a meter keeps its state"
    )
    min_kwh: float = Field(default=0.1, ge=0, description="Waste of the stretch needed to raise")
    grace_minutes: float = Field(default=15.0, ge=0, description="On-time (summed, not contiguous) before raising")
    max_gap_minutes: float = Field(default=10.0, gt=0)
    min_duty: float = Field(default=0.25, ge=0, le=1, description="Share of the look-back on needed to raise")
    duty_window_minutes: float = Field(default=60.0, gt=0, description="Look-back of min_duty")
    off_minutes: float = Field(default=60.0, gt=0, description="Off this long ends the stretch's alert")
    update_minutes: float = Field(default=5.0, ge=0, description="At most one update per this much event time")


#: How messages name a kind: at the start of a sentence, inside one, and its verb.
_WORDS: dict[str, tuple[str, str, str]] = {
    "ac": (N_("AC"), N_("AC"), N_("was")),
    "lighting": (N_("Lights"), N_("lights"), N_("were")),
    "water_heating": (N_("Water heating"), N_("water heating"), N_("was")),
    "other": (N_("Equipment"), N_("equipment"), N_("was")),
}

_WATTS_PER_UNIT = {"w": 1.0, "kw": 1000.0}

#: Below this share of the stretch on, a message says the circuit was cycling.
_CYCLING_BELOW = 0.9

#: Slack of min_kwh for the float sum of many small rectangles (0.4 kW x 15 min is 0.1 kWh).
_KWH_ROUNDING = 1e-9


@dataclass(frozen=True)
class _Place:
    """Where a meter is and what it feeds: its room's alert subject, building, room, schedule, kind."""

    subject: str
    building: str
    room: str
    schedule: str | None
    kind: CircuitKind
    season: Season | None = None  # months the kind may run at all (outside: all day is waste)

    def where(self, roomwise: bool) -> dict[str, str | Season | None]:
        """The schedule query's room (only if the calendar has room exceptions: otherwise
        rooms of one schedule share its cached spans) and season."""
        if not roomwise:
            return {"season": self.season}
        return {"building": self.building, "room": self.room, "season": self.season}


@dataclass
class _Meter:
    """What one meter last said."""

    last_time: datetime | None = None
    power_w: float = 0.0
    on: bool = False  # by hysteresis: see AcAfterHoursRule._switch


Segment = tuple[datetime, datetime]


@dataclass
class _Stretch:
    """One room's circuits of one kind after hours: from the first on until off for
    off_minutes or the schedule's start. Times on are the union over the kind's meters."""

    since: datetime  # first reading on (above standby + hysteresis) in this stretch
    ends_at: datetime | None  # the schedule's next start; None: never
    meters: set[str] = field(default_factory=set)
    kwh: float = 0.0
    kwh_by_band: dict[str, float] = field(default_factory=dict)  # time-of-use tariffs only
    on_seconds: float = 0.0
    on_until: datetime | None = None  # on-time is counted up to here (union watermark)
    known_until: datetime | None = None  # reported time is counted up to here
    recent_on: list[Segment] = field(default_factory=list)  # within the duty look-back
    recent_known: list[Segment] = field(default_factory=list)
    off_since: datetime | None = None  # every meter of the kind off since
    raised: bool = False
    signalled_at: datetime | None = None  # last RAISE or UPDATE

    def until(self, at: datetime) -> datetime:
        """End of the span on so far: when it went off, or `at` while it is on."""
        return self.off_since if self.off_since is not None else at


class AcAfterHoursRule:
    """One alert per room and circuit kind per unscheduled stretch in which the circuit is
    on for grace_minutes in total at a duty of at least min_duty, wasting min_kwh."""

    name = "ac_after_hours"  # the family (config section, snapshot key); alerts use AFTER_HOURS_RULES
    reads = frozenset({"reading"})

    def __init__(self, site: SiteConfig, config: AcAfterHoursConfig) -> None:
        self._site = site
        self._schedules = ScheduleSpans(site)
        self._roomwise = site.calendar is not None and bool(site.calendar.exceptions)
        self._config = config
        self._grace = timedelta(minutes=config.grace_minutes)
        self._max_gap = timedelta(minutes=config.max_gap_minutes)
        self._window = timedelta(minutes=config.duty_window_minutes)
        self._off = timedelta(minutes=config.off_minutes)
        self._update = timedelta(minutes=config.update_minutes)
        self._on_above = config.standby_watts + config.hysteresis_watts
        self._places = _index_places(site)
        self._groups = {(p.subject, p.kind): p for p in self._places.values()}
        self._members: dict[tuple[str, str], list[str]] = {}
        for meter_id, p in self._places.items():
            self._members.setdefault((p.subject, p.kind), []).append(meter_id)
        self._meters: dict[str, _Meter] = {}
        self._stretches: dict[tuple[str, str], _Stretch] = {}
        self.stats: dict[str, int] = {
            "out_of_order": 0,
            "gaps": 0,
            "unlocated": 0,
            "unsupported_unit": 0,
            "always_on": 0,
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
        if place.kind not in AFTER_HOURS_RULES:
            self.stats["always_on"] += 1
            return []
        return self._on_power(place, event.device, event.event_time, event.value * factor)

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """End stretches off for off_minutes, or whose schedule has started, by `now`.

        A silent meter whose last reading was on keeps its stretch open: telling silence
        apart is the deadman rule's job.
        """
        signals = []
        for key in list(self._stretches):
            signal = self._settle(self._groups[key], now)
            signals += [signal] if signal else []
        return signals

    # ----------------------------------------------------------------- readings

    def _on_power(self, place: _Place, meter_id: str, at: datetime, watts: float) -> list[AlertSignal]:
        meter = self._meters.setdefault(meter_id, _Meter())
        stretch = self._stretches.get((place.subject, place.kind))
        if (meter.last_time is not None and at < meter.last_time) or (stretch and at < stretch.since):
            self.stats["out_of_order"] += 1
            return []
        settled = self._settle(place, at)
        signals = [settled] if settled else []
        stretch = self._stretches.get((place.subject, place.kind))
        if stretch is None:
            stretch = self._maybe_start(place, meter_id, meter, at, watts)
            if stretch is None:
                return signals
        else:
            self._advance(place, stretch, meter_id, meter, at, watts)
        return signals + self._judge(place, stretch, at)

    def _maybe_start(self, place: _Place, meter_id: str, meter: _Meter, at: datetime, watts: float) -> _Stretch | None:
        meter.last_time, meter.power_w = at, watts
        self._switch(meter, watts)
        if not meter.on or self._schedules.is_scheduled(place.schedule, at, **place.where(self._roomwise)):
            return None
        ends_at = self._schedules.next_change(place.schedule, at, **place.where(self._roomwise))
        stretch = _Stretch(since=at, ends_at=ends_at, meters={meter_id}, on_until=at, known_until=at)
        self._stretches[(place.subject, place.kind)] = stretch
        return stretch

    def _advance(
        self, place: _Place, stretch: _Stretch, meter_id: str, meter: _Meter, at: datetime, watts: float
    ) -> None:
        """Count the meter's interval up to `at`, then note whether the kind is now off."""
        self._integrate(stretch, meter, at)
        meter.last_time, meter.power_w = at, watts
        self._switch(meter, watts)
        if meter.on:
            stretch.meters.add(meter_id)
            stretch.off_since = None
        elif stretch.off_since is None and not self._any_on(place):
            stretch.off_since = at

    def _switch(self, meter: _Meter, watts: float) -> None:
        """Hysteresis: on above standby + hysteresis_watts, off at or below standby, else as
        before; readings wandering a few watts around the standby limit never turn a meter on."""
        if watts > self._on_above:
            meter.on = True
        elif watts <= self._config.standby_watts:
            meter.on = False

    def _integrate(self, stretch: _Stretch, meter: _Meter, until: datetime) -> None:
        """Left rectangle from the meter's last reading to `until`; nothing across a too-long gap."""
        if meter.last_time is None or until <= meter.last_time:
            return
        start = max(meter.last_time, stretch.since)
        if until - meter.last_time > self._max_gap:
            self.stats["gaps"] += 1
            return
        if until <= start:
            return
        stretch.known_until = _add_segment(stretch.recent_known, stretch.known_until, start, until)
        if meter.on:
            stretch.kwh += meter.power_w * (until - start).total_seconds() / 3_600_000
            self._by_band(stretch, meter.power_w, start, until)
            before = stretch.on_until
            stretch.on_until = _add_segment(stretch.recent_on, before, start, until)
            stretch.on_seconds += (stretch.on_until - max(start, before or start)).total_seconds()

    def _judge(self, place: _Place, stretch: _Stretch, at: datetime) -> list[AlertSignal]:
        """RAISE once enough on-time at enough duty and min_kwh wasted; then UPDATE at most every
        update_minutes."""
        if stretch.raised:
            assert stretch.signalled_at is not None
            stretch.recent_on.clear()  # the look-back only serves the decision to raise
            stretch.recent_known.clear()
            if at - stretch.signalled_at < self._update:
                return []
            stretch.signalled_at = at
            return [self._signal(SignalAction.UPDATE, place, stretch, at)]
        start = max(stretch.since, at - self._window)
        for segments in (stretch.recent_on, stretch.recent_known):
            segments[:] = [(max(a, start), b) for a, b in segments if b > start]
        if stretch.on_seconds < self._grace.total_seconds() or self._recent_duty(stretch) < self._config.min_duty:
            return []
        if stretch.kwh < self._config.min_kwh - _KWH_ROUNDING:
            return []
        stretch.raised, stretch.signalled_at = True, at
        return [self._signal(SignalAction.RAISE, place, stretch, at)]

    @staticmethod
    def _recent_duty(stretch: _Stretch) -> float:
        """Share of the reported time within the look-back (already trimmed) that the kind was on."""
        known = sum((b - a).total_seconds() for a, b in stretch.recent_known)
        if known <= 0:
            return 1.0 if stretch.off_since is None else 0.0
        return sum((b - a).total_seconds() for a, b in stretch.recent_on) / known

    def _settle(self, place: _Place, now: datetime) -> AlertSignal | None:
        """End the stretch if it was over by `now`: off for off_minutes, or the schedule started."""
        key = (place.subject, place.kind)
        stretch = self._stretches.get(key)
        if stretch is None:
            return None
        off_end = None if stretch.off_since is None else stretch.off_since + self._off
        ends = [t for t in (off_end, stretch.ends_at) if t is not None and t <= now]
        if not ends:
            return None
        end = min(ends)
        reason = "power_off" if end == off_end else "schedule_started"
        for meter_id in self._members[key]:
            meter = self._meter(meter_id)
            if meter.on:  # on until the schedule start
                self._integrate(stretch, meter, end)
            if meter.last_time is not None:
                meter.last_time = max(meter.last_time, end)  # older readings belong to a settled stretch
        del self._stretches[key]
        if not stretch.raised:
            return None
        return self._signal(SignalAction.RESOLVE, place, stretch, end, reason=reason)

    def _by_band(self, stretch: _Stretch, watts: float, start: datetime, until: datetime) -> None:
        """Add the interval's kWh to the time-of-use band(s) it was drawn in."""
        tou, site = self._site.tariff.time_of_use, self._site
        if tou is None:
            return
        for band, seconds in split_by_band(tou, site.zone, site.calendar, site.holidays, start, until).items():
            stretch.kwh_by_band[band] = stretch.kwh_by_band.get(band, 0.0) + watts * seconds / 3_600_000

    def _cost(self, stretch: _Stretch) -> float:
        """Flat tariff: kWh x price; time of use: each band's kWh x its price."""
        tou = self._site.tariff.time_of_use
        if tou is None:
            return stretch.kwh * self._site.tariff.energy_per_kwh
        return sum(kwh * tou.bands[band] for band, kwh in stretch.kwh_by_band.items())

    def _any_on(self, place: _Place) -> bool:
        members = self._members[(place.subject, place.kind)]
        return any(self._meter(m).on for m in members)

    def _meter(self, meter_id: str) -> _Meter:
        return self._meters.setdefault(meter_id, _Meter())

    # ----------------------------------------------------------------- signals

    def _signal(
        self, action: SignalAction, place: _Place, stretch: _Stretch, at: datetime, reason: str = ""
    ) -> AlertSignal:
        meters = [self._meter(m) for m in sorted(stretch.meters)]
        until = stretch.until(at)
        tariff = self._site.tariff
        cost = self._cost(stretch)
        span_minutes = max((until - stretch.since).total_seconds(), 0.0) / 60
        on_minutes = stretch.on_seconds / 60
        duty = on_minutes / span_minutes if span_minutes > 0 else 1.0
        details: dict[str, float | str] = {
            "kind": place.kind,
            "wasted_kwh": round(stretch.kwh, 6),
            "cost": round(cost, 4),
            "currency": tariff.currency,
            "power_w": round(sum(m.power_w for m in meters), 3),
            "since": stretch.since.isoformat(),
            "until": until.isoformat(),
            "on_minutes": round(on_minutes, 2),
            "stretch_minutes": round(span_minutes, 2),
            "minutes": round(span_minutes, 2),  # the former name, kept for readers of old alerts
            "duty": round(min(duty, 1.0), 4),
            "device": ",".join(sorted(stretch.meters)),
            "building": place.building,
            "room": place.room,
        }
        for band in tariff.time_of_use.bands if tariff.time_of_use else ():
            kwh = stretch.kwh_by_band.get(band, 0.0)
            details[f"kwh_{band}"] = round(kwh, 6)
            details[f"cost_{band}"] = round(kwh * tariff.time_of_use.bands[band], 4)
        if place.season is not None:
            details["season"] = place.season.label()
            details["in_season"] = "yes" if place.season.contains(at.astimezone(self._site.zone).date()) else "no"
        if reason:
            details["reason"] = reason
        return AlertSignal(
            site=self._site.id,
            rule=AFTER_HOURS_RULES[place.kind],
            subject=place.subject,
            action=action,
            at=at,
            severity=Severity.WARNING,
            message=self._message(place, stretch, at, until, span_minutes, on_minutes, reason),
            details=details,
        )

    def _message(
        self, place: _Place, stretch: _Stretch, at: datetime, until: datetime, span: float, on: float, reason: str
    ) -> str:
        title, noun, verb = _WORDS[place.kind]
        cost = self._cost(stretch)
        summary = Message("{kwh:.2f} kWh wasted ({cost:.2f} {currency})", kwh=stretch.kwh, cost=cost,
                          currency=self._site.tariff.currency)
        dearest = self._dearest_band(stretch)
        if dearest is not None:
            summary = Message("{summary}, {kwh:.2f} kWh at {band}", summary=summary, band=dearest[0], kwh=dearest[1])
        if place.season is not None and not place.season.contains(at.astimezone(self._site.zone).date()):
            summary = Message("{summary}; out of season (runs {months})", summary=summary, months=place.season.label())
        length: Message = _duration(span)
        if span > 0 and on / span < _CYCLING_BELOW:
            length = Message("{length} (cycling: on {on} of it)", length=length, on=_duration(on))
        words = {"title": Message(title), "room": place.room, "length": length, "summary": summary}
        if reason == "power_off":
            off = wall_clock(self._site, until, ref=at)
            return Message("{title} in {room} off since {off} after {length} on after hours, {summary}", off=off, **words)
        if reason == "schedule_started":
            start = wall_clock(self._site, at, ref=at)
            return Message("Schedule of {room} started at {start}; {noun} {verb} on after hours for {length}, {summary}",
                           start=start, noun=Message(noun), verb=Message(verb), **words)
        return Message("{title} in {room} on after hours for {length}, {summary}", **words)

    def _dearest_band(self, stretch: _Stretch) -> tuple[str, float] | None:
        """The dearest band used and its kWh, when a time-of-use tariff prices the stretch."""
        tou = self._site.tariff.time_of_use
        used = [b for b, kwh in stretch.kwh_by_band.items() if kwh > 0]
        if tou is None or not used:
            return None
        band = max(used, key=lambda b: tou.bands[b])
        return band, stretch.kwh_by_band[band]

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        """Plain JSON-ready state, so a restart continues open stretches instead of restarting them."""
        return {
            "version": SNAPSHOT_VERSION,
            "meters": {
                meter_id: {"last_time": _iso(m.last_time), "power_w": m.power_w, "on": m.on}
                for meter_id, m in self._meters.items()
            },
            "episodes": {
                f"{kind}:{subject}": {
                    "subject": subject,
                    "kind": kind,
                    "since": s.since.isoformat(),
                    "meters": sorted(s.meters),
                    "kwh": s.kwh,
                    "kwh_by_band": dict(s.kwh_by_band),
                    "on_seconds": s.on_seconds,
                    "on_until": _iso(s.on_until),
                    "known_until": _iso(s.known_until),
                    "recent_on": [[a.isoformat(), b.isoformat()] for a, b in s.recent_on],
                    "recent_known": [[a.isoformat(), b.isoformat()] for a, b in s.recent_known],
                    "off_since": _iso(s.off_since),
                    "raised": s.raised,
                    "signalled_at": _iso(s.signalled_at),
                }
                for (subject, kind), s in self._stretches.items()
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with a snapshot; stretches of rooms or kinds no longer configured
        are dropped. The schedule start that ends each stretch is recomputed from the site.
        Versions before 3 kept no on-state: a meter was on above standby, as it is taken here."""
        if snapshot.get("version") == 1:
            snapshot = _from_version_1(snapshot)
        state.check_version(snapshot, self.name, (2, SNAPSHOT_VERSION))
        standby = self._config.standby_watts
        self._meters = {
            meter_id: _Meter(
                last_time=_parse(m["last_time"]),
                power_w=float(m["power_w"]),
                on=bool(m.get("on", float(m["power_w"]) > standby)),
            )
            for meter_id, m in snapshot["meters"].items()
        }
        self._stretches = {}
        for s in snapshot["episodes"].values():
            key = (str(s["subject"]), str(s["kind"]))
            if key not in self._groups:
                continue
            since = datetime.fromisoformat(s["since"])
            self._stretches[key] = _Stretch(
                since=since,
                ends_at=self._schedules.next_change(
                    self._groups[key].schedule, since, **self._groups[key].where(self._roomwise)
                ),
                meters=set(s["meters"]),
                kwh=float(s["kwh"]),
                kwh_by_band={str(b): float(v) for b, v in s.get("kwh_by_band", {}).items()},
                on_seconds=float(s["on_seconds"]),
                on_until=_parse(s["on_until"]),
                known_until=_parse(s["known_until"]),
                recent_on=[(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in s["recent_on"]],
                recent_known=[(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in s["recent_known"]],
                off_since=_parse(s["off_since"]),
                raised=bool(s["raised"]),
                signalled_at=_parse(s["signalled_at"]),
            )


# --------------------------------------------------------------------------- helpers


def _from_version_1(old: dict[str, Any]) -> dict[str, Any]:
    """A version 1 snapshot (one episode per room, judged per on-period) as version 2, so an
    upgrade in the middle of a night carries the open alert and its kWh on. Version 1 kept
    an episode only while a meter was on, and had no kinds (every meter was an AC); the
    on-time before the upgrade is not known, so it is taken as the elapsed time."""
    meters = old.get("meters", {})
    episodes = {}
    for subject, e in old.get("episodes", {}).items():
        own = [meters[m] for m in e["meters"] if m in meters]
        last = max((m["last_time"] for m in own if m["last_time"]), default=e["since"], key=datetime.fromisoformat)
        elapsed = (datetime.fromisoformat(last) - datetime.fromisoformat(e["since"])).total_seconds()
        episodes[f"ac:{subject}"] = {
            "subject": subject,
            "kind": "ac",
            "since": e["since"],
            "meters": e["meters"],
            "kwh": float(e["closed_kwh"]) + sum(float(m["run_kwh"]) for m in own),
            "on_seconds": elapsed,
            "on_until": last,
            "known_until": last,
            "recent_on": [[e["since"], last]],
            "recent_known": [[e["since"], last]],
            "off_since": None,
            "raised": bool(e["raised"]),
            "signalled_at": last if e["raised"] else None,
        }
    return {
        "version": 2,
        "meters": {m: {"last_time": v["last_time"], "power_w": v["power_w"]} for m, v in meters.items()},
        "episodes": episodes,
    }


def _add_segment(segments: list[Segment], counted_until: datetime | None, start: datetime, end: datetime) -> datetime:
    """Add [start, end) minus what is already counted (up to `counted_until`), merging with
    the last segment; returns the new watermark. Meters of one kind overlap in time, so
    their union is counted once (a lower bound when a meter reports far behind another)."""
    start = max(start, counted_until or start)
    if end <= start:
        return counted_until or end
    if segments and segments[-1][1] >= start:
        segments[-1] = (segments[-1][0], end)
    else:
        segments.append((start, end))
    return end


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
            for device in room.devices:
                places[device] = _Place(
                    subject=subject,
                    building=building.id,
                    room=room.id,
                    schedule=room.schedule,
                    kind=room.circuits.get(device, "ac"),
                    season=room.seasons.get(room.circuits.get(device, "ac")),
                )
    return places


def _duration(minutes: float) -> Message:
    return minutes_text(minutes)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
