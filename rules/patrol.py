"""Patrol rounds: missed, late and out-of-order checkpoints, rounds not started, silent guards.

A route is an ordered list of checkpoint tags walked at fixed local start times. Checkpoint
i of a round must be tapped between the round's opening (start - early_minutes) and its
deadline, start + the allowances of checkpoints 0..i, counted in elapsed time (so a round
crossing a daylight-saving change is as long as any other).

A round's result is a pure function of the taps placed at their event time and of the
watermark: the event time up to which no more data is awaited (ticks, or the newest tap
minus the allowed lateness). Alerts are the difference between successive results, so
taps in any order give the same alerts, and a wand uploaded hours later corrects them: a
missed checkpoint shown as visited is resolved with a note. See docs/rules.md#patrol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from rules import state
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import local_instant, wall_clock
from warden.config import PatrolConfig, PatrolRoute, SiteConfig
from warden.events import Event, PatrolTap, TapSource

SNAPSHOT_VERSION = 1

ROUND = "patrol_round"
CHECKPOINT = "patrol_checkpoint"
SILENCE = "patrol_silence"

_MAX_TAPS_PER_TAG = 200


@dataclass(frozen=True)
class _Tap:
    at: datetime
    source: str
    reader: str
    guard: str | None = None


@dataclass
class _Emitted:
    """The last signal sent for one alert key: what it said, and when that became true."""

    signature: str
    at: datetime


@dataclass
class _Round:
    route: str
    day: str  # local date of the start, ISO
    start: str  # local start, HH:MM
    taps: dict[str, list[_Tap]] = field(default_factory=dict)  # by tag
    emitted: dict[str, _Emitted] = field(default_factory=dict)  # "round", "silence", "cp:<tag>"


@dataclass(frozen=True)
class _Plan:
    """One round of a route on one day, in UTC."""

    route: PatrolRoute
    day: date
    start: time
    opens: datetime
    starts: datetime
    deadlines: tuple[datetime, ...]
    horizon: datetime  # taps up to here still belong to this round (late)

    @property
    def key(self) -> str:
        return f"{self.route.id}:{self.day.isoformat()}T{self.start:%H:%M}"


@dataclass(frozen=True)
class CheckpointView:
    tag: str
    deadline: datetime
    state: str  # pending, visited, late, missed
    tapped_at: datetime | None = None
    source: str = ""
    taps: int = 0
    before: tuple[str, ...] = ()  # earlier checkpoints of the route tapped after this one
    before_at: datetime | None = None  # when the last of those was tapped: the order was broken then


@dataclass(frozen=True)
class RoundView:
    plan: _Plan
    checkpoints: tuple[CheckpointView, ...]
    first_tap: _Tap | None
    gap: tuple[datetime, datetime, bool] | None  # longest silence: start, end, still going
    wand: bool  # some of the taps came from a wand


@dataclass(frozen=True)
class _Finding:
    rule: str
    subject: str
    severity: Severity
    message: str
    details: dict[str, float | str]
    at: datetime

    @property
    def signature(self) -> str:
        """What was said: a change of any of it is worth an update, nothing else is."""
        said = repr((self.severity.value, self.message, sorted(self.details.items())))
        return hashlib.blake2b(said.encode(), digest_size=8).hexdigest()


class PatrolRule:
    """Judges every configured round from its taps and the watermark."""

    name = "patrol"
    reads = frozenset({"patrol_tap"})

    def __init__(self, site: SiteConfig, config: PatrolConfig, lateness: timedelta = timedelta(0)) -> None:
        self._site = site
        self._config = config
        self._lateness = lateness
        self._keep = timedelta(hours=config.keep_hours)
        self._repeat = timedelta(seconds=config.repeat_seconds)
        self._routes = {route.id: route for route in config.routes}
        self._by_tag: dict[str, list[PatrolRoute]] = {}
        for route in config.routes:
            for checkpoint in route.checkpoints:
                self._by_tag.setdefault(checkpoint.tag, []).append(route)
        self._rounds: dict[str, _Round] = {}
        self._plans: dict[tuple[str, date, time], _Plan | None] = {}
        self._watermark: datetime | None = None
        self._since: datetime | None = None  # rounds opening before the rule first saw time are not judged
        self.stats: dict[str, int] = dict.fromkeys(
            ("unknown_tag", "outside_rounds", "other_guard", "too_late", "repeats"), 0
        )

    # ----------------------------------------------------------------- Rule protocol

    def on_event(self, event: Event) -> list[AlertSignal]:
        if not isinstance(event, PatrolTap) or not self._routes:
            return []
        routes = self._by_tag.get(event.tag)
        if not routes:
            self.stats["unknown_tag"] += 1
            return []
        for route in routes:
            self._place(route, event)
        watermark = event.event_time - self._lateness
        if event.source is TapSource.WAND:  # an upload of the past says nothing about the present
            watermark = self._watermark or watermark
        return self._advance(watermark)

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        if not self._routes:
            return []
        return self._advance(now)

    def rounds_state(self) -> list[dict[str, Any]]:
        """Every round being followed, as JSON-ready data for the API: each checkpoint's
        deadline and state (pending, visited, late, missed), as judged at the watermark."""
        if self._watermark is None:
            return []
        rounds = []
        for key, rnd in sorted(self._rounds.items(), key=lambda item: self._plan_of(item[1]).starts):
            view = self._view(rnd, self._watermark)
            rounds.append({
                "round": key,
                "route": view.plan.route.id,
                "date": rnd.day,
                "start": rnd.start,
                "starts_at": view.plan.starts.isoformat(),
                "started": view.first_tap is not None,
                "checkpoints": [
                    {
                        "tag": c.tag,
                        "deadline": c.deadline.isoformat(),
                        "state": c.state,
                        "tapped_at": c.tapped_at.isoformat() if c.tapped_at else None,
                        "source": c.source or None,
                        "taps": c.taps,
                        "out_of_order": bool(c.before),
                    }
                    for c in view.checkpoints
                ],
            })
        return rounds

    # ----------------------------------------------------------------- taps and rounds

    def _place(self, route: PatrolRoute, event: PatrolTap) -> None:
        """Put the tap into the round of `route` it belongs to, if any."""
        if route.guard and event.guard and event.guard != route.guard:
            self.stats["other_guard"] += 1
            return
        plan = self._plan_for(route, event.event_time)
        if plan is None:
            self.stats["outside_rounds"] += 1
            return
        expired = self._watermark is not None and self._watermark >= plan.horizon + self._keep
        if expired and plan.key not in self._rounds:
            self.stats["too_late"] += 1
            return
        rnd = self._rounds.setdefault(plan.key, _Round(route.id, plan.day.isoformat(), f"{plan.start:%H:%M}"))
        taps = rnd.taps.setdefault(event.tag, [])
        tap = _Tap(event.event_time, event.source.value, event.reader, event.guard)
        if any(abs(t.at - tap.at) <= self._repeat for t in taps):
            self.stats["repeats"] += 1
        if tap not in taps and len(taps) < _MAX_TAPS_PER_TAG:
            taps.append(tap)
            taps.sort(key=lambda t: (t.at, t.source, t.reader))

    def _advance(self, watermark: datetime) -> list[AlertSignal]:
        if self._watermark is None or watermark > self._watermark:
            self._watermark = watermark
        if self._since is None:
            self._since = self._watermark
        self._follow_new_rounds(self._watermark)
        signals: list[AlertSignal] = []
        for key in sorted(self._rounds):
            rnd = self._rounds[key]
            if rnd.route not in self._routes:
                continue
            signals += self._diff(rnd, self._view(rnd, self._watermark))
        for key, rnd in list(self._rounds.items()):
            if rnd.route not in self._routes or self._watermark >= self._plan_of(rnd).horizon + self._keep:
                del self._rounds[key]
        return sorted(signals, key=lambda s: (s.at, s.rule, s.subject))

    def _follow_new_rounds(self, watermark: datetime) -> None:
        """Start following every round that has opened by the watermark, taps or not."""
        assert self._since is not None
        zone = self._site.zone
        first = (watermark - self._keep).astimezone(zone).date() - timedelta(days=1)
        last = watermark.astimezone(zone).date() + timedelta(days=1)
        for route in self._routes.values():
            for n in range((last - first).days + 1):
                for start in route.rounds:
                    plan = self._plan(route, first + timedelta(days=n), start)
                    if plan and self._since <= plan.opens <= watermark < plan.horizon + self._keep:
                        self._rounds.setdefault(plan.key, _Round(route.id, plan.day.isoformat(), f"{start:%H:%M}"))

    def _plan(self, route: PatrolRoute, day: date, start: time) -> _Plan | None:
        key = (route.id, day, start)
        if key not in self._plans:
            if len(self._plans) > 5000:
                self._plans.clear()
            self._plans[key] = self._make_plan(route, day, start)
        return self._plans[key]

    def _make_plan(self, route: PatrolRoute, day: date, start: time) -> _Plan | None:
        if day.weekday() not in route.days:
            return None
        starts = local_instant(self._site.zone, day, start)
        deadlines, at = [], starts
        for checkpoint in route.checkpoints:
            at += timedelta(minutes=checkpoint.allowance_minutes or route.allowance_minutes)
            deadlines.append(at)
        return _Plan(
            route=route,
            day=day,
            start=start,
            opens=starts - timedelta(minutes=route.early_minutes),
            starts=starts,
            deadlines=tuple(deadlines),
            horizon=deadlines[-1] + timedelta(minutes=route.late_minutes),
        )

    def _plan_for(self, route: PatrolRoute, at: datetime) -> _Plan | None:
        """The latest round of the route opened by `at`, if `at` is before its horizon."""
        day = at.astimezone(self._site.zone).date()
        plans = [
            plan
            for n in (-1, 0, 1)
            for start in route.rounds
            if (plan := self._plan(route, day + timedelta(days=n), start)) is not None and plan.opens <= at
        ]
        if not plans:
            return None
        plan = max(plans, key=lambda p: p.opens)
        return plan if at < plan.horizon else None

    def _plan_of(self, rnd: _Round) -> _Plan:
        plan = self._plan(self._routes[rnd.route], date.fromisoformat(rnd.day), time.fromisoformat(rnd.start))
        assert plan is not None
        return plan

    # ----------------------------------------------------------------- judging

    def _view(self, rnd: _Round, watermark: datetime) -> RoundView:
        """The round as the taps up to the watermark show it."""
        plan = self._plan_of(rnd)
        taps = {tag: self._once(t for t in rnd.taps.get(tag, []) if t.at <= watermark) for tag in rnd.taps}
        views = [self._checkpoint(c.tag, deadline, taps.get(c.tag, []), watermark)
                 for c, deadline in zip(plan.route.checkpoints, plan.deadlines)]
        checkpoints = tuple(_order(views, i) for i in range(len(views)))
        merged = sorted((t for ts in taps.values() for t in ts), key=lambda t: (t.at, t.source, t.reader))
        outstanding = [v.deadline for v in checkpoints if v.state not in ("visited", "late")]
        gap = self._longest_gap(plan, [t.at for t in merged], watermark, max(outstanding, default=None))
        wand = any(t.source == TapSource.WAND.value for t in merged)
        return RoundView(plan, checkpoints, merged[0] if merged else None, gap, wand)

    def _once(self, taps: Iterable[_Tap]) -> list[_Tap]:
        """Repeated taps of one tag within repeat_seconds of the last one kept count once."""
        kept: list[_Tap] = []
        for tap in taps:
            if not kept or tap.at - kept[-1].at > self._repeat:
                kept.append(tap)
        return kept

    @staticmethod
    def _checkpoint(tag: str, deadline: datetime, taps: list[_Tap], watermark: datetime) -> CheckpointView:
        in_time = next((t for t in taps if t.at <= deadline), None)
        if in_time is not None:
            return CheckpointView(tag, deadline, "visited", in_time.at, in_time.source, len(taps))
        if watermark < deadline:
            return CheckpointView(tag, deadline, "pending", taps=len(taps))
        if taps:
            return CheckpointView(tag, deadline, "late", taps[0].at, taps[0].source, len(taps))
        return CheckpointView(tag, deadline, "missed")

    def _longest_gap(
        self, plan: _Plan, times: list[datetime], watermark: datetime, open_until: datetime | None
    ) -> tuple[datetime, datetime, bool] | None:
        """The longest stretch without a tap between the first tap and the round's last
        deadline, if it reached max_silence_minutes. A late tap still ends a silence, and
        the round stops waiting for taps once no checkpoint is outstanding (`open_until`:
        the last deadline of a checkpoint not yet tapped)."""
        end = plan.deadlines[-1]
        if not times or times[0] >= end:
            return None
        gaps = [(a, min(b, end), False) for a, b in zip(times, times[1:]) if a < end]
        if open_until is not None and times[-1] < open_until:
            gaps.append((times[-1], min(watermark, open_until), watermark < open_until))
        limit = timedelta(minutes=plan.route.max_silence_minutes)
        long = [g for g in gaps if g[1] - g[0] >= limit]
        return max(long, key=lambda g: (g[1] - g[0], -g[0].timestamp())) if long else None

    def _findings(self, view: RoundView, watermark: datetime) -> dict[str, _Finding]:
        plan = view.plan
        findings: dict[str, _Finding] = {}
        if view.first_tap is None:
            if watermark >= plan.deadlines[0]:
                findings["round"] = self._not_started(view, watermark)
            return findings
        if view.first_tap.at > plan.deadlines[0]:
            findings["round"] = self._started_late(plan, view.first_tap)
        for checkpoint in view.checkpoints:
            finding = self._checkpoint_finding(plan, checkpoint)
            if finding is not None:
                findings[f"cp:{checkpoint.tag}"] = finding
        if view.gap is not None:
            findings["silence"] = self._silence(plan, view.gap)
        return findings

    def _not_started(self, view: RoundView, watermark: datetime) -> _Finding:
        plan = view.plan
        passed = [d for d in plan.deadlines if d <= watermark]
        total = len(plan.deadlines)
        message = f"Round {self._label(plan)} not started: no tap by {wall_clock(self._site, plan.deadlines[0])}"
        if len(passed) > 1:
            message += f", {len(passed)} of {total} checkpoints missed"
        details = self._details(plan) | {
            "missed": len(passed),
            "checkpoints": total,
            "deadline": plan.deadlines[0].isoformat(),
        }
        return _Finding(ROUND, plan.key, Severity.CRITICAL, message, details, passed[-1])

    def _started_late(self, plan: _Plan, first: _Tap) -> _Finding:
        """Kept open once the round starts: that it started late stays true."""
        minutes = (first.at - plan.deadlines[0]).total_seconds() / 60
        message = (
            f"Round {self._label(plan)} started late at {wall_clock(self._site, first.at)}, "
            f"{minutes:.0f} min after its first deadline {wall_clock(self._site, plan.deadlines[0])}"
        )
        details = self._details(plan) | {"started_at": first.at.isoformat(), "minutes_late": round(minutes, 2),
                                         "deadline": plan.deadlines[0].isoformat()}
        return _Finding(ROUND, plan.key, Severity.WARNING, message, details, first.at)

    def _checkpoint_finding(self, plan: _Plan, c: CheckpointView) -> _Finding | None:
        if c.state not in ("missed", "late") and not c.before:
            return None
        where = f"Checkpoint {c.tag} in round {self._label(plan)}"
        details = self._details(plan) | {"tag": c.tag, "state": c.state, "deadline": c.deadline.isoformat()}
        if c.state == "missed":
            message = f"{where} missed: no tap by {wall_clock(self._site, c.deadline)}"
            return _Finding(CHECKPOINT, f"{plan.key}:{c.tag}", Severity.WARNING, message, details, c.deadline)
        assert c.tapped_at is not None
        details |= {"tapped_at": c.tapped_at.isoformat(), "source": c.source}
        parts, at = [], max(c.tapped_at, c.before_at or c.tapped_at)
        if c.state == "late":
            minutes = (c.tapped_at - c.deadline).total_seconds() / 60
            parts.append(f"tapped late at {wall_clock(self._site, c.tapped_at)}, {minutes:.0f} min after {wall_clock(self._site, c.deadline)}")
            details["minutes_late"] = round(minutes, 2)
        if c.before:
            parts.append(f"tapped out of order, before {', '.join(c.before)}")
            details["before"] = ",".join(c.before)
        message = f"{where} {'; '.join(parts)}"
        return _Finding(CHECKPOINT, f"{plan.key}:{c.tag}", Severity.INFO, message, details, at)

    def _silence(self, plan: _Plan, gap: tuple[datetime, datetime, bool]) -> _Finding:
        start, end, ongoing = gap
        limit = timedelta(minutes=plan.route.max_silence_minutes)
        minutes = (end - start).total_seconds() / 60
        details = self._details(plan) | {"gap_start": start.isoformat()}
        if ongoing:  # nothing here may grow with the watermark, or every tick would update
            message = f"No tap in round {self._label(plan)} since {wall_clock(self._site, start)}"
            return _Finding(SILENCE, plan.key, Severity.WARNING, message, details, start + limit)
        message = f"No tap for {minutes:.0f} min in round {self._label(plan)} ({wall_clock(self._site, start)}-{wall_clock(self._site, end)})"
        details |= {"gap_end": end.isoformat(), "gap_minutes": round(minutes, 2)}
        return _Finding(SILENCE, plan.key, Severity.WARNING, message, details, end)

    def _diff(self, rnd: _Round, view: RoundView) -> list[AlertSignal]:
        """Signals that take the alerts from what was last said to what the taps now show."""
        assert self._watermark is not None
        findings = self._findings(view, self._watermark)
        signals = []
        for key in sorted(set(findings) | set(rnd.emitted)):
            finding, said = findings.get(key), rnd.emitted.get(key)
            if finding is not None and (said is None or said.signature != finding.signature):
                action = SignalAction.RAISE if said is None else SignalAction.UPDATE
                rnd.emitted[key] = _Emitted(finding.signature, finding.at)
                signals.append(self._signal(finding, action))
            elif finding is None and said is not None:
                del rnd.emitted[key]
                signals.append(self._resolve(key, view, said))
        return signals

    def _resolve(self, key: str, view: RoundView, said: _Emitted) -> AlertSignal:
        plan = view.plan
        details = self._details(plan)
        if key == "round":
            assert view.first_tap is not None
            tap, rule, subject = view.first_tap, ROUND, plan.key
            note = _reconciled(tap.source)
            message = f"Round {self._label(plan)} started at {wall_clock(self._site, tap.at)}: {note}"
            at = max(said.at, tap.at)
        elif key == "silence":
            rule, subject, at = SILENCE, plan.key, said.at
            note = _reconciled(TapSource.WAND.value if view.wand else "")
            message = f"Silence in round {self._label(plan)} {note}"
        else:
            tag = key.removeprefix("cp:")
            c = next(c for c in view.checkpoints if c.tag == tag)
            rule, subject = CHECKPOINT, f"{plan.key}:{tag}"
            note = _reconciled(c.source)
            at = max(said.at, c.tapped_at or said.at)
            visited = wall_clock(self._site, c.tapped_at or at)
            message = f"Checkpoint {tag} in round {self._label(plan)} visited at {visited}: {note}"
            details |= {"tag": tag, "state": c.state, "tapped_at": c.tapped_at.isoformat() if c.tapped_at else ""}
        details["note"] = note
        return AlertSignal(self._site.id, rule, subject, SignalAction.RESOLVE, at, Severity.INFO, message, details)

    # ----------------------------------------------------------------- helpers

    def _signal(self, finding: _Finding, action: SignalAction) -> AlertSignal:
        f = finding
        return AlertSignal(self._site.id, f.rule, f.subject, action, f.at, f.severity, f.message, f.details)

    def _details(self, plan: _Plan) -> dict[str, float | str]:
        details: dict[str, float | str] = {"route": plan.route.id, "round": plan.key.removeprefix(f"{plan.route.id}:")}
        if plan.route.guard:
            details["guard"] = plan.route.guard
        return details

    def _label(self, plan: _Plan) -> str:
        return f"{plan.start:%H:%M} of {plan.day.isoformat()} on route {plan.route.id}"

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        """Plain JSON: the watermark, and each followed round's taps and what was said about it."""
        return {
            "version": SNAPSHOT_VERSION,
            "watermark": state.dump(self._watermark),
            "since": state.dump(self._since),
            "rounds": state.dump(self._rounds),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state; rounds of routes no longer configured are dropped."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported {self.name} snapshot version {snapshot.get('version')!r}")
        self._watermark = _parse(snapshot["watermark"])
        self._since = _parse(snapshot["since"])
        rounds = {key: state.load(_Round, r) for key, r in snapshot["rounds"].items()}
        self._rounds = {key: r for key, r in rounds.items() if r.route in self._routes}


def _order(views: list[CheckpointView], i: int) -> CheckpointView:
    """Checkpoint i, with the earlier checkpoints of the route that were tapped after it."""
    mine = views[i].tapped_at
    later = [v for v in views[:i] if mine and v.tapped_at and v.tapped_at > mine]
    if not later:
        return views[i]
    last = max(v.tapped_at for v in later if v.tapped_at)
    return replace(views[i], before=tuple(v.tag for v in later), before_at=last)


def _reconciled(source: str) -> str:
    return "reconciled from wand upload" if source == TapSource.WAND.value else "reconciled from late data"


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
