"""Ground truth: which alerts a scenario's incidents must cause (with values and
tolerances), the file every run writes, and the comparison with what the system paged.

The truth is derived from the incidents by plain arithmetic on the facts of the night,
the way a facilities manager reads docs/rules.md: water running from 02:40 at 1.5 L/min
through the 02:00-05:00 quiet window is a leak, and about 1.5 L for every minute it ran
was lost; an air-conditioner cycled 12 min on / 8 min off from 18:30 to 07:30 after
hours is one alert for the evening, and its kWh are its rated power times its on-hours.
Nothing here imports or copies the rules (`rules/`): the calendar is
simulators/calendar.py, written from the documentation, so a bug in a rule shows up as a
disagreement, never as a shared mistake. Where a night sits within a tolerance of a
threshold the truth says so (`borderline`) instead of guessing which way a rule goes.

A scenario may also list `expected` alerts by hand; a disagreement with the derivation
is a warning (logged, and recorded in the ground-truth file), not a refusal, and values
written there are checked too. Format of the file: docs/simulators.md#ground-truth.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from simulators.base import ScheduleBook, epoch, utc
from simulators.calendar import (
    Span,
    keeps_holidays,
    local_instant,
    merge,
    outside,
    schedule_spans,
    seconds_by_band,
    what_day,
)
from simulators.cold_room import defrost_starts, door_open_spans
from simulators.door_controller import door_schedule
from simulators.scenario import (
    AcLeftOn,
    BrokerRestart,
    DeviceSilent,
    DoorAfterHours,
    DoorControllerSpec,
    DoorDenied,
    DoorForced,
    DoorHeldOpen,
    ExpectedAlert,
    GuardSpec,
    Incident,
    LateRound,
    PatrolReaderSpec,
    PowerMeterSpec,
    Scenario,
    SkipCheckpoint,
    SkipRound,
    TemperatureSensorSpec,
    WandDockSpec,
    WaterLeak,
    WetFloor,
)
from warden.config import PatrolRoute

log = logging.getLogger(__name__)

FORMAT = "warden.ground-truth"
VERSION = 2
#: Alerts a rule withdrew itself once late data showed the condition never held. The old
#: comparison (`compare`) sets them apart; `compare_history` counts them as pages.
RECONCILED = "reconciled from"
#: Relative tolerance of a derived value (the rules integrate readings a minute apart).
TOLERANCE = 0.2
#: A duration within this of a threshold is borderline (two readings a minute apart).
NEAR_SECONDS = 120.0
#: A rate within this share of a threshold is borderline.
NEAR_SHARE = 0.1

_MINUTE = 60.0
#: What a guard does, as simulators/guards.py walks it (a fact of the simulated night).
_FIRST_TAP_MINUTES = 2.0
#: A simulated load draws 90-100 % of its power each minute (simulators/ac_meter.py):
#: the low bound of its kWh.
_DRAW_LOW = 0.9
#: The alert raised for a circuit of each kind left on after hours; refrigeration runs
#: all the time by design and is never "after hours".
_AFTER_HOURS_RULE = {
    "ac": "ac_after_hours",
    "lighting": "lights_after_hours",
    "water_heating": "water_heating_after_hours",
    "other": "power_after_hours",
}


@dataclass(frozen=True)
class ImpliedAlert:
    """One alert the night must page: `values` are (low, high) bounds of a number in its
    last details (checked with `tolerance`, relative); `borderline` says the night is
    within a tolerance of a threshold, so the alert may or may not come (`why` says which)."""

    rule: str
    subject: str
    incident: str
    at: float | None = None  # when it should open, UTC epoch seconds (orders repeated alerts)
    values: dict[str, tuple[float, float]] = field(default_factory=dict, hash=False, compare=False)
    tolerance: float = TOLERANCE
    borderline: bool = False
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "subject": self.subject,
            "incident": self.incident,
            "at": _iso(utc(self.at)) if self.at is not None else None,
            "values": {k: [round(a, 3), round(b, 3)] for k, (a, b) in self.values.items()},
            "tolerance": self.tolerance,
            "borderline": self.borderline,
            "why": self.why,
        }


def implied_alerts(scenario: Scenario) -> list[ImpliedAlert]:
    """Every alert the scenario's night must page, in incident order, then by time."""
    alerts = _Derivation(scenario).all()
    order = {scenario.incident_id(i): n for n, i in enumerate(scenario.incidents)}
    return sorted(alerts, key=lambda a: (order.get(a.incident, len(order)), a.at or 0.0))


def expected_alerts(scenario: Scenario) -> list[ExpectedAlert]:
    """The ground truth as (rule, subject) entries, for callers of `compare`: what the
    incidents imply (borderline ones included: they may be paged). The derived values are
    ranges; `ground_truth_document` and `compare_history` carry and check them."""
    return [ExpectedAlert(rule=a.rule, subject=a.subject) for a in implied_alerts(scenario)]


def expected_disagreement(scenario: Scenario) -> list[str]:
    """Where the hand-written `expected` differs from what the incidents imply, as
    sentences (none: it agrees, or the scenario writes none), and settings that make the
    rules page what the truth does not. Borderline alerts may be listed or not."""
    problems = _unflagged_wand_routes(scenario)
    if scenario.expected is None:
        return problems
    implied = implied_alerts(scenario)
    written = Counter((e.rule, e.subject) for e in scenario.expected)
    certain = Counter((a.rule, a.subject) for a in implied if not a.borderline)
    possible = certain + Counter((a.rule, a.subject) for a in implied if a.borderline)
    missing = sorted((certain - written).elements())
    extra = sorted((written - possible).elements())
    if missing:
        problems.append(f"expected: does not list {missing}, which the incidents imply")
    if extra:
        problems.append(f"expected: lists {extra}, which the incidents do not imply")
    derived = {(a.rule, a.subject): a for a in implied}
    for e in scenario.expected:
        a = derived.get((e.rule, e.subject))
        for name, value in e.values.items() if a is not None else []:
            if name in a.values and not _within(value, *a.values[name], e.tolerance):  # type: ignore[union-attr]
                low, high = a.values[name]  # type: ignore[union-attr]
                problems.append(f"expected: {e.rule} {e.subject} {name} {value:g}, the incidents imply {low:.4g}-{high:.4g}")
    return problems


def _unflagged_wand_routes(scenario: Scenario) -> list[str]:
    """A guard with a wand on a route not marked `wand: true`: the rule cannot know to
    wait for the upload and pages the rounds as not started before it (issue 16 point 5),
    while the truth expects nothing of a round walked in time."""
    out = []
    for n, guard in enumerate(scenario.guards):
        route = scenario.route(guard.route)
        if guard.wand is not None and getattr(route, "wand", True) is False and scenario.rules.patrol.enabled:
            out.append(f"guards[{n}]: {guard.id} walks route {route.id} with a wand, but the route is not "
                       "`wand: true`: its rounds are judged before the upload")
    return out


