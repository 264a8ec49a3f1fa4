"""Ground truth: which alerts a scenario's incidents must cause, the file every run writes,
and the comparison with the alerts the system actually raised.

Each incident implies its alerts from the scenario's own rule settings (thresholds,
schedules, routes), the way docs/rules.md describes the rules: a leak that covers the
night's quiet window at more than the meter's smallest flow is a night-flow alert, an AC
running past its room's timetable for longer than the grace period is an after-hours
alert, and so on. A scenario file also lists `expected` by hand; loading it checks that
both agree, so a scenario cannot silently promise something its incidents do not do.
Format of the file: docs/simulators.md#ground-truth.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rules.schedule import local_instant
from simulators.base import ScheduleBook, epoch, utc
from simulators.door_controller import door_schedule
from simulators.guards import Round, rounds_in_night
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
    Incident,
    PatrolReaderSpec,
    Scenario,
    SkipCheckpoint,
    SkipRound,
    WandDockSpec,
    WaterLeak,
    WetFloor,
)
from simulators.water_meter import leak_span
from warden.config import ConfigError

FORMAT = "warden.ground-truth"
VERSION = 1
#: Alerts a rule withdrew itself once late data showed the condition never held
#: (docs/rules.md#patrol): provisional, not counted against the ground truth.
RECONCILED = "reconciled from"


@dataclass(frozen=True)
class ImpliedAlert:
    rule: str
    subject: str
    incident: str


def implied_alerts(scenario: Scenario) -> list[ImpliedAlert]:
    """Every alert the scenario's incidents must cause, in incident order."""
    truth = _Derivation(scenario)
    alerts: list[ImpliedAlert] = []
    for incident in scenario.incidents:
        name = scenario.incident_id(incident)
        alerts += [ImpliedAlert(rule, subject, name) for rule, subject in truth.alerts(incident)]
    return _once_per_open_alert(scenario, alerts)


def expected_alerts(scenario: Scenario) -> list[ExpectedAlert]:
    """The scenario's ground truth: its `expected` list, or what its incidents imply."""
    if scenario.expected is not None:
        return list(scenario.expected)
    return [ExpectedAlert(rule=a.rule, subject=a.subject) for a in implied_alerts(scenario)]


def check_expected(scenario: Scenario, source: str | Path = "scenario") -> None:
    """ConfigError if the hand-written `expected` differs from what the incidents imply."""
    if scenario.expected is None:
        return
    written = Counter((e.rule, e.subject) for e in scenario.expected)
    implied = Counter((a.rule, a.subject) for a in implied_alerts(scenario))
    if written != implied:
        missing = sorted((implied - written).elements())
        extra = sorted((written - implied).elements())
        raise ConfigError(
            f"{source}: expected: differs from what the incidents imply; "
            f"not listed: {missing or 'none'}; listed but not implied: {extra or 'none'}"
        )


# --------------------------------------------------------------------------- derivation


