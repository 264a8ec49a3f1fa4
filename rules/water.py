"""Water leaks from meters and wet sensors: night flow, continuous flow, bursts, wet floors.

A meter sends flow (L/min, L/s, L/h, m3/h) or volume: a cumulative register (m3 or L)
whose deltas give the flow, or, without `cumulative`, the volume since its previous
reading. Either way the meter becomes a sequence of spans with a known flow
(`meter_spans`, shared with the morning report). A register that goes down was reset,
rolled over or replaced: that span's flow is unknown, never a negative flow or a spike,
but the new register's count is litres known to have passed. One that jumps up faster than
any meter runs (`max_flow_l_per_min`: a meter replaced by one reading higher, a glitch) is
unknown too, with nothing known to have passed: never a burst. A span longer than
max_gap_minutes is a gap: unknown, nothing passed that we know of.

Litres lost is one computation (`LeakLitres`, `litres_above_baseline`): the water above
the meter's baseline since the leak's start, with flow above the leak's own floor
counted as use on top of the leak, not as leak.

Meter readings are re-ordered per meter within the allowed lateness before they are
used, so the same data gives the same alerts in any arrival order within that bound.
Wet sensors are not delayed: a flood warning must not wait. See docs/rules.md#water.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator

from rules import state
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import local_instant, wall_clock
from warden.config import SiteConfig, StrictModel, wall_time
from warden.events import Event, Identifier, Quantity, Reading
from warden.i18n import Message

SNAPSHOT_VERSION = 2

NIGHT_FLOW = "water_night_flow"
CONTINUOUS_FLOW = "water_continuous_flow"
BURST = "water_burst"
WET = "water_wet"


#: The alert rules this family emits (rules/config.py: ALERT_RULES).
RULE_NAMES = (NIGHT_FLOW, CONTINUOUS_FLOW, BURST, WET)

#: No water meter a campus has runs faster: the overload flow Q4 of a DN100 meter is
#: 125 m3/h (2083 L/min). A reading or register step implying more is no water.
MAX_FLOW_L_PER_MIN = 2500.0


class WaterMeterOverride(StrictModel):
    """Settings of one meter that differ from the water rule's defaults."""

    burst_l_per_min: float | None = Field(default=None, gt=0)
    min_flow_l_per_min: float | None = Field(default=None, ge=0)
    baseline_l_per_min: float | None = Field(
        default=None, ge=0, description="The meter's normal flow, not counted as lost; none: learned from quiet windows"
    )