def _within(value: float, low: float, high: float, tolerance: float) -> bool:
    return low * (1 - tolerance) - 1e-9 <= value <= high * (1 + tolerance) + 1e-9


def check_expected(scenario: Scenario, source: str | Path = "scenario") -> list[str]:
    """Log (as warnings) and return where `expected` disagrees with the derivation: the
    derivation may be the one that is wrong, so a scenario still loads."""
    problems = expected_disagreement(scenario)
    for problem in problems:
        log.warning("ground truth disagrees with the scenario", extra={"source": str(source), "problem": problem})
    return problems


# --------------------------------------------------------------------------- derivation


@dataclass(frozen=True)
class _Round:
    route: str
    day: date  # local date of the start
    at: time  # local start time
    start: float
    deadlines: tuple[float, ...]

    @property
    def key(self) -> str:
        """Alert subject of a round: route:YYYY-MM-DDTHH:MM, the local start (docs/rules.md)."""
        return f"{self.route}:{self.day.isoformat()}T{self.at:%H:%M}"


@dataclass(frozen=True)
class _On:
    """A load drawing `watts` over [a, b), because of `incident`."""

    a: float
    b: float
    watts: float
    device: str
    incident: str


class _Derivation:
    """The night's facts, judged the way docs/rules.md describes each rule's judgement."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.rules = scenario.rules
        self.start, self.end = epoch(scenario.start_utc), epoch(scenario.end_utc)
        self.book = ScheduleBook(scenario.site, self.start, self.end)
        self.zone = scenario.site.zone

    def all(self) -> list[ImpliedAlert]:
        out = self._water() + self._energy() + self._cold_rooms()
        for incident in self.s.incidents:
            name = self.s.incident_id(incident)
            if isinstance(incident, WetFloor):
                out += self._wet(incident, name)
            elif isinstance(incident, (SkipCheckpoint, SkipRound, LateRound)):
                pass  # judged per round below
            elif isinstance(incident, (DoorHeldOpen, DoorForced, DoorDenied, DoorAfterHours)):
                out += self._door(incident, name)
            elif isinstance(incident, DeviceSilent):
                out += self._silent(incident, name)
            elif isinstance(incident, BrokerRestart):
                out += self._broker(incident, name)
        out += self._patrol()
        return self._once_per_open_alert(out)

    def _once_per_open_alert(self, alerts: list[ImpliedAlert]) -> list[ImpliedAlert]:
        """Conditions that stay one open alert: a door used after hours, within one
        unscheduled period; a forced door until a person resolves it; continuous flow;
        an agent's outage alert in one night."""
        merged = ("door_forced", "water_continuous_flow", "deadman_agent")
        seen: dict[tuple[str, str], float | None] = {}
        out = []
        for alert in sorted(alerts, key=lambda a: a.at if a.at is not None else 0.0):
            key = (alert.rule, alert.subject)
            if key in seen and alert.rule in merged:
                continue
            if key in seen and alert.rule == "door_after_hours" and self._same_unscheduled(alert, seen[key]):
                seen[key] = alert.at  # the episode's latest use: its quiet spell counts from there
                continue
            seen[key] = alert.at
            out.append(alert)
        return out

    def _same_unscheduled(self, alert: ImpliedAlert, before: float | None) -> bool:
        """No scheduled time of the door between two after-hours uses, and they are less than
        after_hours_quiet_hours apart (a longer quiet spell ends the alert)."""
        if alert.at is None or before is None:
            return True
        quiet = self.rules.doors.after_hours_quiet_hours
        if quiet is not None and alert.at - before >= quiet * 3600:
            return False
        spec = self.s.device(next(i.device for i in self.s.incidents if self.s.incident_id(i) == alert.incident))  # type: ignore[union-attr]
        _checked, schedule = door_schedule(self.s, alert.subject, spec.device)
        return not any(a < alert.at and b > before for a, b in self.book.intervals(schedule))

    def at(self, when: datetime | time) -> float:
        return epoch(self.s.instant(when))

    def local_instant(self, day: date, wall: time) -> float:
        return local_instant(self.zone, day, wall).timestamp()

    def days(self) -> list[date]:
        """Local dates from the day before the night's first to its last."""
        first = utc(self.start).astimezone(self.zone).date() - timedelta(days=1)
        last = utc(self.end).astimezone(self.zone).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    # ----------------------------------------------------------------- water

    def _water_watches(self, device: str) -> bool:
        cfg = self.rules.water
        return cfg.enabled and (cfg.meters is None or device in cfg.meters)

    def _leak_span(self, leak: WaterLeak) -> Span:
        return _leak_span(self.s, leak)

    def _quiet_windows(self) -> list[Span]:
        """Local quiet windows (a window past midnight belongs to the day it starts) that
        end, and so are judged, during the night."""
        cfg = self.rules.water
        windows = []
        for day in self.days():
            end_day = day if cfg.night_end > cfg.night_start else day + timedelta(days=1)
            w0, w1 = self.local_instant(day, cfg.night_start), self.local_instant(end_day, cfg.night_end)
            if self.start < w1 <= self.end:
                windows.append((w0, w1))
        return windows

    def _water(self) -> list[ImpliedAlert]:
        leaks: dict[str, list[tuple[str, WaterLeak]]] = defaultdict(list)
        for incident in self.s.incidents:
            if isinstance(incident, WaterLeak) and self._water_watches(incident.device):
                leaks[incident.device].append((self.s.incident_id(incident), incident))
        out: list[ImpliedAlert] = []
        for device, items in leaks.items():
            out += self._night_flow(device, items)
            for name, leak in items:
                out += self._burst(leak, name) + self._continuous(leak, name)
        return out

    def _limits(self, device: str) -> tuple[float, float]:
        """(smallest flow that is flow, burst limit) of a meter, L/min."""
        cfg = self.rules.water
        override = cfg.overrides.get(device)
        min_flow = cfg.min_flow_l_per_min
        if override is not None and override.min_flow_l_per_min is not None:
            min_flow = override.min_flow_l_per_min
        burst = (override.burst_l_per_min if override else None) or cfg.burst_l_per_min
        return min_flow, burst

    def _night_flow(self, device: str, items: list[tuple[str, WaterLeak]]) -> list[ImpliedAlert]:
        """A window is leaking when a leak above the smallest flow runs to its end and has
        run at least `night_min_leak_minutes` by then (from inside the window or before);
        one alert until `night_clean_windows` leak-free windows in a row. litres_lost: the
        leak's flow x the minutes it has run, at the last leaking window's end (low) up to
        the night's end (high: the rule may update later)."""
        cfg = self.rules.water
        min_flow, _burst = self._limits(device)
        need = 60 * float(getattr(cfg, "night_min_leak_minutes", 30.0))
        clean_needed = cfg.night_clean_windows
        out: list[ImpliedAlert] = []
        open_alert: dict[str, Any] | None = None
        clean = 0
        for w0, w1 in self._quiet_windows():
            if (w1 - max(w0, self.start)) < cfg.night_min_coverage * (w1 - w0):
                continue  # the night does not cover enough of the window to judge it
            running = [(n, l, *self._leak_span(l)) for n, l in items if l.flow > min_flow * (1 - NEAR_SHARE)]
            leaking = [(n, l, a, b) for n, l, a, b in running if l.flow > min_flow and a <= w1 - need and b >= w1]
            near = [
                (n, l, a, b) for n, l, a, b in running
                if b >= w1 - NEAR_SECONDS and a <= w1
                and (abs((w1 - a) - need) <= NEAR_SECONDS or abs(b - w1) <= NEAR_SECONDS
                     or abs(l.flow - min_flow) <= min_flow * NEAR_SHARE)
            ]
            if leaking:
                clean = 0
                if open_alert is None:
                    name = leaking[0][0]
                    open_alert = {"name": name, "at": w1, "leaks": {}, "border": any(n == name for n, *_ in near)}
                open_alert["last"] = w1
                open_alert["leaks"].update({n: (l, a, b) for n, l, a, b in leaking})
            elif near and open_alert is None:
                n, l, a, b = near[0]
                out.append(ImpliedAlert(
                    "water_night_flow", device, n, w1, borderline=True,
                    why=f"{l.flow:g} L/min from {_local(self.s, a)}: within a tolerance of the quiet window's "
                        f"{need / 60:g} min / {min_flow:g} L/min thresholds",
                ))
            elif open_alert is not None:
                clean += 1
                if clean >= clean_needed:
                    out.append(self._night_flow_alert(device, open_alert))
                    open_alert, clean = None, 0
        if open_alert is not None:
            out.append(self._night_flow_alert(device, open_alert))
        return out

    def _night_flow_alert(self, device: str, alert: dict[str, Any]) -> ImpliedAlert:
        low = high = 0.0
        parts = []
        for leak, a, b in alert["leaks"].values():
            low += leak.flow * max(0.0, min(b, alert["last"]) - a) / _MINUTE
            high += leak.flow * max(0.0, min(b, self.end) - a) / _MINUTE
            parts.append(f"{leak.flow:g} L/min from {_local(self.s, a)}")
        return ImpliedAlert(
            "water_night_flow", device, alert["name"], alert["at"], values={"litres_lost": (low, high)},
            borderline=alert["border"],
            why=f"{', '.join(parts)}: {low:.0f} L by the quiet window's end, {high:.0f} L by the night's end",
        )

    def _burst(self, leak: WaterLeak, name: str) -> list[ImpliedAlert]:
        cfg = self.rules.water
        _min_flow, limit = self._limits(leak.device)
        a, b = self._leak_span(leak)
        b = min(b, self.end)
        need = cfg.burst_minutes * _MINUTE
        if leak.flow <= limit * (1 - NEAR_SHARE) or b - a < need - NEAR_SECONDS:
            return []
        border = leak.flow <= limit * (1 + NEAR_SHARE) or abs((b - a) - need) <= NEAR_SECONDS
        if leak.flow <= limit and not border:
            return []
        return [ImpliedAlert(
            "water_burst", leak.device, name, a + need, values={"peak_l_per_min": (leak.flow, leak.flow)},
            borderline=border, why=f"{leak.flow:g} L/min (limit {limit:g}) for {(b - a) / 60:g} min",
        )]

    def _continuous(self, leak: WaterLeak, name: str) -> list[ImpliedAlert]:
        min_flow, _burst = self._limits(leak.device)
        a, b = self._leak_span(leak)
        need = self.rules.water.continuous_hours * 3600
        if leak.flow <= min_flow or min(b, self.end) - a < need - NEAR_SECONDS:
            return []
        return [ImpliedAlert(
            "water_continuous_flow", leak.device, name, a + need,
            borderline=abs(min(b, self.end) - a - need) <= NEAR_SECONDS,
            why=f"{leak.flow:g} L/min for {(min(b, self.end) - a) / 3600:.1f} h without a dry hour",
        )]

    def _wet(self, wet: WetFloor, name: str) -> list[ImpliedAlert]:
        if not self._water_watches(wet.device):
            return []
        return [ImpliedAlert("water_wet", wet.device, name, self.at(wet.at), why="the floor sensor reads wet")]

    # ----------------------------------------------------------------- energy

    def _on_spans(self, spec: PowerMeterSpec) -> list[_On]:
        """When a meter's load draws power after hours could matter: its fixed daily run
        (a wall timer) and the incidents leaving it on, duty-cycled or not."""
        spans: list[_On] = []
        place = self.s.site.locate(spec.device)
        if spec.runs is not None:
            schedule = place.schedule if place else None
            for a, b in self.book.daily_run(spec.runs[0], spec.runs[1], spec.runs_days, schedule):
                spans.append(_On(a, b, spec.rated_w, spec.device, f"runs:{spec.device}"))
        for incident in self.s.incidents:
            if not isinstance(incident, AcLeftOn) or incident.device != spec.device:
                continue
            name = self.s.incident_id(incident)
            a = self.at(incident.at) if incident.at is not None else self.start
            b = self.at(incident.until) if incident.until is not None else self.end
            watts = incident.power_w or spec.rated_w
            if incident.duty is None:
                spans.append(_On(a, b, watts, spec.device, name))
                continue
            on, period = incident.duty.on_minutes * _MINUTE, (incident.duty.on_minutes + incident.duty.off_minutes) * _MINUTE
            t = a
            while t < b:
                spans.append(_On(t, min(t + on, b), watts, spec.device, name))
                t += period
        clipped = [_On(max(o.a, self.start), min(o.b, self.end), o.watts, o.device, o.incident)
                   for o in spans if o.b > self.start and o.a < self.end]
        return _flatten(clipped)

    def _energy(self) -> list[ImpliedAlert]:
        """Per room and circuit kind, each unscheduled stretch in which the circuits were on
        for `grace_minutes` in all and wasted `min_kwh` is one alert; a stretch ends when the
        schedule starts or everything stays off for `off_minutes`. wasted_kwh = sum of kW x
        on-hours in it. A load rising from standby is on only above standby_watts +
        hysteresis_watts (docs/rules.md, Standby noise)."""
        cfg = self.rules.ac_after_hours
        if not cfg.enabled:
            return []
        groups: dict[tuple[str, str, str], list[_On]] = defaultdict(list)
        schedules: dict[tuple[str, str, str], str | None] = {}
        near_on = _on_above(cfg) * (1 - NEAR_SHARE)
        for spec in self.s.devices:
            if not isinstance(spec, PowerMeterSpec) or spec.circuit not in _AFTER_HOURS_RULE:
                continue
            place = self.s.site.locate(spec.device)
            if place is None:
                continue
            key = (place.building, place.room, spec.circuit)
            schedules[key] = place.schedule
            groups[key] += [o for o in self._on_spans(spec) if o.watts > near_on]
        out: list[ImpliedAlert] = []
        for key, ons in groups.items():
            building, room, kind = key
            subject = _room_subject(self.s, building, room)
            off = float(getattr(cfg, "off_minutes", 60.0)) * _MINUTE
            for piece in outside(self._occupied(building, room, kind, schedules[key]), self.start, self.end):
                after = _clip(ons, piece)
                merged = merge([(o.a, o.b) for o in after])
                # an off gap within a tolerance of off_minutes may split the stretch or not
                split_near = any(abs((c - b) - off) <= NEAR_SECONDS for (_a, b), (c, _d) in zip(merged, merged[1:]))
                for stretch in _stretches(after, off):
                    alert = self._stretch_alert(_AFTER_HOURS_RULE[kind], subject, stretch, piece)
                    if alert is not None:
                        out.append(replace(alert, borderline=True) if split_near else alert)
        return out

    def _occupied(self, building: str, room: str, kind: str, schedule: str | None) -> list[Span]:
        """The room's scheduled spans for a circuit kind: the schedule book's, or, with a
        calendar (room exceptions) or a season for the kind, the room's own."""
        site = self.s.site
        season = next((r.seasons.get(kind) for b in site.buildings if b.id == building  # type: ignore[call-overload]
                       for r in b.rooms if r.id == room), None)
        if site.calendar is None and season is None:
            return self.book.intervals(schedule)
        return schedule_spans(site, schedule, self.book.t0, self.book.t1, building=building, room=room, season=season)

    def _priced(self, stretch: list[_On], cut: bool) -> dict[str, tuple[float, float]]:
        """Time-of-use tariff: the stretch's kWh and cost by band, each band's kWh times its
        price (the band of each minute by the simulators' own calendar). Bounds as for
        wasted_kwh: the load draws 90-100 % of its rating; a stretch cut by the night's end
        gives the total cost only, with no low bound (the rule's last update lags)."""
        tou = self.s.site.tariff.time_of_use
        if tou is None:
            return {}
        kwh: dict[str, float] = {band: 0.0 for band in tou.bands}
        for o in stretch:
            for band, seconds in seconds_by_band(self.s.site, o.a, o.b).items():
                kwh[band] += o.watts / 1000 * seconds / 3600
        cost = sum(kwh[band] * price for band, price in tou.bands.items())
        if cut:
            return {"cost": (0.0, cost)}
        values = {"cost": (cost * _DRAW_LOW, cost)}
        values.update({f"kwh_{band}": (k * _DRAW_LOW, k) for band, k in kwh.items() if k > 0})
        return values

    def _stretch_alert(self, rule: str, subject: str, stretch: list[_On], piece: Span) -> ImpliedAlert | None:
        cfg = self.rules.ac_after_hours
        grace = cfg.grace_minutes * _MINUTE
        merged = merge([(o.a, o.b) for o in stretch])
        on_time = sum(b - a for a, b in merged)
        if on_time < grace - NEAR_SECONDS:
            return None
        share = _best_share(merged, float(getattr(cfg, "duty_window_minutes", 60.0)) * _MINUTE)
        min_duty = float(getattr(cfg, "min_duty", 0.0))
        if share < min_duty - NEAR_SHARE / 2:
            return None
        kwh = sum(o.watts / 1000 * (o.b - o.a) / 3600 for o in stretch)
        min_kwh = float(getattr(cfg, "min_kwh", 0.0))
        if kwh < min_kwh * (1 - NEAR_SHARE):
            return None
        border = (
            abs(on_time - grace) <= NEAR_SECONDS
            or abs(share - min_duty) <= NEAR_SHARE / 2
            or any(o.watts <= _on_above(cfg) * (1 + NEAR_SHARE) for o in stretch)
            or kwh * _DRAW_LOW < min_kwh * (1 + NEAR_SHARE)  # the load's draw may or may not reach it
        )
        low = kwh * _DRAW_LOW
        if stretch[-1].b >= self.end - 1 and piece[1] >= self.end - 1:
            # cut by the night's end: the rule's last update may be up to update_minutes old
            lag = float(getattr(cfg, "update_minutes", 5.0)) * _MINUTE
            low = _DRAW_LOW * sum(o.watts / 1000 * max(0.0, min(o.b, self.end - lag) - o.a) / 3600 for o in stretch)
        raised = _time_reaching(merged, grace)
        devices = sorted({o.device for o in stretch})
        incidents = sorted({o.incident for o in stretch})
        cut = stretch[-1].b >= self.end - 1 and piece[1] >= self.end - 1
        return ImpliedAlert(
            rule, subject, incidents[0], raised, values={"wasted_kwh": (low, kwh), **self._priced(stretch, cut)},
            borderline=border,
            why=(f"{', '.join(devices)} on {on_time / 3600:.2f} h from {_local(self.s, stretch[0].a)} to "
                 f"{_local(self.s, stretch[-1].b)}: {kwh:.2f} kWh"),
        )

    # ----------------------------------------------------------------- cold rooms

    def _cold_rooms(self) -> list[ImpliedAlert]:
        """A listed cold room is too warm while its air is above max_c: from the facts of
        each sensor (simulators/scenario.py TemperatureSensorSpec), an open door warms it
        linearly and, shut, it cools back linearly, so it is above the limit from
        open + (max - set) / warm to shut + (peak - max) / cool, peak = set + warm x open
        time; a defrost rises linearly to its peak over half its minutes and falls back.
        Spans less than clear_minutes apart are one (a dip under the limit is no break).
        A warm span of warm_minutes or more is one alert: minutes = its length, peak_c."""
        cfg = self.rules.cold_room
        if not cfg.enabled:
            return []
        out: list[ImpliedAlert] = []
        for spec in self.s.devices:
            if not isinstance(spec, TemperatureSensorSpec):
                continue
            place = self.s.site.locate(spec.device)
            key = None if place is None else next(
                (k for k in (place.room, f"{place.building}:{place.room}") if k in cfg.rooms), None)
            if place is None or key is None:
                continue
            limit = cfg.rooms[key].max_c if cfg.rooms[key].max_c is not None else cfg.max_c
            need = _MINUTE * (cfg.rooms[key].warm_minutes or cfg.warm_minutes)
            subject = _room_subject(self.s, place.building, place.room)
            for a, b, peak, why in _joined(self._warm_spans(spec, limit), _MINUTE * cfg.clear_minutes):
                if a >= self.end or min(b, self.end) - a < need - NEAR_SECONDS:
                    continue
                length = min(b, self.end) - a
                values = {"peak_c": (peak - 0.1, peak + 0.1)}
                if b <= self.end:
                    values["minutes"] = ((length - NEAR_SECONDS) / _MINUTE, (length + NEAR_SECONDS) / _MINUTE)
                out.append(ImpliedAlert(
                    "cold_room_warm", subject, why, a + need, values=values, tolerance=0.05,
                    borderline=abs(length - need) <= NEAR_SECONDS,
                    why=f"above {limit:g} °C from {_local(self.s, a)} to {_local(self.s, b)}, peak {peak:.1f} °C",
                ))
        return out

    def _warm_spans(self, spec: TemperatureSensorSpec, limit: float) -> list[tuple[float, float, float, str]]:
        """(from, until, peak °C, incident) of each span the sensor's air is above `limit`."""
        spans = []
        for a, b in door_open_spans(self.s, spec):
            peak = spec.setpoint_c + spec.warm_c_per_min * (b - a) / _MINUTE
            if peak <= limit:
                continue
            above = a + (limit - spec.setpoint_c) / spec.warm_c_per_min * _MINUTE
            below = b + (peak - limit) / spec.cool_c_per_min * _MINUTE
            incident = next(self.s.incident_id(i) for i in self.s.incidents
                            if isinstance(i, DoorHeldOpen) and i.door == spec.door and self.at(i.at) == a)
            spans.append((above, below, peak, incident))
        if spec.defrost is not None and spec.defrost.peak_c > limit:
            half = spec.defrost.minutes * _MINUTE / 2
            rise = half * (limit - spec.setpoint_c) / (spec.defrost.peak_c - spec.setpoint_c)
            for start in defrost_starts(self.s, spec):
                spans.append((start + rise, start + 2 * half - rise, spec.defrost.peak_c, f"defrost:{spec.device}"))
        return sorted(s for s in spans if s[1] > self.start)

    # ----------------------------------------------------------------- patrol

    def _rounds(self, route: PatrolRoute) -> list[_Round]:
        """Every round of `route` starting in the night: on the route's days (the day a
        round starts on), at its local time (a skipped one when the clocks jump, a
        repeated one once, its first time); deadlines in elapsed time."""
        rounds = []
        for day in self.days() + [self.days()[-1] + timedelta(days=1)]:
            if self._route_weekday(route, day) not in route.days:
                continue
            for at in route.rounds:
                t = self.local_instant(day, at)
                if not self.start <= t < self.end:
                    continue
                deadlines, d = [], t
                for checkpoint in route.checkpoints:
                    d += _MINUTE * (checkpoint.allowance_minutes or route.allowance_minutes)
                    deadlines.append(d)
                rounds.append(_Round(route.id, day, at, t, tuple(deadlines)))
        return sorted(rounds, key=lambda r: r.start)

    def _route_weekday(self, route: PatrolRoute, day: date) -> int | None:
        """The weekday a route's `days` read for `day`: its own, or with a `schedule` the one the
        calendar says the day follows (a make-up day's), None when that schedule has the day off."""
        if route.schedule is None:
            return day.weekday()
        site = self.s.site
        if site.calendar is None:
            return None if day in site.holidays and not keeps_holidays(site, route.schedule) else day.weekday()
        runs = what_day(site, day, route.schedule)
        return None if runs is None else runs[0]

    def _patrol(self) -> list[ImpliedAlert]:
        if not self.rules.patrol.enabled:
            return []
        out: list[ImpliedAlert] = []
        for guard in self.s.guards:
            route = self.s.route(guard.route)
            for rnd in self._rounds(route):
                out += self._round(guard, route, rnd)
        return out

    def _round(self, guard: GuardSpec, route: PatrolRoute, rnd: _Round) -> list[ImpliedAlert]:
        """What one walked round pages. The guard taps 2 min in, then one checkpoint every
        `pace_minutes`, never later than 90 s before a deadline (simulators/guards.py);
        skips leave taps out; a late (early) round shifts every tap. Judged against the
        round's deadlines (docs/rules.md#patrol); for a wand, only once it is uploaded."""
        tags = [c.tag for c in route.checkpoints]
        round_name, tag_names = f"round:{rnd.key}", {}
        shift, skipped = 0.0, set()
        for incident in self.s.incidents:
            if getattr(incident, "guard", None) != guard.id or getattr(incident, "round", None) != rnd.at:
                continue
            n = self.s.incident_id(incident)
            if isinstance(incident, SkipRound):
                skipped |= set(tags)
                round_name = n
            elif isinstance(incident, SkipCheckpoint):
                skipped.add(incident.tag)
                tag_names[incident.tag] = n
            elif isinstance(incident, LateRound):
                assert incident.minutes is not None or incident.start_at is not None
                shift = incident.minutes * _MINUTE if incident.minutes is not None else self.at(incident.start_at) - rnd.start  # type: ignore[arg-type]
                round_name = n
        if round_name.startswith("round:") and tag_names:
            round_name = next(iter(tag_names.values()))
        taps = {
            tag: shift + min(rnd.start + _MINUTE * (_FIRST_TAP_MINUTES + i * guard.pace_minutes), rnd.deadlines[i] - 90)
            for i, tag in enumerate(tags) if tag not in skipped
        }
        out: list[ImpliedAlert] = []
        judged = True
        if guard.wand is not None:
            upload, judged = self._upload(guard, route, rnd, round_name)
            out += upload
        if not judged or rnd.deadlines[0] > self.end:
            return out
        near = guard.jitter_seconds + 30  # taps carry their own time: only the guard's jitter blurs them
        opens = rnd.start - route.early_minutes * _MINUTE
        closes = rnd.deadlines[-1] + route.late_minutes * _MINUTE
        counted = {t: at for t, at in taps.items() if opens <= at <= closes}
        border = any(abs(at - opens) <= near or abs(at - closes) <= near for at in taps.values()) or any(
            abs(at - rnd.deadlines[tags.index(t)]) <= near for t, at in taps.items()
        )
        first_deadline = rnd.deadlines[0]
        first = min(counted.values(), default=None)
        if first is None:
            return out + [ImpliedAlert("patrol_round", rnd.key, round_name, first_deadline, borderline=border,
                                       why=f"no tap in round {rnd.at:%H:%M} by {_local(self.s, first_deadline)}")]
        late_round = first > first_deadline
        if late_round:  # one alert for the round, with how late; not one per checkpoint
            out.append(ImpliedAlert("patrol_round", rnd.key, round_name, first_deadline, borderline=border,
                                    why=f"started {(first - rnd.start) / 60:.0f} min after {rnd.at:%H:%M}"))
        for i, tag in enumerate(tags):
            tapped = counted.get(tag)
            if rnd.deadlines[i] > self.end or (tapped is not None and (late_round or tapped <= rnd.deadlines[i])):
                continue
            why = "skipped" if tag in skipped else ("tapped outside the round" if tapped is None else "tapped late")
            out.append(ImpliedAlert("patrol_checkpoint", f"{rnd.key}:{tag}", tag_names.get(tag, round_name),
                                    rnd.deadlines[i], borderline=border, why=why))
        walked = sorted(at for at in counted.values() if at <= rnd.deadlines[-1])
        if walked and not late_round and rnd.deadlines[-1] <= self.end:
            # silence is a guard not tapping while walking; one who stopped short (skipped the
            # last checkpoints) is silent up to the last deadline, one who finished is done
            marks = walked + ([rnd.deadlines[-1]] if tags[-1] not in taps else [])
            longest = max(b - a for a, b in zip(marks, marks[1:]))
            limit = route.max_silence_minutes * _MINUTE
            if longest >= limit - NEAR_SECONDS:
                out.append(ImpliedAlert("patrol_silence", rnd.key, round_name, None,
                                        borderline=border or abs(longest - limit) <= NEAR_SECONDS,
                                        why=f"{longest / 60:.0f} min without a tap"))
        return out

    def _upload(self, guard: GuardSpec, route: PatrolRoute, rnd: _Round, name: str) -> tuple[list[ImpliedAlert], bool]:
        """A wand round: ([patrol_upload_late] if the upload comes after the route's upload
        deadline, or has not come when it passes in the night; else []), and whether the
        taps are uploaded, and so judged, in the night."""
        when = guard.dock_time(rnd.at)
        docked = self.at(when) if when is not None else float("inf")
        deadline = _upload_deadline(route, rnd, self.rules.patrol.keep_hours)
        judged = docked <= self.end
        if deadline > self.end or docked <= deadline - NEAR_SECONDS:
            return [], judged
        shown = _local(self.s, docked) if docked != float("inf") else "never"
        return [ImpliedAlert("patrol_upload_late", rnd.key, name, deadline, borderline=docked <= deadline + NEAR_SECONDS,
                             why=f"wand docked {shown}, upload due {_local(self.s, deadline)}")], judged

    # ----------------------------------------------------------------- doors, deadman

    def _door(self, incident: DoorHeldOpen | DoorForced | DoorDenied | DoorAfterHours, name: str) -> list[ImpliedAlert]:
        cfg = self.rules.doors
        if not cfg.enabled:
            return []
        spec = self.s.device(incident.device)
        assert isinstance(spec, DoorControllerSpec)
        door, t = incident.door, self.at(incident.at)
        out = []
        if isinstance(incident, DoorHeldOpen):
            override = cfg.doors.get(door)
            limit = (override and override.held_open_seconds) or cfg.held_open_seconds
            reported = spec.held_open_report_seconds is not None and spec.held_open_report_seconds < incident.seconds
            if incident.seconds >= limit or reported:
                out.append(ImpliedAlert("door_held_open", door, name, t + min(limit, incident.seconds),
                                        why=f"open {incident.seconds:g} s, limit {limit:g} s"))
        elif isinstance(incident, DoorForced):
            out.append(ImpliedAlert("door_forced", door, name, t, why="forced open"))
        elif isinstance(incident, DoorDenied):
            if incident.count >= cfg.denied_count and (cfg.denied_count - 1) * 40 <= cfg.denied_minutes * 60:
                out.append(ImpliedAlert("door_denied", door, name, t, why=f"{incident.count} cards refused"))
        if isinstance(incident, (DoorHeldOpen, DoorAfterHours)):
            checked, schedule = door_schedule(self.s, door, spec.device)
            if checked and not self.book.scheduled(schedule, t):
                out.append(ImpliedAlert("door_after_hours", door, name, t, why="used outside its schedule"))
        return out

    def _silent(self, silent: DeviceSilent, name: str) -> list[ImpliedAlert]:
        cfg = self.rules.deadman
        if not cfg.enabled:
            return []
        spec = self.s.device(silent.device)
        if silent.device in cfg.devices:
            minutes = cfg.devices[silent.device]
        elif isinstance(spec, DoorControllerSpec):
            minutes = cfg.door_minutes
        elif isinstance(spec, (PatrolReaderSpec, WandDockSpec)):
            minutes = cfg.patrol_tap_minutes
        else:
            minutes = cfg.reading_minutes
        t = self.at(silent.at)
        if minutes is None or t + minutes * _MINUTE > self.end:
            return []
        return [ImpliedAlert("deadman", silent.device, name, t + minutes * _MINUTE, why=f"silent from {_local(self.s, t)}")]

    def _broker(self, restart: BrokerRestart, name: str) -> list[ImpliedAlert]:
        cfg = self.rules.deadman
        if cfg.enabled and restart.down_seconds >= cfg.agent_offline_minutes * _MINUTE:
            return [ImpliedAlert("deadman_agent", self.s.agent, name, self.at(restart.at),
                                 borderline=abs(restart.down_seconds - cfg.agent_offline_minutes * _MINUTE) <= NEAR_SECONDS,
                                 why=f"broker down {restart.down_seconds:g} s")]
        return []


