"""Water leaks from meters and wet sensors: night flow, continuous flow, bursts, wet floors.

A meter sends flow (L/min, L/s, L/h, m3/h) or volume: a cumulative register (m3 or L)
whose deltas give the flow, or, without `cumulative`, the volume since its previous
reading. Either way the meter becomes a sequence of intervals with a known flow. A
register that goes down was reset or rolled over: that interval is unknown, never a
negative flow or a spike; so is any interval longer than max_gap_minutes.

Meter readings are re-ordered per meter within the allowed lateness before they are
used, so the same data gives the same alerts in any arrival order within that bound.
Wet sensors are not delayed: a flood warning must not wait. See docs/rules.md#water.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rules import state
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import local_instant, wall_clock
from warden.config import SiteConfig, WaterConfig
from warden.events import Event, Quantity, Reading

SNAPSHOT_VERSION = 1

NIGHT_FLOW = "water_night_flow"
CONTINUOUS_FLOW = "water_continuous_flow"
BURST = "water_burst"
WET = "water_wet"

_FLOW_TO_L_PER_MIN = {"l/min": 1.0, "lpm": 1.0, "l/s": 60.0, "l/h": 1 / 60, "m3/h": 1000 / 60}
_VOLUME_TO_L = {"l": 1.0, "m3": 1000.0}


@dataclass
class _Night:
    """What one meter's flow did in one quiet window so far."""

    start: datetime
    end: datetime
    covered_s: float = 0.0
    min_flow: float | None = None
    max_flow: float | None = None
    litres: float = 0.0


@dataclass
class _Leak:
    """An open night-flow alert: since the first leaking window, and clean windows since."""

    since: datetime
    last_end: datetime
    rate: float
    nights: int = 1
    clean: int = 0


@dataclass
class _Meter:
    source: str = ""  # "flow", "register" or "volume", from the first reading
    last_time: datetime | None = None
    last_value: float | None = None  # L/min for flow, litres for a register
    newest: datetime | None = None  # newest event time received, processed or not
    nights: dict[str, _Night] = field(default_factory=dict)
    judged: datetime | None = None  # end of the last window judged: it is never judged twice
    leak: _Leak | None = None
    anchor: datetime | None = None  # end of the last no-flow stretch (or start of data)
    quiet_s: float = 0.0
    flow_litres: float = 0.0  # since the anchor
    continuous_raised: bool = False
    continuous_updated: datetime | None = None
    burst_start: datetime | None = None
    burst_litres: float = 0.0
    burst_peak: float = 0.0
    burst_clear_s: float = 0.0
    burst_raised: bool = False
    burst_updated: datetime | None = None


@dataclass
class _Wet:
    last_time: datetime | None = None
    since: datetime | None = None  # wet since; None: dry
    readings: int = 0
    updated: datetime | None = None


@dataclass(frozen=True)
class _Span:
    """An interval of a meter's flow; flow None: unknown (a gap or a counter reset)."""

    start: datetime
    end: datetime
    flow: float | None = None  # L/min
    litres: float = 0.0

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