class WaterConfig(StrictModel):
    """Leaks from water meters and wet sensors (rules/water.py, docs/rules.md#water)."""

    enabled: bool = True
    meters: list[Identifier] | None = Field(
        default=None, description="Devices to watch; none: every device sending flow, volume or wet readings"
    )
    min_flow_l_per_min: float = Field(default=0.5, ge=0, description="Flow at or below this is no flow")
    night_start: time = time(2, 0)
    night_end: time = time(5, 0)
    night_min_coverage: float = Field(default=0.8, gt=0, le=1)
    night_clean_windows: int = Field(default=2, ge=1)
    night_min_leak_minutes: float = Field(
        default=30.0, gt=0, description="Flow without a stop over at least this much of the window's end is a leak"
    )
    night_flow_minutes: float = Field(
        default=60.0, gt=0, description="Flow without a stop for this long inside the window raises at once"
    )
    continuous_hours: float = Field(default=24.0, gt=0)
    zero_minutes: float = Field(default=60.0, gt=0)
    burst_l_per_min: float = Field(default=60.0, gt=0)
    burst_minutes: float = Field(default=5.0, gt=0)
    max_flow_l_per_min: float = Field(
        default=MAX_FLOW_L_PER_MIN, gt=0,
        description="A flow or register step implying more is no water (a meter replaced by one reading higher): unknown",
    )
    max_gap_minutes: float = Field(default=65.0, gt=0)
    update_minutes: float = Field(default=15.0, ge=0)
    wet_clear_minutes: float = Field(
        default=10.0, ge=0, description="A wet sensor dry this long resolves its alert (0: at the first dry reading); "
        "water lapping at the probe, wet and dry by turns, stays one alert instead of a page per splash",
    )
    overrides: dict[Identifier, WaterMeterOverride] = Field(default_factory=dict)

    @field_validator("night_start", "night_end", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return wall_time(value)

    @model_validator(mode="after")
    def _window(self) -> WaterConfig:
        if self.night_start == self.night_end:
            raise ValueError("night_end: must differ from night_start")
        return self

_FLOW_TO_L_PER_MIN = {"l/min": 1.0, "lpm": 1.0, "l/s": 60.0, "l/h": 1 / 60, "m3/h": 1000 / 60}
_VOLUME_TO_L = {"l": 1.0, "m3": 1000.0}


# --------------------------------------------------------------------------- spans (public)


@dataclass(frozen=True)
class FlowSpan:
    """An interval of a meter's flow. `flow` None: unknown, either a gap (`gap`, nothing is
    known to have passed) or a register that went down (`litres`: what the new register
    counted since, a lower bound)."""

    start: datetime
    end: datetime
    flow: float | None = None  # L/min
    litres: float = 0.0
    gap: bool = False

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def part(self, start: datetime, end: datetime) -> FlowSpan:
        """The piece of this span between `start` and `end` (litres pro rata)."""
        share = (end - start).total_seconds() / self.seconds if self.seconds else 0.0
        return FlowSpan(start, end, self.flow, self.litres * share, self.gap)


@dataclass(frozen=True)
class MeterSample:
    """One meter reading as stored anywhere (the rule's events, the historian's points)."""

    at: datetime
    quantity: str  # "flow" or "volume"
    value: float
    unit: str
    cumulative: bool = False

    @property
    def source(self) -> str:
        if self.quantity == "flow":
            return "flow"
        return "register" if self.cumulative else "volume"


def sample_value(quantity: str, value: float, unit: str) -> float | None:
    """The reading in L/min (flow) or litres (volume); None for a unit we do not know."""
    table = _FLOW_TO_L_PER_MIN if quantity == "flow" else _VOLUME_TO_L
    factor = table.get(unit.strip().lower().replace("³", "3"))
    return None if factor is None else value * factor


def span_between(
    source: str, t0: datetime, v0: float, t1: datetime, v1: float, max_gap: timedelta,
    max_flow: float = MAX_FLOW_L_PER_MIN,
) -> FlowSpan:
    """The span between two readings (values in L/min or litres): left rectangle for flow,
    the delta of a register, the reported volume otherwise. A gap past `max_gap`; a register
    that went down (reset, rollover, replaced meter) is unknown with the new count as litres;
    a flow above `max_flow` L/min (a register jumping up: a meter replaced by one reading
    higher) is unknown with nothing known to have passed."""
    if t1 - t0 > max_gap:
        return FlowSpan(t0, t1, gap=True)
    minutes = (t1 - t0).total_seconds() / 60
    if source == "flow":
        flow = max(v0, 0.0)
        return FlowSpan(t0, t1, flow, flow * minutes) if flow <= max_flow else FlowSpan(t0, t1, None, 0.0)
    litres = v1 - v0 if source == "register" else v1
    if litres < 0:
        return FlowSpan(t0, t1, None, max(v1, 0.0) if source == "register" else 0.0)
    if minutes and litres / minutes > max_flow:
        return FlowSpan(t0, t1, None, 0.0)
    return FlowSpan(t0, t1, litres / minutes, litres)


def meter_spans(samples: Iterable[MeterSample], max_gap: timedelta, max_flow: float = MAX_FLOW_L_PER_MIN) -> list[FlowSpan]:
    """One meter's samples as spans, as the water rule sees them: in time order, samples of
    an unknown unit, of another source than the first, or repeating a time skipped."""
    spans: list[FlowSpan] = []
    source = ""
    last: tuple[datetime, float] | None = None  # time and value of the previous sample used
    for sample in sorted(samples, key=lambda s: s.at):
        value = sample_value(sample.quantity, sample.value, sample.unit)
        if value is None or (source and sample.source != source) or (last is not None and sample.at <= last[0]):
            continue
        source = sample.source
        if last is not None:
            spans.append(span_between(source, last[0], last[1], sample.at, value, max_gap, max_flow))
        last = (sample.at, value)
    return spans


@dataclass
class LeakLitres:
    """Water lost to a leak since `since`: the flow above `baseline` (the meter's normal
    flow), but never more than the leak's floor (the lowest flow above the no-flow limit
    seen since the leak started): water above the floor is use on top of the leak.

    Fed span by span in event-time order; `litres()` is exact at any moment, because every
    span above the limit flows at least at the floor. Unknown spans add only litres known to
    have passed (a replaced register's count), at most at the floor's rate."""

    since: datetime
    until: datetime
    baseline: float = 0.0  # L/min
    floor: float | None = None  # L/min
    above_s: float = 0.0
    below_litres: float = 0.0  # above the baseline, in spans at or below the limit
    unknown_s: float = 0.0
    unknown_litres: float = 0.0
    measured_litres: float = 0.0  # all the water the meter measured since `since`

    def add(self, span: FlowSpan, limit: float) -> None:
        self.until = max(self.until, span.end)
        if span.gap:
            return
        if span.flow is None:
            self.unknown_s += span.seconds
            self.unknown_litres += span.litres
            return
        self.measured_litres += span.litres
        if span.flow > limit:
            self.floor = span.flow if self.floor is None else min(self.floor, span.flow)
            self.above_s += span.seconds
        else:
            self.below_litres += max(span.flow - self.baseline, 0.0) * span.seconds / 60

    def litres(self) -> float:
        rate = max((self.floor or 0.0) - self.baseline, 0.0)
        return rate * self.above_s / 60 + self.below_litres + min(self.unknown_litres, rate * self.unknown_s / 60)


def litres_above_baseline(
    spans: Iterable[FlowSpan], since: datetime, until: datetime, *, baseline_l_per_min: float = 0.0,
    no_flow_l_per_min: float = 0.5,
) -> float:
    """Litres lost between `since` and `until` (event time) by the water rule's definition
    (`LeakLitres`): the alerts, the morning report and the API all count this way. The
    night-flow alert applies it to each run of the leak (it stops counting at a known stop)."""
    loss = LeakLitres(since=since, until=since, baseline=baseline_l_per_min)
    for span in sorted(spans, key=lambda s: s.start):
        start, end = max(span.start, since), min(span.end, until)
        if start < end:
            loss.add(span.part(start, end), no_flow_l_per_min)
    return loss.litres()


# --------------------------------------------------------------------------- rule state


@dataclass
class _Piece:
    """A stretch of a quiet window's current run: known flow above the limit, or unknown."""

    start: datetime
    end: datetime
    known: bool


@dataclass
class _Night:
    """What one meter's flow did in one quiet window so far."""

    start: datetime
    end: datetime
    covered_s: float = 0.0
    min_flow: float | None = None
    max_flow: float | None = None
    litres: float = 0.0
    pieces: list[_Piece] = field(default_factory=list)  # since the last stop in the window
    early: bool = False  # flow above the limit for night_flow_minutes inside the window


@dataclass
class _Leak:
    """An open night-flow alert: its litres, the windows judged since it was raised.

    Its litres count while its run goes on (`running`); a known stop freezes them into
    `earlier`, and a later run counts again only once judged leaking in its own window, so
    ordinary use between a repaired leak and its clean windows is not counted as lost."""

    since: datetime
    loss: LeakLitres  # the current (or last) leaking run
    raised_in: datetime  # start of the window it was raised in
    running: bool = True
    earlier: float = 0.0  # litres of earlier leaking runs
    nights: int = 1
    clean: int = 0
    updated: datetime | None = None
    window: str = ""  # the last quiet window it was judged or updated in, as local times
    window_end: datetime | None = None


@dataclass
class _Meter:
    source: str = ""  # "flow", "register" or "volume", from the first reading
    last_time: datetime | None = None
    last_value: float | None = None  # L/min for flow, litres for a register
    newest: datetime | None = None  # newest event time received, processed or not
    nights: dict[str, _Night] = field(default_factory=dict)
    judged: datetime | None = None  # end of the last window judged: it is never judged twice
    baseline: float = 0.0  # L/min: lowest flow of the last judged window without a leak
    run: LeakLitres | None = None  # flow above the limit since the last known stop or gap
    leak: _Leak | None = None
    quiet_s: float = 0.0
    stretch: LeakLitres | None = None  # since the end of the last no-flow stretch
    continuous_raised: bool = False
    continuous_updated: datetime | None = None
    burst_start: datetime | None = None
    burst_litres: float = 0.0
    burst_peak: float = 0.0
    burst_clear_s: float = 0.0
    burst_clear_litres: float = 0.0  # water of the spans under the limit since the burst last ran above it
    burst_raised: bool = False
    burst_updated: datetime | None = None


@dataclass
class _Wet:
    last_time: datetime | None = None
    since: datetime | None = None  # wet since; None: dry
    readings: int = 0
    updated: datetime | None = None
    dry_since: datetime | None = None  # while wet: the first dry reading not yet confirmed by wet_clear_minutes


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
        self._window_cache: dict[date, tuple[datetime, datetime]] = {}  # local day -> its quiet window
        self.stats: dict[str, int] = {
            "too_late": 0,
            "resets": 0,
            "gaps": 0,
            "unsupported_unit": 0,
            "mixed_source": 0,
            "night_incomplete": 0,
            "snapshot_discarded": 0,
        }

    # ----------------------------------------------------------------- Rule protocol

    def on_event(self, event: Event) -> list[AlertSignal]:
        if not isinstance(event, Reading) or event.quantity not in (Quantity.FLOW, Quantity.VOLUME, Quantity.WET):
            return []
        if self._watched is not None and event.device not in self._watched:
            return []
        if event.quantity == Quantity.WET:
            return self._on_wet(event)
        if _value(event) is None:
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
                    last = night.pieces[-1].end if night.pieces else None
                    if last is not None and last < night.end:  # the meter fell silent: unknown to the end
                        night.pieces.append(_Piece(last, night.end, known=False))
                    del meter.nights[key]
                    signals += self._judge_night(device, meter, night)
        for device in sorted(self._wet):  # a sensor that reports only changes says nothing more once dry
            signals += self._wet_dry(device, self._wet[device], now)
        return signals

    # ----------------------------------------------------------------- meters

    def _release(self, device: str, meter: _Meter, until: datetime) -> list[AlertSignal]:
        pending = self._pending.get(device, [])
        signals: list[AlertSignal] = []
        while pending and pending[0].event_time <= until:
            signals += self._use(device, meter, pending.pop(0))
        return signals

    def _use(self, device: str, meter: _Meter, reading: Reading) -> list[AlertSignal]:
        """Turn one reading (in event-time order) into the span since the previous one."""
        source = _source(reading)
        if meter.source and source != meter.source:
            self.stats["mixed_source"] += 1
            return []
        if meter.last_time is not None and reading.event_time <= meter.last_time:
            self.stats["too_late"] += 1
            return []
        meter.source = source
        value = _value(reading) or 0.0
        previous_time, previous_value = meter.last_time, meter.last_value
        meter.last_time, meter.last_value = reading.event_time, value
        if previous_time is None or previous_value is None:
            return []
        span = span_between(source, previous_time, previous_value, reading.event_time, value, self._max_gap,
                            self._config.max_flow_l_per_min)
        if span.gap:
            self.stats["gaps"] += 1
        elif span.flow is None:
            self.stats["resets"] += 1
        signals: list[AlertSignal] = []
        for part in self._split(span):
            signals += self._night_part(device, meter, part, last=part.end == span.end)
        signals += self._continuous(device, meter, span)
        signals += self._burst(device, meter, span)
        return signals

    def _split(self, span: FlowSpan) -> list[FlowSpan]:
        """The span cut at the quiet windows' edges, so each part is inside or outside one."""
        cuts = sorted({t for w in self._windows(span.start, span.end) for t in w if span.start < t < span.end})
        edges = [span.start, *cuts, span.end]
        return [span.part(a, b) for a, b in zip(edges, edges[1:])] if cuts else [span]

    # ----------------------------------------------------------------- night flow

    def _night_part(self, device: str, meter: _Meter, part: FlowSpan, last: bool) -> list[AlertSignal]:
        """Follow the run and the open leak through one part of a span; judge the window it ends."""
        limit = self._min_flow(device)
        flowing = part.flow is not None and part.flow > limit
        if part.gap:
            if last:
                meter.run = None  # silence: we do not know that it kept running
        elif part.flow is not None and not flowing:
            meter.run = None
        elif meter.run is not None or flowing:
            meter.run = meter.run or LeakLitres(since=part.start, until=part.start, baseline=self._baseline(device, meter))
            meter.run.add(part, limit)
        leak = meter.leak
        if leak is not None and leak.running:
            leak.loss.add(part, limit)
            leak.running = part.flow is None or flowing  # a known stop ends this run of the leak
        signals: list[AlertSignal] = []
        night = self._night_of(meter, part)
        if night is not None:
            self._add_to_night(night, part, flowing)
            need = self._config.night_flow_minutes * 60
            if flowing and not night.early and _tail_start(night.pieces, part.end, need, self._coverage) is not None:
                night.early = True
                if leak is None and meter.run is not None:
                    meter.leak = _Leak(meter.run.since, replace(meter.run), raised_in=night.start, updated=part.end)
                    signals.append(self._night_signal(SignalAction.RAISE, device, meter, night, part.end))
                elif leak is not None:
                    self._resume(leak, meter.run)
        at_end = night is not None and part.end >= night.end  # the judgement below updates then
        if (
            leak is not None and leak.running and flowing and not at_end
            and (leak.updated is None or part.end - leak.updated >= self._update)
        ):
            leak.updated = part.end
            signals.append(self._night_signal(SignalAction.UPDATE, device, meter, night, part.end))
        if night is not None and part.end >= night.end:
            del meter.nights[night.start.isoformat()]
            signals += self._judge_night(device, meter, night)
        return signals

    def _window_text(self, night: _Night) -> str:
        """The window as local times, with their offsets on a night the clocks change."""
        return f"{wall_clock(self._site, night.start, ref=night.start)}-{wall_clock(self._site, night.end, ref=night.end)}"

    @property
    def _coverage(self) -> float:
        return self._config.night_min_coverage

    def _night_of(self, meter: _Meter, part: FlowSpan) -> _Night | None:
        """The quiet window this part lies in, if any and not judged yet."""
        for start, end in self._windows(part.start, part.end):
            if start <= part.start and part.end <= end:
                if meter.judged is not None and end <= meter.judged:
                    return None
                return meter.nights.setdefault(start.isoformat(), _Night(start=start, end=end))
        return None

    @staticmethod
    def _add_to_night(night: _Night, part: FlowSpan, flowing: bool) -> None:
        if part.flow is None:
            _extend(night.pieces, part.start, part.end, known=False)
            return
        night.covered_s += part.seconds
        night.litres += part.litres
        night.min_flow = part.flow if night.min_flow is None else min(night.min_flow, part.flow)
        night.max_flow = part.flow if night.max_flow is None else max(night.max_flow, part.flow)
        if flowing:
            _extend(night.pieces, part.start, part.end, known=True)
        else:
            night.pieces.clear()

    def _windows(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The quiet windows (UTC start, end) overlapping [start, end)."""
        zone, cfg = self._site.zone, self._config
        first = start.astimezone(zone).date() - timedelta(days=1)
        days = (end.astimezone(zone).date() - first).days + 1
        windows = []
        for n in range(days):
            day = first + timedelta(days=n)
            window = self._window_cache.get(day)
            if window is None:
                end_day = day if cfg.night_end > cfg.night_start else day + timedelta(days=1)
                window = local_instant(zone, day, cfg.night_start), local_instant(zone, end_day, cfg.night_end)
                if len(self._window_cache) > 64:
                    self._window_cache.clear()
                self._window_cache[day] = window
            if window[0] < end and window[1] > start:
                windows.append(window)
        return windows

    def _judge_night(self, device: str, meter: _Meter, night: _Night) -> list[AlertSignal]:
        """At a window's end: leaking (flow above the limit for night_flow_minutes inside it,
        or without a stop over its last night_min_leak_minutes), clean, or neither."""
        meter.judged = max(meter.judged or night.end, night.end)
        need = self._config.night_min_leak_minutes * 60
        tail = _tail_start(night.pieces, night.end, need, self._coverage) is not None  # meter.run is that tail
        leak = meter.leak
        if night.early or tail:
            if leak is None:
                if meter.run is None:
                    return []
                meter.leak = _Leak(meter.run.since, replace(meter.run), raised_in=night.start, updated=night.end)
                return [self._night_signal(SignalAction.RAISE, device, meter, night, night.end)]
            if tail:
                self._resume(leak, meter.run)
            if leak.raised_in == night.start and leak.updated == night.end:
                return []  # raised by this very part: the raise already says it
            if leak.raised_in != night.start:
                leak.nights += 1
            leak.clean, leak.updated = 0, night.end
            return [self._night_signal(SignalAction.UPDATE, device, meter, night, night.end)]
        length = (night.end - night.start).total_seconds()
        if night.min_flow is None or night.max_flow is None or night.covered_s < self._coverage * length:
            self.stats["night_incomplete"] += 1
            return []
        limit = self._min_flow(device)
        meter.baseline = min(night.min_flow, limit)
        if leak is None or night.max_flow > limit:
            return []  # no alert, or flow that stopped only for a while: neither leak nor clean
        leak.clean += 1
        if leak.clean < self._config.night_clean_windows:
            return [self._night_signal(SignalAction.UPDATE, device, meter, night, night.end)]
        meter.leak = None
        return [self._night_signal(SignalAction.RESOLVE, device, meter, night, night.end, leak)]

    @staticmethod
    def _resume(leak: _Leak, run: LeakLitres | None) -> None:
        """A run judged leaking while the alert is open and its litres frozen: count it from its start."""
        if not leak.running and run is not None:
            leak.earlier += leak.loss.litres()
            leak.loss, leak.running = replace(run), True

    def _night_signal(
        self, action: SignalAction, device: str, meter: _Meter, night: _Night | None, at: datetime,
        leak: _Leak | None = None,
    ) -> AlertSignal:
        leak = leak or meter.leak
        assert leak is not None
        loss = leak.loss
        if night is not None:
            leak.window, leak.window_end = self._window_text(night), night.end
        lost, until = leak.earlier + loss.litres(), wall_clock(self._site, at, ref=at)
        since, running = wall_clock(self._site, leak.since, ref=at), wall_clock(self._site, loss.since, ref=at)
        window, zone = leak.window, self._site.zone
        if leak.window_end is not None and leak.window_end.astimezone(zone).date() != at.astimezone(zone).date():
            # a later day's update
            window = Message("{window} on {date}", window=window, date=leak.window_end.astimezone(zone).date().isoformat())
        details: dict[str, float | str] = {
            "min_flow_l_per_min": round(loss.floor or 0.0, 4),
            "baseline_l_per_min": round(loss.baseline, 4),
            "litres_lost": round(lost, 1),
            "estimated_litres_lost": round(lost, 1),
            "since": leak.since.isoformat(),
            "until": at.isoformat(),
            "nights": leak.nights,
            "clean_windows": leak.clean,
            "window": window,
        }
        if night is not None:
            details["window_litres"] = round(night.litres, 1)
        if action is SignalAction.RESOLVE:
            message = Message(
                "Night flow at {device} stopped: {clean} clean quiet windows (last {window}); "
                "about {lost:.0f} L lost from {since} to {until}",
                device=device, clean=leak.clean, window=window, lost=lost, since=since, until=until,
            )
        elif leak.clean:
            needed = self._config.night_clean_windows
            message = Message("No night flow at {device} during {window}: clean window {clean} of {needed}", device=device,
                              window=window, clean=leak.clean, needed=needed)
        else:
            message = Message(
                "Suspected leak at {device}: water running since {running} without a stop "
                "(at least {flow:.2f} L/min), about {lost:.0f} L lost from {since} to {until}",
                device=device, running=running, flow=loss.floor or 0.0, lost=lost, since=since, until=until,
            )
        return self._signal(NIGHT_FLOW, action, device, at, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- continuous flow

    def _continuous(self, device: str, meter: _Meter, span: FlowSpan) -> list[AlertSignal]:
        """Flow with no no-flow stretch of zero_minutes for continuous_hours. A gap restarts
        the count (if not raised); a register reset does not: it hides no quiet stretch."""
        limit = self._min_flow(device)
        if span.gap:
            meter.quiet_s = 0.0
            if not meter.continuous_raised:
                meter.stretch = None
            return []
        if span.flow is None:
            meter.quiet_s = 0.0
            if meter.stretch is not None:
                meter.stretch.add(span, limit)
            return []
        if meter.stretch is None:
            meter.stretch = LeakLitres(since=span.start, until=span.start, baseline=self._baseline(device, meter))
        meter.stretch.add(span, limit)
        if span.flow <= limit:
            meter.quiet_s += span.seconds
            if meter.quiet_s >= self._config.zero_minutes * 60:
                signals = []
                if meter.continuous_raised:
                    signals = [self._continuous_signal(SignalAction.RESOLVE, device, meter, span.end)]
                meter.stretch, meter.continuous_raised = None, False
                return signals
        else:
            meter.quiet_s = 0.0
        if not meter.continuous_raised:
            if span.end - meter.stretch.since < timedelta(hours=self._config.continuous_hours):
                return []
            meter.continuous_raised, meter.continuous_updated = True, span.end
            return [self._continuous_signal(SignalAction.RAISE, device, meter, span.end)]
        if meter.continuous_updated is None or span.end - meter.continuous_updated >= self._update:
            meter.continuous_updated = span.end
            return [self._continuous_signal(SignalAction.UPDATE, device, meter, span.end)]
        return []

    def _continuous_signal(self, action: SignalAction, device: str, meter: _Meter, at: datetime) -> AlertSignal:
        stretch = meter.stretch
        assert stretch is not None
        hours = (at - stretch.since).total_seconds() / 3600
        lost = stretch.litres()
        details: dict[str, float | str] = {
            "hours": round(hours, 2),
            "litres": round(lost, 1),
            "litres_lost": round(lost, 1),
            "measured_litres": round(stretch.measured_litres, 1),
            "min_flow_l_per_min": round(stretch.floor or 0.0, 4),
            "baseline_l_per_min": round(stretch.baseline, 4),
            "average_l_per_min": round(stretch.measured_litres / (hours * 60), 3) if hours else 0.0,
            "since": stretch.since.isoformat(),
            "until": at.isoformat(),
        }
        since, until = wall_clock(self._site, stretch.since, ref=at), wall_clock(self._site, at, ref=at)
        if action is SignalAction.RESOLVE:
            quiet = self._config.zero_minutes
            message = Message(
                "Water at {device} stopped for {quiet:.0f} min (until {until}) after {hours:.1f} h; "
                "about {lost:.0f} L lost from {since}",
                device=device, quiet=quiet, until=until, hours=hours, lost=lost, since=since,
            )
        else:
            message = Message(
                "Water at {device} has not stopped for {hours:.1f} h: about {lost:.0f} L above normal "
                "from {since} to {until} ({measured:.0f} L measured)",
                device=device, hours=hours, lost=lost, since=since, until=until, measured=stretch.measured_litres,
            )
        return self._signal(CONTINUOUS_FLOW, action, device, at, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- burst

    def _burst(self, device: str, meter: _Meter, span: FlowSpan) -> list[AlertSignal]:
        """Flow above the meter's maximum for burst_minutes; cleared by as long below it. A
        span at or under the limit, but still flowing, that leaves the stretch's average above
        it is noise or a register's step (a 10 L register read each minute shows 65 L/min as
        60, 70, 60, ...), not a break: otherwise such a burst would restart its timer for ever
        and never page. A stop (no flow) is a break."""
        window = self._config.burst_minutes * 60
        limit = self._burst_limit(device)
        if span.flow is None:
            if meter.burst_raised:
                meter.burst_clear_s = 0.0
            else:
                meter.burst_start = None
            return []
        if span.flow <= limit:
            if not meter.burst_raised:
                stopped = span.flow <= self._min_flow(device)
                if meter.burst_start is None or stopped or not _averages_above(meter, span, limit):
                    meter.burst_start = None
                    return []
                meter.burst_litres += span.litres  # a dip inside the burst: its water is the burst's
                return self._burst_due(device, meter, span, window)
            meter.burst_clear_s += span.seconds
            meter.burst_clear_litres += span.litres
            if meter.burst_clear_s < window:
                return []
            signal = self._burst_signal(SignalAction.RESOLVE, device, meter, span.end)
            meter.burst_start, meter.burst_raised, meter.burst_clear_s, meter.burst_clear_litres = None, False, 0.0, 0.0
            return [signal]
        if meter.burst_start is None:
            meter.burst_start, meter.burst_litres, meter.burst_peak = span.start, 0.0, 0.0
        meter.burst_litres += meter.burst_clear_litres + span.litres  # a dip that did not clear it: the burst's
        meter.burst_clear_s, meter.burst_clear_litres = 0.0, 0.0
        meter.burst_peak = max(meter.burst_peak, span.flow)
        return self._burst_due(device, meter, span, window)

    def _burst_due(self, device: str, meter: _Meter, span: FlowSpan, window: float) -> list[AlertSignal]:
        """Raise once the stretch has lasted burst_minutes, then update every update_minutes."""
        assert meter.burst_start is not None
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
            below = wall_clock(self._site, at - timedelta(seconds=meter.burst_clear_s), ref=at)
            message = Message("Flow at {device} back below {limit:g} L/min since {below}", device=device, limit=limit,
                              below=below)
        else:
            message = Message(
                "Possible burst at {device}: above {limit:g} L/min since {since} (peak {peak:.0f} L/min, {litres:.0f} L)",
                device=device, limit=limit, since=wall_clock(self._site, meter.burst_start, ref=at), peak=meter.burst_peak,
                litres=meter.burst_litres,
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
            sensor.dry_since = sensor.dry_since or at
            return self._wet_dry(reading.device, sensor, at)
        sensor.readings += 1
        sensor.dry_since = None  # wet again within wet_clear_minutes: the same flood goes on
        if sensor.since is None:
            sensor.since, sensor.updated = at, at
            return [self._wet_signal(SignalAction.RAISE, reading.device, sensor, at)]
        if sensor.updated is None or at - sensor.updated >= self._update:
            sensor.updated = at
            return [self._wet_signal(SignalAction.UPDATE, reading.device, sensor, at)]
        return []

    def _wet_dry(self, device: str, sensor: _Wet, now: datetime) -> list[AlertSignal]:
        """Resolve, at its first dry reading, a sensor dry for wet_clear_minutes by `now`."""
        dry = sensor.dry_since
        if sensor.since is None or dry is None or now - dry < timedelta(minutes=self._config.wet_clear_minutes):
            return []
        signal = self._wet_signal(SignalAction.RESOLVE, device, sensor, dry)
        sensor.since, sensor.readings, sensor.dry_since = None, 0, None
        return [signal]

    def _wet_signal(self, action: SignalAction, device: str, sensor: _Wet, at: datetime) -> AlertSignal:
        assert sensor.since is not None
        minutes = (at - sensor.since).total_seconds() / 60
        details: dict[str, float | str] = {
            "since": sensor.since.isoformat(),
            "minutes": round(minutes, 2),
            "readings": sensor.readings,
        }
        if action is SignalAction.RESOLVE:
            message = Message("Wet sensor {device} dry again at {time} after {minutes:.0f} min", device=device, minutes=minutes,
                              time=wall_clock(self._site, at, ref=at))
        else:
            message = Message("Water detected by {device} since {time}", device=device,
                              time=wall_clock(self._site, sensor.since, ref=at))
        return self._signal(WET, action, device, at, Severity.CRITICAL, message, details)

    # ----------------------------------------------------------------- helpers

    def _min_flow(self, device: str) -> float:
        override = self._config.overrides.get(device)
        if override is not None and override.min_flow_l_per_min is not None:
            return override.min_flow_l_per_min
        return self._config.min_flow_l_per_min

    def _baseline(self, device: str, meter: _Meter) -> float:
        """The meter's normal flow: its override, else the lowest flow of its last quiet window
        judged without a leak (0 until one is), never above the no-flow limit."""
        override = self._config.overrides.get(device)
        if override is not None and override.baseline_l_per_min is not None:
            return override.baseline_l_per_min
        return min(meter.baseline, self._min_flow(device))

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
        """Plain JSON: meters (with open windows, runs and timers), readings not yet used, wet sensors."""
        return {
            "version": SNAPSHOT_VERSION,
            "meters": state.dump(self._meters),
            "pending": {d: [r.model_dump(mode="json") for r in rs] for d, rs in self._pending.items() if rs},
            "wet": state.dump(self._wet),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Version 1 (before leak runs and litres) cannot be migrated faithfully: start empty,
        counted as `snapshot_discarded`; meters relearn within one reading."""
        version = state.check_version(snapshot, self.name, (1, SNAPSHOT_VERSION))
        if version == 1:
            self.stats["snapshot_discarded"] += 1
            self._meters, self._pending, self._wet = {}, {}, {}
            return
        self._meters = {d: state.load(_Meter, m) for d, m in snapshot["meters"].items()}
        self._pending = {d: [Reading.model_validate(r) for r in rs] for d, rs in snapshot["pending"].items()}
        self._wet = {d: state.load(_Wet, w) for d, w in snapshot["wet"].items()}