def _joined(spans: list[tuple[float, float, float, str]], gap: float) -> list[tuple[float, float, float, str]]:
    """Warm spans (from, until, peak, incident) in time order, those less than `gap` apart
    joined: the earlier one's incident, the higher peak."""
    out: list[tuple[float, float, float, str]] = []
    for a, b, peak, why in spans:
        if out and a - out[-1][1] < gap:
            a0, b0, peak0, why0 = out[-1]
            out[-1] = (a0, max(b0, b), max(peak0, peak), why0)
        else:
            out.append((a, b, peak, why))
    return out


def _leak_span(scenario: Scenario, leak: WaterLeak) -> Span:
    """When a leak runs, by the scenario format's defaults: a burst 20 min, other leaks
    past the night's end."""
    a = epoch(scenario.instant(leak.at))
    if leak.until is not None:
        return a, epoch(scenario.instant(leak.until))
    return a, (a + 20 * _MINUTE if leak.kind == "burst" else epoch(scenario.end_utc) + _MINUTE)


def _upload_deadline(route: PatrolRoute, rnd: _Round, keep_hours: float) -> float:
    """When a round's wand upload is due: the route's upload deadline (minutes after the
    round's last deadline), else `keep_hours` after it, as long as uploads are accepted."""
    for key in ("upload_minutes", "upload_deadline_minutes", "upload_after_minutes"):
        minutes = getattr(route, key, None)
        if isinstance(minutes, (int, float)):
            return rnd.deadlines[-1] + minutes * _MINUTE
    return rnd.deadlines[-1] + keep_hours * 3600