class _Derivation:
    """How the rules (docs/rules.md) judge each kind of incident, with this scenario's settings."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.rules = scenario.rules
        self.start, self.end = epoch(scenario.start_utc), epoch(scenario.end_utc)
        self.book = ScheduleBook(scenario.site, self.start, self.end)

    def alerts(self, incident: Incident) -> list[tuple[str, str]]:
        handler = {
            WaterLeak: self._leak,
            WetFloor: self._wet,
            AcLeftOn: self._ac,
            SkipCheckpoint: self._skip,
            SkipRound: self._skip,
            DoorHeldOpen: self._door,
            DoorForced: self._door,
            DoorDenied: self._door,
            DoorAfterHours: self._door,
            DeviceSilent: self._silent,
            BrokerRestart: self._broker,
        }[type(incident)]
        return handler(incident)  # type: ignore[operator]

    def _water_watches(self, device: str) -> bool:
        cfg = self.rules.water
        return cfg.enabled and (cfg.meters is None or device in cfg.meters)

    def _leak(self, leak: WaterLeak) -> list[tuple[str, str]]:
        if not self._water_watches(leak.device):
            return []
        cfg, out = self.rules.water, []
        override = cfg.overrides.get(leak.device)
        burst_limit = (override and override.burst_l_per_min) or cfg.burst_l_per_min
        min_flow = cfg.min_flow_l_per_min
        if override is not None and override.min_flow_l_per_min is not None:
            min_flow = override.min_flow_l_per_min
        a, b = leak_span(self.s, leak)
        b = min(b, self.end)
        if leak.flow > burst_limit and b - a >= cfg.burst_minutes * 60:
            out.append(("water_burst", leak.device))
        if leak.flow > min_flow and any(a <= w0 and w1 <= b for w0, w1 in self._quiet_windows()):
            out.append(("water_night_flow", leak.device))
        if leak.flow > min_flow and b - a >= cfg.continuous_hours * 3600:
            out.append(("water_continuous_flow", leak.device))
        return out

    def _quiet_windows(self) -> list[tuple[float, float]]:
        """The water rule's quiet windows that end (and are judged) during the night."""
        cfg, zone = self.rules.water, self.s.site.zone
        first = self.s.start_utc.astimezone(zone).date()
        windows = []
        for n in range(-1, int((self.end - self.start) // 86400) + 2):
            day = first + timedelta(days=n)
            end_day = day if cfg.night_end > cfg.night_start else day + timedelta(days=1)
            w0, w1 = epoch(local_instant(zone, day, cfg.night_start)), epoch(local_instant(zone, end_day, cfg.night_end))
            if self.start <= w0 and w1 <= self.end:
                windows.append((w0, w1))
        return windows

    def _wet(self, wet: WetFloor) -> list[tuple[str, str]]:
        return [("water_wet", wet.device)] if self._water_watches(wet.device) else []

    def _ac(self, left: AcLeftOn) -> list[tuple[str, str]]:
        cfg = self.rules.ac_after_hours
        place = self.s.site.locate(left.device)
        if not cfg.enabled or place is None:
            return []
        a = epoch(self.s.instant(left.at)) if left.at is not None else self.start
        b = min(epoch(self.s.instant(left.until)) if left.until is not None else self.end, self.end)
        grace = cfg.grace_minutes * 60
        subject = _room_subject(self.s, place.building, place.room)
        return [("ac_after_hours", subject) for x, y in self._unscheduled(place.schedule, a, b) if y - x >= grace]

    def _unscheduled(self, schedule: str | None, a: float, b: float) -> list[tuple[float, float]]:
        pieces, t = [], a
        for x, y in self.book.intervals(schedule):
            if y <= t or x >= b:
                continue
            if x > t:
                pieces.append((t, x))
            t = max(t, y)
        if t < b:
            pieces.append((t, b))
        return pieces

    def _skip(self, skip: SkipCheckpoint | SkipRound) -> list[tuple[str, str]]:
        patrol = self.rules.patrol
        guard = self.s.guard(skip.guard)
        route = self.s.route(guard.route)
        if not patrol.enabled:
            return []
        out = []
        for rnd in rounds_in_night(self.s, route):
            if rnd.at != skip.round:
                continue
            if isinstance(skip, SkipRound):
                if rnd.deadlines[0] <= self.end:
                    out.append(("patrol_round", rnd.key))
                continue
            out += self._skipped_checkpoint(rnd, route, guard.pace_minutes, skip.tag)
        return out

    def _skipped_checkpoint(self, rnd: Round, route: Any, pace: float, tag: str) -> list[tuple[str, str]]:
        tags = [c.tag for c in route.checkpoints]
        n = tags.index(tag)
        if rnd.deadlines[n] > self.end:
            return []
        out = [("patrol_checkpoint", f"{rnd.key}:{tag}")]
        planned = [rnd.start + 60 * (2 + i * pace) for i in range(len(tags)) if i != n]
        if planned and planned[0] > rnd.deadlines[0]:
            out.append(("patrol_round", rnd.key))
        gaps = [b - a for a, b in zip(planned, planned[1:])]
        if gaps and max(gaps) >= route.max_silence_minutes * 60:
            out.append(("patrol_silence", rnd.key))
        return out

    def _door(self, incident: DoorHeldOpen | DoorForced | DoorDenied | DoorAfterHours) -> list[tuple[str, str]]:
        cfg = self.rules.doors
        if not cfg.enabled:
            return []
        spec = self.s.device(incident.device)
        assert isinstance(spec, DoorControllerSpec)
        door, t = incident.door, epoch(self.s.instant(incident.at))
        out = []
        if isinstance(incident, DoorHeldOpen):
            override = cfg.doors.get(door)
            limit = (override and override.held_open_seconds) or cfg.held_open_seconds
            reported = spec.held_open_report_seconds is not None and spec.held_open_report_seconds < incident.seconds
            if incident.seconds >= limit or reported:
                out.append(("door_held_open", door))
        elif isinstance(incident, DoorForced):
            out.append(("door_forced", door))
        elif isinstance(incident, DoorDenied):
            if incident.count >= cfg.denied_count and (cfg.denied_count - 1) * 40 <= cfg.denied_minutes * 60:
                out.append(("door_denied", door))
        if isinstance(incident, (DoorHeldOpen, DoorAfterHours)):
            checked, schedule = door_schedule(self.s, door, spec.device)
            if checked and not self.book.scheduled(schedule, t):
                out.append(("door_after_hours", door))
        return out

    def _silent(self, silent: DeviceSilent) -> list[tuple[str, str]]:
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
        t = epoch(self.s.instant(silent.at))
        return [("deadman", silent.device)] if minutes is not None and t + minutes * 60 <= self.end else []

    def _broker(self, restart: BrokerRestart) -> list[tuple[str, str]]:
        cfg = self.rules.deadman
        if cfg.enabled and restart.down_seconds >= cfg.agent_offline_minutes * 60:
            return [("deadman_agent", self.s.agent)]
        return []


def _room_subject(scenario: Scenario, building: str, room: str) -> str:
    """The AC rule's subject: the room id, or building:room if the id repeats."""
    rooms = [r.id for b in scenario.site.buildings for r in b.rooms]
    return room if rooms.count(room) == 1 else f"{building}:{room}"


def _once_per_open_alert(scenario: Scenario, alerts: list[ImpliedAlert]) -> list[ImpliedAlert]:
    """Conditions the rules keep in one open alert: a door's after-hours use in one night,
    a forced door until a person resolves it, a meter's night flow over several nights."""
    merged = ("door_after_hours", "door_forced", "water_night_flow", "water_continuous_flow", "deadman_agent")
    seen: set[tuple[str, str]] = set()
    out = []
    for alert in alerts:
        key = (alert.rule, alert.subject)
        if alert.rule in merged and key in seen:
            continue
        seen.add(key)
        out.append(alert)
    return out


# --------------------------------------------------------------------------- the file


def ground_truth_document(
    scenario: Scenario, seed: int, *, skipped: list[str] | None = None, stats: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What, where and when: the incidents injected, the faults, the alerts they imply.

    `skipped` names incidents a run could not inject (a broker restart without a broker
    of its own); their alerts are left out of `expected_alerts`.
    """
    skipped = skipped or []
    implied = implied_alerts(scenario)
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
        "expected_alerts": [
            {"rule": a.rule, "subject": a.subject, "incident": a.incident} for a in implied if a.incident not in skipped
        ],
        "stats": stats or {},
    }


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
    if isinstance(incident, (SkipCheckpoint, SkipRound)):
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
    return None


def _end_of(scenario: Scenario, incident: Incident) -> datetime | None:
    if isinstance(incident, WaterLeak):
        return utc(min(leak_span(scenario, incident)[1], epoch(scenario.end_utc)))
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


@dataclass(frozen=True)
class GroundTruthCheck:
    """Raised alerts against the ground truth, as multisets of (rule, subject)."""

    expected: list[tuple[str, str]]
    found: list[tuple[str, str]]
    missing: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    provisional: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.missing and not self.unexpected

    def as_dict(self) -> dict[str, Any]:
        def rows(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
            return [{"rule": r, "subject": s} for r, s in pairs]

        return {
            "exact": self.exact,
            "missing": rows(self.missing),
            "unexpected": rows(self.unexpected),
            "provisional": rows(self.provisional),
            "found": rows(self.found),
            "expected": rows(self.expected),
        }


def compare(alerts: list[dict[str, Any]], expected: list[tuple[str, str]]) -> GroundTruthCheck:
    """`alerts` as the API lists them (rule, subject, state, details). Alerts a rule
    resolved itself as "reconciled from ..." late data are provisional and not counted."""
    provisional: list[tuple[str, str]] = []
    found: list[tuple[str, str]] = []
    for alert in alerts:
        key = (str(alert["rule"]), str(alert["subject"]))
        note = str((alert.get("details") or {}).get("note", ""))
        (provisional if alert.get("state") == "resolved" and note.startswith(RECONCILED) else found).append(key)
    want, got = Counter(expected), Counter(found)
    return GroundTruthCheck(
        expected=sorted(expected),
        found=sorted(found),
        missing=sorted((want - got).elements()),
        unexpected=sorted((got - want).elements()),
        provisional=sorted(provisional),
    )