class WaterRule:
    """Night flow, continuous flow and bursts per meter; wet sensors on and off."""

    name = "water"
    reads = frozenset({"reading"})

    def __init__(self, site: SiteConfig, config: WaterConfig, lateness: timedelta = timedelta(0)) -> None:
        self._site = site
        self._config = config
        self._lateness = lateness
        self._max_gap = timedelta(minutes=config.max_gap_minutes)
        self._update = timedelta(minutes=config.update_minutes)
        self._watched = None if config.meters is None else frozenset(config.meters)
        self._meters: dict[str, _Meter] = {}
        self._pending: dict[str, list[Reading]] = {}
        self._wet: dict[str, _Wet] = {}
        self.stats: dict[str, int] = {
            "too_late": 0,
            "resets": 0,
            "gaps": 0,
            "unsupported_unit": 0,
            "mixed_source": 0,
            "night_incomplete": 0,
        }

    # ----------------------------------------------------------------- Rule protocol

    def on_event(self, event: Event) -> list[AlertSignal]:
        if not isinstance(event, Reading) or event.quantity not in (Quantity.FLOW, Quantity.VOLUME, Quantity.WET):
            return []
        if self._watched is not None and event.device not in self._watched:
            return []
        if event.quantity == Quantity.WET:
            return self._on_wet(event)
        if _factor(event) is None:
            self.stats["unsupported_unit"] += 1
            return []
        meter = self._meters.setdefault(event.device, _Meter())
        if meter.last_time is not None and event.event_time <= meter.last_time:
            self.stats["too_late"] += 1
            return []
        insort(self._pending.setdefault(event.device, []), event, key=lambda r: (r.event_time, r.id))
        meter.newest = max(meter.newest or event.event_time, event.event_time)
        return self._release(event.device, meter, meter.newest - self._lateness)

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """Use every reading up to `now`, then judge quiet windows no data can change any more."""
        signals: list[AlertSignal] = []
        for device in sorted(self._meters):
            meter = self._meters[device]
            signals += self._release(device, meter, now)
            for key, night in sorted(meter.nights.items()):
                if night.end + self._max_gap <= now:
                    del meter.nights[key]
                    signals += self._judge_night(device, meter, night)
        return signals

    # ----------------------------------------------------------------- meters

    def _release(self, device: str, meter: _Meter, until: datetime) -> list[AlertSignal]:
        pending = self._pending.get(device, [])
        signals: list[AlertSignal] = []
        while pending and pending[0].event_time <= until:
            signals += self._use(device, meter, pending.pop(0))
        return signals

    def _use(self, device: str, meter: _Meter, reading: Reading) -> list[AlertSignal]:
        """Turn one reading (in event-time order) into the interval since the previous one."""
        source = _source(reading)
        if meter.source and source != meter.source:
            self.stats["mixed_source"] += 1
            return []
        if meter.last_time is not None and reading.event_time <= meter.last_time:
            self.stats["too_late"] += 1
            return []
        meter.source = source
        value = reading.value * (_factor(reading) or 0.0)
        previous_time, previous_value = meter.last_time, meter.last_value
        meter.last_time, meter.last_value = reading.event_time, value
        if previous_time is None or previous_value is None:
            return []
        span = self._interval(source, previous_time, previous_value, reading.event_time, value)
        return self._span(device, meter, span)

    def _interval(self, source: str, t0: datetime, v0: float, t1: datetime, v1: float) -> _Span:
        """The span between two readings: left rectangle for flow, the delta of a register,
        the reported volume otherwise. Unknown across a long gap or a register that went down."""
        if t1 - t0 > self._max_gap:
            self.stats["gaps"] += 1
            return _Span(t0, t1)
        minutes = (t1 - t0).total_seconds() / 60
        if source == "flow":
            flow = max(v0, 0.0)
            return _Span(t0, t1, flow, flow * minutes)
        litres = v1 - v0 if source == "register" else v1
        if litres < 0:
            self.stats["resets"] += 1
            return _Span(t0, t1)
        return _Span(t0, t1, litres / minutes, litres)

    def _span(self, device: str, meter: _Meter, span: _Span) -> list[AlertSignal]:
        signals = self._nights(device, meter, span)
        signals += self._continuous(device, meter, span)
        signals += self._burst(device, meter, span)
        return signals

    # ----------------------------------------------------------------- night flow

    def _nights(self, device: str, meter: _Meter, span: _Span) -> list[AlertSignal]:
        """Add the span to the quiet windows it overlaps; judge those it reaches the end of."""
        if span.flow is not None:
            for start, end in self._windows(span.start, span.end):
                if meter.judged is not None and end <= meter.judged:
                    continue
                night = meter.nights.setdefault(start.isoformat(), _Night(start=start, end=end))
                overlap = (min(end, span.end) - max(start, span.start)).total_seconds()
                night.covered_s += overlap
                night.litres += span.litres * overlap / span.seconds
                night.min_flow = span.flow if night.min_flow is None else min(night.min_flow, span.flow)
                night.max_flow = span.flow if night.max_flow is None else max(night.max_flow, span.flow)
        signals: list[AlertSignal] = []
        for key, night in sorted(meter.nights.items()):
            if night.end <= span.end:
                del meter.nights[key]
                signals += self._judge_night(device, meter, night)
        return signals

    def _windows(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The quiet windows (UTC start, end) overlapping [start, end)."""
        zone, cfg = self._site.zone, self._config
        first = start.astimezone(zone).date() - timedelta(days=1)
        days = (end.astimezone(zone).date() - first).days + 1
        windows = []
        for n in range(days):
            day = first + timedelta(days=n)
            end_day = day if cfg.night_end > cfg.night_start else day + timedelta(days=1)
            w_start, w_end = local_instant(zone, day, cfg.night_start), local_instant(zone, end_day, cfg.night_end)
            if w_start < end and w_end > start:
                windows.append((w_start, w_end))
        return windows

    def _judge_night(self, device: str, meter: _Meter, night: _Night) -> list[AlertSignal]:
        meter.judged = max(meter.judged or night.end, night.end)
        length = (night.end - night.start).total_seconds()
        covered = night.covered_s >= self._config.night_min_coverage * length
        if night.min_flow is None or night.max_flow is None or not covered:
            self.stats["night_incomplete"] += 1
            return []
        threshold = self._min_flow(device)
        leak = meter.leak
        if night.min_flow > threshold:
            if leak is None:
                meter.leak = _Leak(since=night.start, last_end=night.end, rate=night.min_flow)
                return [self._night_signal(SignalAction.RAISE, device, meter.leak, night)]
            leak.nights, leak.clean, leak.rate, leak.last_end = leak.nights + 1, 0, night.min_flow, night.end
            return [self._night_signal(SignalAction.UPDATE, device, leak, night)]
        if leak is None or night.max_flow > threshold:
            return []  # no alert, or flow that stopped only for a while: neither leak nor clean
        leak.clean += 1
        if leak.clean < self._config.night_clean_windows:
            return [self._night_signal(SignalAction.UPDATE, device, leak, night)]
        meter.leak = None
        return [self._night_signal(SignalAction.RESOLVE, device, leak, night)]

    def _night_signal(self, action: SignalAction, device: str, leak: _Leak, night: _Night) -> AlertSignal:
        lost = leak.rate * (leak.last_end - leak.since).total_seconds() / 60
        window = f"{wall_clock(self._site, night.start)}-{wall_clock(self._site, night.end)}"
        details: dict[str, float | str] = {
            "min_flow_l_per_min": round(leak.rate, 4),
            "estimated_litres_lost": round(lost, 1),
            "window_litres": round(night.litres, 1),
            "nights": leak.nights,
            "clean_windows": leak.clean,
            "since": leak.since.isoformat(),
            "window": window,
        }
        if action is SignalAction.RESOLVE:
            message = f"Night flow at {device} stopped: {leak.clean} clean quiet windows (last {window})"
        elif leak.clean:
            needed = self._config.night_clean_windows
            message = f"No night flow at {device} during {window}: clean window {leak.clean} of {needed}"
        else:
            message = (
                f"Suspected leak at {device}: flow never below {leak.rate:.2f} L/min during {window}, "
                f"about {lost:.0f} L lost"
            )
        return self._signal(NIGHT_FLOW, action, device, night.end, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- continuous flow

    def _continuous(self, device: str, meter: _Meter, span: _Span) -> list[AlertSignal]:
        """Flow with no no-flow stretch of zero_minutes for continuous_hours."""
        if span.flow is None:
            meter.quiet_s = 0.0
            if not meter.continuous_raised:
                meter.anchor, meter.flow_litres = None, 0.0
            return []
        if meter.anchor is None:
            meter.anchor = span.start
        meter.flow_litres += span.litres
        if span.flow <= self._min_flow(device):
            meter.quiet_s += span.seconds
            if meter.quiet_s >= self._config.zero_minutes * 60:
                signals = []
                if meter.continuous_raised:
                    signals = [self._continuous_signal(SignalAction.RESOLVE, device, meter, span.end)]
                meter.anchor, meter.flow_litres, meter.continuous_raised = span.end, 0.0, False
                return signals
        else:
            meter.quiet_s = 0.0
        if not meter.continuous_raised:
            if span.end - meter.anchor < timedelta(hours=self._config.continuous_hours):
                return []
            meter.continuous_raised, meter.continuous_updated = True, span.end
            return [self._continuous_signal(SignalAction.RAISE, device, meter, span.end)]
        if meter.continuous_updated is None or span.end - meter.continuous_updated >= self._update:
            meter.continuous_updated = span.end
            return [self._continuous_signal(SignalAction.UPDATE, device, meter, span.end)]
        return []

    def _continuous_signal(self, action: SignalAction, device: str, meter: _Meter, at: datetime) -> AlertSignal:
        assert meter.anchor is not None
        hours = (at - meter.anchor).total_seconds() / 3600
        details: dict[str, float | str] = {
            "hours": round(hours, 2),
            "litres": round(meter.flow_litres, 1),
            "average_l_per_min": round(meter.flow_litres / (hours * 60), 3) if hours else 0.0,
            "since": meter.anchor.isoformat(),
        }
        if action is SignalAction.RESOLVE:
            quiet = self._config.zero_minutes
            message = f"Water at {device} stopped for {quiet:.0f} min (until {wall_clock(self._site, at)}) after {hours:.1f} h"
        else:
            since = wall_clock(self._site, meter.anchor)
            message = f"Water at {device} has not stopped for {hours:.1f} h ({meter.flow_litres:.0f} L since {since})"
        return self._signal(CONTINUOUS_FLOW, action, device, at, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- burst

    def _burst(self, device: str, meter: _Meter, span: _Span) -> list[AlertSignal]:
        """Flow above the meter's maximum for burst_minutes; cleared by as long below it."""
        window = self._config.burst_minutes * 60
        if span.flow is None:
            if meter.burst_raised:
                meter.burst_clear_s = 0.0
            else:
                meter.burst_start = None
            return []
        if span.flow <= self._burst_limit(device):
            if not meter.burst_raised:
                meter.burst_start = None
                return []
            meter.burst_clear_s += span.seconds
            if meter.burst_clear_s < window:
                return []
            signal = self._burst_signal(SignalAction.RESOLVE, device, meter, span.end)
            meter.burst_start, meter.burst_raised, meter.burst_clear_s = None, False, 0.0
            return [signal]
        if meter.burst_start is None:
            meter.burst_start, meter.burst_litres, meter.burst_peak = span.start, 0.0, 0.0
        meter.burst_clear_s = 0.0
        meter.burst_litres += span.litres
        meter.burst_peak = max(meter.burst_peak, span.flow)
        if not meter.burst_raised:
            if (span.end - meter.burst_start).total_seconds() < window:
                return []
            meter.burst_raised, meter.burst_updated = True, span.end
            return [self._burst_signal(SignalAction.RAISE, device, meter, span.end)]
        if meter.burst_updated is None or span.end - meter.burst_updated >= self._update:
            meter.burst_updated = span.end
            return [self._burst_signal(SignalAction.UPDATE, device, meter, span.end)]
        return []

    def _burst_signal(self, action: SignalAction, device: str, meter: _Meter, at: datetime) -> AlertSignal:
        assert meter.burst_start is not None
        minutes = (at - meter.burst_start).total_seconds() / 60
        limit = self._burst_limit(device)
        details: dict[str, float | str] = {
            "peak_l_per_min": round(meter.burst_peak, 3),
            "limit_l_per_min": limit,
            "litres": round(meter.burst_litres, 1),
            "minutes": round(minutes, 2),
            "since": meter.burst_start.isoformat(),
        }
        if action is SignalAction.RESOLVE:
            below = wall_clock(self._site, at - timedelta(seconds=meter.burst_clear_s))
            message = f"Flow at {device} back below {limit:g} L/min since {below}"
        else:
            message = (
                f"Possible burst at {device}: above {limit:g} L/min since {wall_clock(self._site, meter.burst_start)} "
                f"(peak {meter.burst_peak:.0f} L/min, {meter.burst_litres:.0f} L)"
            )
        return self._signal(BURST, action, device, at, Severity.CRITICAL, message, details)

    # ----------------------------------------------------------------- wet sensors

    def _on_wet(self, reading: Reading) -> list[AlertSignal]:
        sensor = self._wet.setdefault(reading.device, _Wet())
        at = reading.event_time
        if sensor.last_time is not None and at <= sensor.last_time:
            self.stats["too_late"] += 1
            return []
        sensor.last_time = at
        if reading.value < 0.5:
            if sensor.since is None:
                return []
            signal = self._wet_signal(SignalAction.RESOLVE, reading.device, sensor, at)
            sensor.since, sensor.readings = None, 0
            return [signal]
        sensor.readings += 1
        if sensor.since is None:
            sensor.since, sensor.updated = at, at
            return [self._wet_signal(SignalAction.RAISE, reading.device, sensor, at)]
        if sensor.updated is None or at - sensor.updated >= self._update:
            sensor.updated = at
            return [self._wet_signal(SignalAction.UPDATE, reading.device, sensor, at)]
        return []

    def _wet_signal(self, action: SignalAction, device: str, sensor: _Wet, at: datetime) -> AlertSignal:
        assert sensor.since is not None
        minutes = (at - sensor.since).total_seconds() / 60
        details: dict[str, float | str] = {
            "since": sensor.since.isoformat(),
            "minutes": round(minutes, 2),
            "readings": sensor.readings,
        }
        if action is SignalAction.RESOLVE:
            message = f"Wet sensor {device} dry again at {wall_clock(self._site, at)} after {minutes:.0f} min"
        else:
            message = f"Water detected by {device} since {wall_clock(self._site, sensor.since)}"
        return self._signal(WET, action, device, at, Severity.CRITICAL, message, details)

    # ----------------------------------------------------------------- helpers

    def _min_flow(self, device: str) -> float:
        override = self._config.overrides.get(device)
        if override is not None and override.min_flow_l_per_min is not None:
            return override.min_flow_l_per_min
        return self._config.min_flow_l_per_min

    def _burst_limit(self, device: str) -> float:
        override = self._config.overrides.get(device)
        if override is not None and override.burst_l_per_min is not None:
            return override.burst_l_per_min
        return self._config.burst_l_per_min


    def _signal(
        self, rule: str, action: SignalAction, device: str, at: datetime, severity: Severity, message: str,
        details: dict[str, float | str],
    ) -> AlertSignal:
        details = {**details, "device": device}
        place = self._site.locate(device)
        if place is not None:
            details.update(building=place.building, room=place.room)
        return AlertSignal(self._site.id, rule, device, action, at, severity, message, details)

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        """Plain JSON: meters (with open windows and timers), readings not yet used, wet sensors."""
        return {
            "version": SNAPSHOT_VERSION,
            "meters": state.dump(self._meters),
            "pending": {d: [r.model_dump(mode="json") for r in rs] for d, rs in self._pending.items() if rs},
            "wet": state.dump(self._wet),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported {self.name} snapshot version {snapshot.get('version')!r}")
        self._meters = {d: state.load(_Meter, m) for d, m in snapshot["meters"].items()}
        self._pending = {d: [Reading.model_validate(r) for r in rs] for d, rs in snapshot["pending"].items()}
        self._wet = {d: state.load(_Wet, w) for d, w in snapshot["wet"].items()}


# --------------------------------------------------------------------------- helpers


def _source(reading: Reading) -> str:
    if reading.quantity == Quantity.FLOW:
        return "flow"
    return "register" if reading.cumulative else "volume"


def _factor(reading: Reading) -> float | None:
    unit = reading.unit.strip().lower().replace("³", "3")
    table = _FLOW_TO_L_PER_MIN if reading.quantity == Quantity.FLOW else _VOLUME_TO_L
    return table.get(unit)