def _flatten(ons: list[_On]) -> list[_On]:
    """One meter's overlapping spans (a timer run and a "left on") as disjoint ones: the
    load draws the highest of the powers asked of it, never their sum."""
    cuts = sorted({t for o in ons for t in (o.a, o.b)})
    out: list[_On] = []
    for a, b in zip(cuts, cuts[1:]):
        covering = [o for o in ons if o.a <= a and b <= o.b]
        if not covering:
            continue
        top = max(covering, key=lambda o: (o.watts, not o.incident.startswith("runs:")))
        if out and out[-1].b == a and (out[-1].watts, out[-1].incident) == (top.watts, top.incident):
            out[-1] = _On(out[-1].a, b, top.watts, top.device, top.incident)
        else:
            out.append(_On(a, b, top.watts, top.device, top.incident))
    return out


def _clip(ons: Iterable[_On], piece: Span) -> list[_On]:
    a, b = piece
    return sorted(
        (_On(max(o.a, a), min(o.b, b), o.watts, o.device, o.incident) for o in ons if o.b > a and o.a < b),
        key=lambda o: o.a,
    )


def _stretches(ons: list[_On], off: float) -> list[list[_On]]:
    """Group on-spans (sorted) into stretches: everything off for `off` seconds ends one."""
    out: list[list[_On]] = []
    reach = float("-inf")
    for o in ons:
        if not out or o.a - reach >= off:
            out.append([])
        out[-1].append(o)
        reach = max(reach, o.b)
    return out