# --------------------------------------------------------------------------- helpers


def _tail_start(pieces: list[_Piece], until: datetime, need_s: float, coverage: float) -> datetime | None:
    """The earliest start of a known piece from which the run to `until` has at least
    `need_s` seconds of known flow, covering at least `coverage` of its length; None if none."""
    known_after = sum((p.end - p.start).total_seconds() for p in pieces if p.known)
    for piece in pieces:
        if piece.known:
            length = (until - piece.start).total_seconds()
            if known_after >= need_s and known_after >= coverage * length:
                return piece.start
            known_after -= (piece.end - piece.start).total_seconds()
    return None


def _extend(pieces: list[_Piece], start: datetime, end: datetime, known: bool) -> None:
    """Append a piece, merged with the last one when it is of the same kind and adjacent."""
    if pieces and pieces[-1].known == known and pieces[-1].end == start:
        pieces[-1].end = end
    else:
        pieces.append(_Piece(start, end, known))


def _source(reading: Reading) -> str:
    if reading.quantity == Quantity.FLOW:
        return "flow"
    return "register" if reading.cumulative else "volume"


def _value(reading: Reading) -> float | None:
    """The reading in L/min (flow) or litres (volume)."""
    quantity = "flow" if reading.quantity == Quantity.FLOW else "volume"
    return sample_value(quantity, reading.value, reading.unit)


def _averages_above(meter: _Meter, span: FlowSpan, limit: float) -> bool:
    """Whether the pending burst, with `span` added, still averages above `limit` L/min."""
    assert meter.burst_start is not None
    minutes = (span.end - meter.burst_start).total_seconds() / 60
    return minutes > 0 and (meter.burst_litres + span.litres) / minutes > limit