def _time_reaching(merged: list[Span], total: float) -> float:
    """The instant the cumulative on-time of `merged` reaches `total` (or its end)."""
    done = 0.0
    for a, b in merged:
        if done + (b - a) >= total:
            return a + (total - done)
        done += b - a
    return merged[-1][1]


def _on_above(cfg: Any) -> float:
    """Watts above which a load rising from standby counts as on: the standby limit plus
    the hysteresis band (docs/rules.md, ac_after_hours, Standby noise)."""
    return float(cfg.standby_watts) + float(getattr(cfg, "hysteresis_watts", 0.0))


def _best_share(merged: list[Span], window: float) -> float:
    """The largest share of any `window` seconds (within the stretch) the load was on;
    a stretch shorter than the window is judged over its own length."""
    if not merged:
        return 0.0
    length = min(window, merged[-1][1] - merged[0][0])
    if length <= 0:
        return 0.0
    best = 0.0
    for a, _b in merged:
        w0, w1 = a, a + length
        if w1 > merged[-1][1]:
            w0, w1 = merged[-1][1] - length, merged[-1][1]
        on = sum(max(0.0, min(b, w1) - max(x, w0)) for x, b in merged)
        best = max(best, on / length)
    return best


def _local(scenario: Scenario, t: float) -> str:
    return f"{utc(t).astimezone(scenario.site.zone):%Y-%m-%d %H:%M%z}"


def _room_subject(scenario: Scenario, building: str, room: str) -> str:
    """An energy alert's subject: the room id, or building:room if the id repeats."""
    rooms = [r.id for b in scenario.site.buildings for r in b.rooms]
    return room if rooms.count(room) == 1 else f"{building}:{room}"


# --------------------------------------------------------------------------- the file


def ground_truth_document(
    scenario: Scenario, seed: int, *, skipped: list[str] | None = None, stats: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What, where and when: the incidents injected, the faults, the alerts they imply.

    `skipped` names incidents a run could not inject (a broker restart without a broker
    of its own); their alerts are left out of `expected_alerts`. Values the scenario's
    own `expected` writes are added to the derived ones; where that list disagrees with
    the derivation, `warnings` says so.
    """
    skipped = skipped or []
    implied = _with_written_values(scenario, implied_alerts(scenario))
    incidents = []
    for incident in scenario.incidents:
        name = scenario.incident_id(incident)
        incidents.append({
            "id": name,
            "type": incident.type,
            "where": _where(scenario, incident),
            "start": _iso(_start_of(scenario, incident)),
            "end": _iso(_end_of(scenario, incident)),
            "details": incident.model_dump(mode="json", exclude={"id", "type", "at", "until", "device", "door", "guard"}),
            "alerts": [{"rule": a.rule, "subject": a.subject} for a in implied if a.incident == name],
            "injected": name not in skipped,
        })
    return {
        "format": FORMAT,
        "version": VERSION,
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": seed,
        "site": scenario.site.id,
        "timezone": scenario.site.timezone,
        "agent": scenario.agent,
        "start": _iso(scenario.start_utc),
        "end": _iso(scenario.end_utc),
        "incidents": incidents,
        "faults": [f.model_dump(mode="json") for f in scenario.faults],
        "expected_alerts": [a.as_dict() for a in implied if a.incident not in skipped],
        "warnings": expected_disagreement(scenario),
        "stats": stats or {},
    }


def _with_written_values(scenario: Scenario, implied: list[ImpliedAlert]) -> list[ImpliedAlert]:
    """The derived alerts, each carrying the values (and tolerance) the scenario's own
    `expected` writes for the same rule and subject."""
    written = {(e.rule, e.subject): e for e in scenario.expected or [] if e.values}
    out = []
    for a in implied:
        extra = written.get((a.rule, a.subject))
        if extra is None:
            out.append(a)
            continue
        values = dict(a.values) | {k: (v, v) for k, v in extra.values.items()}
        out.append(ImpliedAlert(a.rule, a.subject, a.incident, a.at, values, extra.tolerance, a.borderline, a.why))
    return out


def write_ground_truth(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _where(scenario: Scenario, incident: Incident) -> dict[str, str]:
    where: dict[str, str] = {}
    for key in ("device", "door", "guard", "tag"):
        value = getattr(incident, key, None)
        if value is not None:
            where[key] = str(value)
    if isinstance(incident, (SkipCheckpoint, SkipRound, LateRound)):
        where["route"] = scenario.guard(incident.guard).route
        where["round"] = f"{incident.round:%H:%M}"
    place = scenario.site.locate(where["device"]) if "device" in where else None
    if place is not None:
        where.update(building=place.building, room=place.room)
    return where


def _start_of(scenario: Scenario, incident: Incident) -> datetime | None:
    at = getattr(incident, "at", None)
    if at is not None:
        return scenario.instant(at)
    if isinstance(incident, AcLeftOn):
        return scenario.start_utc
    if isinstance(incident, (SkipCheckpoint, SkipRound)):
        return scenario.instant(incident.round)
    if isinstance(incident, LateRound):
        if incident.start_at is not None:
            return scenario.instant(incident.start_at)
        return scenario.instant(incident.round) + timedelta(minutes=incident.minutes or 0.0)
    return None


def _end_of(scenario: Scenario, incident: Incident) -> datetime | None:
    if isinstance(incident, WaterLeak):
        return utc(min(_leak_span(scenario, incident)[1], epoch(scenario.end_utc)))
    until = getattr(incident, "until", None)
    if until is not None:
        return scenario.instant(until)
    if isinstance(incident, BrokerRestart):
        return utc(epoch(scenario.instant(incident.at)) + incident.down_seconds)
    if isinstance(incident, DoorHeldOpen):
        return utc(epoch(scenario.instant(incident.at)) + incident.seconds)
    if isinstance(incident, (AcLeftOn, WetFloor, DeviceSilent)):
        return scenario.end_utc
    return None


def incident_span(scenario: Scenario, incident: Incident) -> tuple[datetime | None, datetime | None]:
    """When an incident starts and ends, as far as it says (None: not a moment in time)."""
    return _start_of(scenario, incident), _end_of(scenario, incident)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- comparison


Pair = tuple[str, str]


@dataclass(frozen=True)
class ValueMismatch:
    """A number in an alert's last details outside what the truth allows."""

    rule: str
    subject: str
    name: str
    found: float | None
    low: float
    high: float
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "subject": self.subject, "value": self.name, "found": self.found,
                "expected": [round(self.low, 3), round(self.high, 3)], "tolerance": self.tolerance}


@dataclass(frozen=True)
class GroundTruthCheck:
    """What was paged against the ground truth, as multisets of (rule, subject).

    `false_pages`: alerts opened that the truth does not name (withdrawn ones included:
    a page is a page); `missing`: alerts the truth names (not borderline) never opened;
    `mismatches`: values out of tolerance; `borderline`: alerts the truth allowed but did
    not require, with whether they came. `unexpected` is `false_pages`, `exact` is `ok`
    (the names older callers use)."""

    expected: list[Pair]
    found: list[Pair]
    missing: list[Pair] = field(default_factory=list)
    false_pages: list[Pair] = field(default_factory=list)
    provisional: list[Pair] = field(default_factory=list)
    mismatches: list[ValueMismatch] = field(default_factory=list)
    borderline: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def unexpected(self) -> list[Pair]:
        return self.false_pages

    @property
    def ok(self) -> bool:
        return not self.missing and not self.false_pages and not self.mismatches

    @property
    def exact(self) -> bool:
        return self.ok

    def as_dict(self) -> dict[str, Any]:
        def rows(pairs: list[Pair]) -> list[dict[str, str]]:
            return [{"rule": r, "subject": s} for r, s in pairs]

        return {
            "ok": self.ok,
            "exact": self.exact,
            "missing": rows(self.missing),
            "false_pages": rows(self.false_pages),
            "unexpected": rows(self.false_pages),
            "mismatches": [m.as_dict() for m in self.mismatches],
            "borderline": [{"rule": r, "subject": s, "paged": paged} for r, s, paged in self.borderline],
            "provisional": rows(self.provisional),
            "found": rows(self.found),
            "expected": rows(self.expected),
        }


def compare(alerts: list[dict[str, Any]], expected: list[tuple[str, str]]) -> GroundTruthCheck:
    """`alerts` as the API lists them (rule, subject, state, details), against (rule,
    subject) pairs. Alerts a rule resolved itself as "reconciled from ..." late data are
    set apart as provisional. Kept for older callers: `compare_history` counts every page."""
    provisional: list[Pair] = []
    found: list[Pair] = []
    for alert in alerts:
        key = (str(alert["rule"]), str(alert["subject"]))
        note = str((alert.get("details") or {}).get("note", ""))
        (provisional if alert.get("state") == "resolved" and note.startswith(RECONCILED) else found).append(key)
    want, got = Counter(expected), Counter(found)
    return GroundTruthCheck(
        expected=sorted(expected),
        found=sorted(found),
        missing=sorted((want - got).elements()),
        false_pages=sorted((got - want).elements()),
        provisional=sorted(provisional),
    )


@dataclass(frozen=True)
class _Want:
    rule: str
    subject: str
    at: str
    values: dict[str, tuple[float, float]]
    tolerance: float
    borderline: bool


def _wants(truth: dict[str, Any] | Sequence[ImpliedAlert | ExpectedAlert]) -> list[_Want]:
    """The truth's expectations, from a ground-truth document or a list of alerts."""
    items = truth["expected_alerts"] if isinstance(truth, dict) else truth
    wants = []
    for item in items:
        if isinstance(item, ImpliedAlert):
            item = item.as_dict()
        elif isinstance(item, ExpectedAlert):
            item = {"rule": item.rule, "subject": item.subject, "tolerance": item.tolerance,
                    "values": {k: [v, v] for k, v in item.values.items()}}
        values = {}
        for name, bounds in (item.get("values") or {}).items():
            low, high = (bounds, bounds) if isinstance(bounds, (int, float)) else bounds
            values[name] = (float(low), float(high))
        wants.append(_Want(str(item["rule"]), str(item["subject"]), str(item.get("at") or ""), values,
                           float(item.get("tolerance", TOLERANCE)), bool(item.get("borderline", False))))
    return wants


def compare_history(
    history: list[dict[str, Any]], truth: dict[str, Any] | Sequence[ImpliedAlert | ExpectedAlert]
) -> GroundTruthCheck:
    """Every alert opened during the night (`alert-history.json`: id, rule, subject,
    severity, opened_at, message, details, changes) against the truth (a ground-truth
    document, or its alerts). An alert opened and resolved or withdrawn, even in the same
    second, was a page: if the truth does not name it, it is a false page. Alerts of one
    (rule, subject) are matched to the truth's in time order, required ones first; each
    matched alert's last details are checked against the truth's values."""
    wants = _wants(truth)
    by_key: dict[Pair, list[_Want]] = defaultdict(list)
    for want in sorted(wants, key=lambda w: (w.borderline, w.at)):
        by_key[(want.rule, want.subject)].append(want)
    pages = sorted(history, key=lambda a: str(a.get("opened_at") or ""))
    found: list[Pair] = []
    false_pages: list[Pair] = []
    mismatches: list[ValueMismatch] = []
    for alert in pages:
        key = (str(alert["rule"]), str(alert["subject"]))
        found.append(key)
        if not by_key.get(key):
            false_pages.append(key)
            continue
        want = by_key[key].pop(0)
        mismatches += _check_values(want, alert.get("details") or {})
    paged = Counter(found)
    missing = sorted((w.rule, w.subject) for left in by_key.values() for w in left if not w.borderline)
    borderline = sorted({(w.rule, w.subject, paged[(w.rule, w.subject)] > 0) for w in wants if w.borderline})
    return GroundTruthCheck(
        expected=sorted((w.rule, w.subject) for w in wants if not w.borderline),
        found=sorted(found),
        missing=missing,
        false_pages=sorted(false_pages),
        mismatches=mismatches,
        borderline=borderline,
    )


def _check_values(want: _Want, details: dict[str, Any]) -> list[ValueMismatch]:
    out = []
    for name, (low, high) in want.values.items():
        raw = details.get(name)
        try:
            found = float(raw) if raw is not None else None
        except (TypeError, ValueError):
            found = None
        if found is None or not _within(found, low, high, want.tolerance):
            out.append(ValueMismatch(want.rule, want.subject, name, found, low, high, want.tolerance))
    return out
