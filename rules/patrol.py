"""Patrol rounds: missed, late and out-of-order checkpoints, rounds not started or walked
late, silent guards, wands not uploaded.

A route is an ordered list of checkpoint tags walked at fixed local start times. Checkpoint
i of a round must be tapped between the round's opening (start - early_minutes) and its
deadline, start + the allowances of checkpoints 0..i, counted in elapsed time (so a round
crossing a daylight-saving change is as long as any other). A round started late moves its
whole timetable by its delay: one alert for the round, not one per checkpoint.

A round's result is a pure function of the taps placed at their event time and of the
watermark: the event time up to which no more data is awaited (ticks, or the newest tap
minus the allowed lateness). Alerts are the difference between successive results, so
taps in any order give the same alerts, and a wand uploaded hours later corrects them: a
missed checkpoint shown as visited is resolved with a note.

Wand taps are staged and applied together once the watermark (the gateway's clock on
ticks) has moved `upload_settle_seconds` past the first of them; rounds with staged taps
are not judged meanwhile, so nobody is paged between an upload's first and last tap,
even when it reaches the gateway in several messages. A route walked with a wand (`wand: true`) is not judged before its
wand is uploaded after the round, or before its upload deadline passes; then one alert
says the upload is late. See docs/rules.md#patrol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from pydantic import Field, model_validator

from rules import state
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import day_follows, local_instant, wall_clock
from warden.config import PatrolRoute, SiteConfig, StrictModel, require_unique
from warden.events import Event, PatrolTap, TapSource
from warden.i18n import N_, Message
from warden.names import checkpoint_name, name_or_id

SNAPSHOT_VERSION = 3  # 2: staged wand taps and each wand route's last upload; 3: each round's plan, routes changed

ROUND = "patrol_round"
CHECKPOINT = "patrol_checkpoint"
SILENCE = "patrol_silence"
UPLOAD = "patrol_upload_late"


#: The alert rules this family emits (rules/config.py: ALERT_RULES).
RULE_NAMES = (ROUND, CHECKPOINT, SILENCE, UPLOAD)


class PatrolConfig(StrictModel):
    enabled: bool = True
    routes: list[PatrolRoute] = Field(default_factory=list)
    repeat_seconds: float = Field(default=60.0, ge=0, description="Taps of one tag this close count once")
    keep_hours: float = Field(default=24.0, gt=0, description="How long a finished round accepts wand uploads")
    upload_settle_seconds: float = Field(
        default=60.0, ge=0, description="Wand taps are applied together once no newer ones came for this long "
        "(gateway clock): an upload split over several messages is judged as a whole"
    )

    @model_validator(mode="after")
    def _unique_routes(self) -> PatrolConfig:
        require_unique((r.id for r in self.routes), "routes")
        for route in self.routes:
            if route.wand and route.upload_minutes >= route.late_minutes + self.keep_hours * 60:
                raise ValueError(f"routes: {route.id}: upload_deadline_minutes must be shorter than keep_hours, "
                                 "or the round is forgotten before its wand is due")
        return self

_MAX_TAPS_PER_TAG = 200
_PLANS_KEPT = 5000  # round plans cached at least (PatrolRule._plan); more with many routes
_MAX_STAGED = 20_000  # wand taps awaiting the next watermark move; more are applied at once


@dataclass(frozen=True)
class _Tap:
    at: datetime
    source: str
    reader: str
    guard: str | None = None


@dataclass(frozen=True)
class _Staged:
    """A wand tap received but not yet applied: its upload is applied as a whole."""

    tag: str
    tap: _Tap


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
    plan: dict[str, Any] | None = None  # the route's config (JSON) when the round opened; None: older snapshot

    @property
    def key(self) -> str:
        return f"{self.route}:{self.day}T{self.start}"


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

    @property
    def upload_deadline(self) -> datetime:
        """A wand route's wand must be uploaded by then (meaningless for online routes)."""
        return self.deadlines[-1] + timedelta(minutes=self.route.upload_minutes)


@dataclass(frozen=True)
class CheckpointView:
    tag: str
    deadline: datetime
    state: str  # pending, visited, late, missed
    due: datetime | None = None  # the deadline moved by the round's delay (a round started late)
    tapped_at: datetime | None = None
    source: str = ""
    taps: int = 0
    before: tuple[str, ...] = ()  # earlier checkpoints of the route tapped after this one
    before_at: datetime | None = None  # when the last of those was tapped: the order was broken then

    @property
    def with_round(self) -> bool:
        """Late only as much as its round: tapped by its moved deadline, so no alert of its own."""
        return self.state == "late" and self.tapped_at is not None and self.due is not None and self.tapped_at <= self.due


@dataclass(frozen=True)
class RoundView:
    plan: _Plan
    checkpoints: tuple[CheckpointView, ...]
    first_tap: _Tap | None
    gap: tuple[datetime, datetime, bool] | None  # longest silence: start, end, still going
    wand: bool  # some of the taps came from a wand
    delay: timedelta  # how late the round started: first tap - first deadline, or zero
    judged: bool  # False: a wand route whose wand was not uploaded after the round yet


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
        self._route_rounds: dict[str, dict[str, _Round]] = {}  # route -> its followed rounds by key (_next)
        for route in config.routes:
            if route.schedule is not None and route.schedule not in site.schedules:
                raise ValueError(f"patrol.routes: {route.id}: schedule {route.schedule!r} is not a schedule of site {site.id}")
        # A route without a schedule is written as before it could have one: snapshots of then compare equal.
        self._route_json = {route.id: route.model_dump(mode="json", exclude={"schedule"} if route.schedule is None else None)
                            for route in config.routes}
        self._pinned: dict[str, _Plan] = {}  # round key -> its plan, for rounds opened under another config
        self._changed: dict[str, datetime] = {}  # route -> watermark when its config changed (at a restore)
        self._plans: dict[tuple[str, date, time], _Plan | None] = {}
        # Each tick plans every round from keep_hours back to a day ahead (_follow_new_rounds): a
        # smaller cache would be cleared and every plan remade on every tick of a site with many rounds.
        walked_days = int(config.keep_hours // 24) + 4
        self._plans_max = max(_PLANS_KEPT, 2 * walked_days * sum(len(route.rounds) for route in config.routes))
        self._previous_plans: dict[str, _Plan | None] = {}  # round key -> the round opened before it
        self._watermark: datetime | None = None
        self._since: datetime | None = None  # rounds opening before the rule first saw time are not judged
        self._staged: list[_Staged] = []  # wand taps of the upload being received
        self._staged_since: datetime | None = None  # the watermark when the first of them came
        self._settle = timedelta(seconds=config.upload_settle_seconds)
        self._uploads: dict[str, datetime] = {}  # wand route -> when its newest upload was applied
        self._wand_uploads: dict[str, dict[str, datetime]] = {}  # wand route -> wand (reader) -> its newest upload
        self.stats: dict[str, int] = dict.fromkeys(
            ("unknown_tag", "outside_rounds", "other_guard", "too_late", "repeats"), 0
        )

    # ----------------------------------------------------------------- Rule protocol

    def on_event(self, event: Event) -> list[AlertSignal]:
        if not isinstance(event, PatrolTap) or not self._routes:
            return []
        routes = self._routes_of(event.tag)
        if not routes:
            self.stats["unknown_tag"] += 1
            return []
        tap = _Tap(event.event_time, event.source.value, event.reader, event.guard)
        if event.source is TapSource.WAND:
            # Applied with the rest of its upload once it has settled (_settle_staged); an
            # upload of the past says nothing about the present, so it does not move the watermark.
            if not self._staged:
                self._staged_since = self._watermark
            self._staged.append(_Staged(event.tag, tap))
            if len(self._staged) < _MAX_STAGED:
                return []
            self._staged_since = None  # too many to hold: applied now
            return self._advance(self._watermark or event.event_time - self._lateness)
        for route in routes:
            self._place(route, event.tag, tap)
        return self._advance(event.event_time - self._lateness)

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
                "route_name": name_or_id(view.plan.route.name, view.plan.route.id),
                "date": rnd.day,
                "start": rnd.start,
                "starts_at": view.plan.starts.isoformat(),
                "started": view.first_tap is not None,
                "minutes_late": round(view.delay.total_seconds() / 60, 2),
                "wand": view.plan.route.wand,
                "awaiting_upload": not view.judged,
                "upload_deadline": view.plan.upload_deadline.isoformat() if view.plan.route.wand else None,
                "checkpoints": [
                    {
                        "tag": c.tag,
                        "name": name_or_id(checkpoint_name(view.plan.route, c.tag), c.tag),
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

    def _place(self, route: PatrolRoute, tag: str, tap: _Tap) -> None:
        """Put the tap into the round of `route` it belongs to, if any."""
        if route.guard and tap.guard and tap.guard != route.guard:
            self.stats["other_guard"] += 1
            return
        plan = self._plan_for(route, tap.at)
        if plan is None or all(c.tag != tag for c in plan.route.checkpoints):  # not a checkpoint of that round's plan
            self.stats["outside_rounds"] += 1
            return
        expired = self._watermark is not None and self._watermark >= plan.horizon + self._keep
        if expired and plan.key not in self._rounds:
            self.stats["too_late"] += 1
            return
        rnd = self._follow(route, plan)
        taps = rnd.taps.setdefault(tag, [])
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
        held = self._settle_staged(self._watermark)
        for route_id, changed in list(self._changed.items()):  # no round opened before it is followed any more
            if self._watermark > changed + self._keep + timedelta(days=2):
                del self._changed[route_id]
        self._follow_new_rounds(self._watermark)
        signals: list[AlertSignal] = []
        for key in sorted(self._rounds):
            rnd = self._rounds[key]
            if rnd.route not in self._routes or key in held:
                continue
            signals += self._diff(rnd, self._view(rnd, self._watermark))
        for key, rnd in list(self._rounds.items()):
            if key in held:
                continue
            if rnd.route not in self._routes or self._watermark >= self._plan_of(rnd).horizon + self._keep:
                self._settle_lent(rnd)
                del self._rounds[key]
                self._route_rounds[rnd.route].pop(key, None)
                self._pinned.pop(key, None)
        return sorted(signals, key=lambda s: (s.at, s.rule, s.subject))

    def _settle_staged(self, watermark: datetime) -> set[str]:
        """Apply the staged wand taps if their upload has settled; else the keys of the
        rounds they belong to, which are held (not judged) until it has."""
        if not self._staged:
            return set()
        if self._staged_since is None or watermark >= self._staged_since + self._settle:
            self._apply_staged(watermark)
            return set()
        return {
            plan.key
            for item in self._staged
            for route in self._routes_of(item.tag)
            if (plan := self._plan_for(route, item.tap.at)) is not None
        }

    def _apply_staged(self, watermark: datetime) -> None:
        """Place the staged wand taps, all at once, and note when each wand route was
        uploaded: when the upload began to arrive (the watermark then, + the lateness it
        lags the gateway's clock by)."""
        staged, since, self._staged, self._staged_since = self._staged, self._staged_since, [], None
        uploaded = (since or watermark) + self._lateness
        for item in staged:
            for route in self._routes_of(item.tag):
                self._place(route, item.tag, item.tap)
                if route.wand and not (route.guard and item.tap.guard and item.tap.guard != route.guard):
                    self._uploads[route.id] = max(self._uploads.get(route.id, uploaded), uploaded)
                    wands = self._wand_uploads.setdefault(route.id, {})
                    wands[item.tap.reader] = max(wands.get(item.tap.reader, uploaded), uploaded)

    def _judged(self, plan: _Plan) -> bool:
        """Whether the round can be judged: always, unless walked with a wand that has not
        been uploaded since the round's last deadline (its taps may still be on the wand)."""
        if not plan.route.wand:
            return True
        uploaded = self._uploads.get(plan.route.id)
        if uploaded is None or uploaded < plan.deadlines[-1]:
            return False
        # A route walked with several wands: an upload without this round's taps may be the other
        # wand's. A round with none of its taps yet waits for each wand that uploaded the route's
        # taps within keep_hours before it opened (one used that recently may hold it), or for
        # the upload deadline. One wand: its upload since the round's end judges it, as before.
        rnd = self._rounds.get(plan.key)
        if rnd is not None and any(t.source == TapSource.WAND.value for ts in rnd.taps.values() for t in ts):
            return True
        wands = self._wand_uploads.get(plan.route.id, {})
        return not any(plan.opens - self._keep <= at < plan.deadlines[-1] for at in wands.values())

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
                    if plan and self._since <= plan.opens <= watermark < plan.horizon + self._keep and self._usable(plan):
                        self._follow(route, plan)

    def _follow(self, route: PatrolRoute, plan: _Plan) -> _Round:
        """The round of `plan`, followed from now if it was not yet: it keeps the route's present
        config as its plan until judged."""
        rnd = self._rounds.get(plan.key)
        if rnd is None:
            rnd = _Round(route.id, plan.day.isoformat(), f"{plan.start:%H:%M}", plan=self._route_json[route.id])
            self._rounds[plan.key] = rnd
            self._route_rounds.setdefault(route.id, {})[plan.key] = rnd
        return rnd

    def _routes_of(self, tag: str) -> list[PatrolRoute]:
        """The configured routes whose rounds may take a tap of `tag`: the routes that list it, and
        those with a round under way that opened under a config listing it (a checkpoint removed since)."""
        routes = list(self._by_tag.get(tag, []))
        for plan in self._pinned.values():
            route = self._routes.get(plan.route.id)
            if route is not None and route not in routes and any(c.tag == tag for c in plan.route.checkpoints):
                routes.append(route)
        return routes

    def _usable(self, plan: _Plan) -> bool:
        """Whether a round of the present config is followed. After a route's config changed, the
        new plan applies from the next round: not to rounds that opened before the change (they
        were not the plan then), nor to ones overlapping a round still walked by the old plan."""
        changed = self._changed.get(plan.route.id)
        if changed is None or plan.key in self._pinned:
            return True
        if plan.opens <= changed:
            return False
        return not any(p.route.id == plan.route.id and p.opens <= plan.deadlines[-1] and plan.opens <= p.deadlines[-1]
                       for p in self._pinned.values())

    def _plan(self, route: PatrolRoute, day: date, start: time) -> _Plan | None:
        key = (route.id, day, start)
        if key not in self._plans:
            if len(self._plans) > self._plans_max:
                self._plans.clear()
            self._plans[key] = self._make_plan(route, day, start)
        return self._plans[key]

    def _make_plan(self, route: PatrolRoute, day: date, start: time) -> _Plan | None:
        weekday = day.weekday() if route.schedule is None else day_follows(self._site, route.schedule, day)
        if weekday is None or weekday not in route.days:
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
            and plan.key not in self._pinned and self._usable(plan)
        ]
        plans += [plan for plan in self._pinned.values() if plan.route.id == route.id and plan.opens <= at]
        if not plans:
            return None
        plan = max(plans, key=lambda p: p.opens)
        return plan if at < plan.horizon else None

    def _previous(self, plan: _Plan) -> tuple[_Plan, _Round] | None:
        """The round of the route opened just before `plan`'s, if it is still followed and
        its late taps still count when `plan` opens."""
        if plan.key not in self._previous_plans:
            if len(self._previous_plans) > self._plans_max:
                self._previous_plans.clear()
            self._previous_plans[plan.key] = self._plan_for(plan.route, plan.opens - timedelta(microseconds=1))
        prev = self._previous_plans[plan.key]
        rnd = None if prev is None else self._rounds.get(prev.key)
        return None if prev is None or rnd is None else (prev, rnd)

    def _next(self, plan: _Plan) -> tuple[_Plan, _Round] | None:
        """The followed round of the route opened next after `plan`'s, if `plan`'s is its previous
        and it has taps (it can lend none otherwise)."""
        later = [(p, rnd) for rnd in self._route_rounds.get(plan.route.id, {}).values()
                 if rnd.taps and (p := self._plan_of(rnd)).opens > plan.opens]  # its route's only: no rounds² a tick
        if not later:
            return None
        nxt = min(later, key=lambda item: item[0].opens)
        before = self._previous(nxt[0])
        return nxt if before is not None and before[0] == plan else None

    @staticmethod
    def _lent(prev: tuple[_Plan, _Round], nxt: tuple[_Plan, _Round]) -> dict[str, _Tap]:
        """Taps placed in the next round (the latest opened) that belong to the previous one:
        per tag, its first tap in the next round's early window (opened, not yet started)
        when the previous round was started before it, is still taking late taps, and has
        no tap of that tag yet. A round walked late then finishes in the next one's window."""
        (prev_plan, prev_rnd), (plan, rnd) = prev, nxt
        lent: dict[str, _Tap] = {}
        for tag, taps in rnd.taps.items():
            first = taps[0] if taps else None
            if first is None or first.at >= plan.starts or first.at >= prev_plan.horizon:
                continue
            if any(t.at <= first.at for t in prev_rnd.taps.get(tag, [])):
                continue
            if any(t.at < first.at for ts in prev_rnd.taps.values() for t in ts):
                lent[tag] = first
        return lent

    def _round_taps(self, rnd: _Round, plan: _Plan) -> dict[str, list[_Tap]]:
        """The round's taps by tag: those placed in it, less those it lends to the previous
        round, plus those the next round lends it."""
        taps = {tag: list(ts) for tag, ts in rnd.taps.items()}
        prev = self._previous(plan) if taps else None
        if prev is not None:
            for tag, tap in self._lent(prev, (plan, rnd)).items():
                taps[tag].remove(tap)
        nxt = self._next(plan)
        if nxt is not None:
            for tag, tap in self._lent((plan, rnd), nxt).items():
                taps[tag] = sorted([*taps.get(tag, []), tap], key=lambda t: (t.at, t.source, t.reader))
        return taps

    def _settle_lent(self, rnd: _Round) -> None:
        """Before a round is forgotten, the taps the next round lent it are taken out of the
        next round for good, so the next round's judgement does not change when it goes."""
        nxt = self._next(self._plan_of(rnd))
        if nxt is not None:
            for tag, tap in self._lent((self._plan_of(rnd), rnd), nxt).items():
                nxt[1].taps[tag].remove(tap)

    def _plan_of(self, rnd: _Round) -> _Plan:
        pinned = self._pinned.get(rnd.key)
        if pinned is not None:
            return pinned
        plan = self._plan(self._routes[rnd.route], date.fromisoformat(rnd.day), time.fromisoformat(rnd.start))
        assert plan is not None
        return plan

    # ----------------------------------------------------------------- judging

    def _view(self, rnd: _Round, watermark: datetime) -> RoundView:
        """The round as the taps up to the watermark show it. A round whose first tap came
        after its first deadline runs late by that much: each deadline moves with it."""
        plan = self._plan_of(rnd)
        judged = self._judged(plan)
        placed = self._round_taps(rnd, plan)
        taps = {tag: self._once(t for t in ts if t.at <= watermark) for tag, ts in placed.items()}
        merged = sorted((t for ts in taps.values() for t in ts), key=lambda t: (t.at, t.source, t.reader))
        delay = max(merged[0].at - plan.deadlines[0], timedelta(0)) if merged else timedelta(0)
        views: list[CheckpointView] = []
        after: datetime | None = None  # the tap taken for the checkpoints before
        for c, deadline in zip(plan.route.checkpoints, plan.deadlines):
            view = self._checkpoint(c.tag, deadline, deadline + delay, _in_order_first(taps.get(c.tag, []), after),
                                    watermark if judged else None)
            views.append(view)
            after = view.tapped_at or after
        # Out of order only once the checkpoint's due time passed: till then a tap keeping the order may come.
        checkpoints = tuple(_order(views, i) if watermark >= (views[i].due or views[i].deadline) else views[i]
                            for i in range(len(views)))
        outstanding = [v.due or v.deadline for v in checkpoints if v.state not in ("visited", "late")]
        gap = self._longest_gap(plan, [t.at for t in merged], watermark, max(outstanding, default=None), delay)
        wand = any(t.source == TapSource.WAND.value for t in merged)
        return RoundView(plan, checkpoints, merged[0] if merged else None, gap, wand, delay, judged)

    def _once(self, taps: Iterable[_Tap]) -> list[_Tap]:
        """Repeated taps of one tag within repeat_seconds of the last one kept count once."""
        kept: list[_Tap] = []
        for tap in taps:
            if not kept or tap.at - kept[-1].at > self._repeat:
                kept.append(tap)
        return kept

    @staticmethod
    def _checkpoint(
        tag: str, deadline: datetime, due: datetime, taps: list[_Tap], watermark: datetime | None
    ) -> CheckpointView:
        """`due`: the deadline moved by the round's delay; `watermark` None: not judged yet.
        `taps` in order of preference (_in_order_first): the first that is in time is taken."""
        in_time = next((t for t in taps if t.at <= deadline), None)
        if in_time is not None:
            return CheckpointView(tag, deadline, "visited", due, in_time.at, in_time.source, len(taps))
        with_round = next((t for t in taps if t.at <= due), None)
        if with_round is not None:  # late with its round: known as soon as tapped
            return CheckpointView(tag, deadline, "late", due, with_round.at, with_round.source, len(taps))
        if watermark is None or watermark < due:
            return CheckpointView(tag, deadline, "pending", due, taps=len(taps))
        if taps:
            return CheckpointView(tag, deadline, "late", due, taps[0].at, taps[0].source, len(taps))
        return CheckpointView(tag, deadline, "missed", due)

    def _longest_gap(
        self, plan: _Plan, times: list[datetime], watermark: datetime, open_until: datetime | None, delay: timedelta
    ) -> tuple[datetime, datetime, bool] | None:
        """The longest stretch without a tap between the first tap and the round's last
        deadline (moved by the round's delay), if it reached max_silence_minutes. A late
        tap still ends a silence, and the round stops waiting for taps once no checkpoint
        is outstanding (`open_until`: the last deadline of a checkpoint not yet tapped)."""
        end = plan.deadlines[-1] + delay
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
        if not view.judged:  # a wand round: nothing to say before its upload deadline but that
            if watermark >= plan.upload_deadline:
                findings["upload"] = self._upload_late(plan)
            return findings
        if view.first_tap is None:
            if watermark >= plan.deadlines[0]:
                findings["round"] = self._not_started(view, watermark)
            return findings
        if view.delay:
            findings["round"] = self._started_late(plan, view.first_tap)
        for checkpoint in view.checkpoints:
            finding = self._checkpoint_finding(plan, checkpoint, view.delay)
            if finding is not None:
                findings[f"cp:{checkpoint.tag}"] = finding
        if view.gap is not None:
            findings["silence"] = self._silence(plan, view.gap)
        return findings

    def _not_started(self, view: RoundView, watermark: datetime) -> _Finding:
        plan = view.plan
        passed = [d for d in plan.deadlines if d <= watermark]
        total = len(plan.deadlines)
        at = passed[-1]
        message = Message("Round {round} not started: no tap by {time}", round=self._label(plan),
                          time=self._time(plan.deadlines[0], at))
        if len(passed) > 1:
            message = Message("Round {round} not started: no tap by {time}, {missed} of {total} checkpoints missed",
                              round=self._label(plan), time=self._time(plan.deadlines[0], at), missed=len(passed), total=total)
        details = self._details(plan) | {
            "missed": len(passed),
            "checkpoints": total,
            "deadline": plan.deadlines[0].isoformat(),
        }
        return _Finding(ROUND, plan.key, Severity.CRITICAL, message, details, at)

    def _started_late(self, plan: _Plan, first: _Tap) -> _Finding:
        """The round walked late, as one alert: its checkpoints keep its delay without one
        each. Kept open once the round starts: that it started late stays true."""
        minutes = (first.at - plan.deadlines[0]).total_seconds() / 60
        message = Message(
            "Round {round} started late at {time}, {minutes:.0f} min after its first deadline {deadline}",
            round=self._label(plan), time=self._time(first.at, first.at), minutes=minutes,
            deadline=self._time(plan.deadlines[0], first.at),
        )
        details = self._details(plan) | {"started_at": first.at.isoformat(), "minutes_late": round(minutes, 2),
                                         "deadline": plan.deadlines[0].isoformat()}
        return _Finding(ROUND, plan.key, Severity.WARNING, message, details, first.at)

    def _checkpoint_finding(self, plan: _Plan, c: CheckpointView, delay: timedelta) -> _Finding | None:
        """A checkpoint's own alert: missed, or late or out of order beyond its round's delay."""
        if c.state not in ("missed", "late") and not c.before:
            return None
        if c.with_round and not c.before:
            return None
        due = c.due or c.deadline
        where = Message("Checkpoint {checkpoint} in round {round}", checkpoint=c.tag, round=self._label(plan))
        details = self._details(plan) | {"tag": c.tag, "state": c.state, "deadline": c.deadline.isoformat()}
        moved = Message(" (its deadline {deadline} + the round's {minutes:.0f} min delay)", deadline=self._time(c.deadline, due),
                        minutes=delay.total_seconds() / 60) if delay else Message("")
        if delay:
            details["due"] = due.isoformat()
        if c.state == "missed":
            message = Message("{where} missed: no tap by {time}{moved}", where=where, time=self._time(due, due), moved=moved)
            return _Finding(CHECKPOINT, f"{plan.key}:{c.tag}", Severity.WARNING, message, details, due)
        assert c.tapped_at is not None
        details |= {"tapped_at": c.tapped_at.isoformat(), "source": c.source}
        parts, at = [], max(c.tapped_at, c.before_at or c.tapped_at)
        if c.state == "late" and not c.with_round:
            minutes = (c.tapped_at - due).total_seconds() / 60
            parts.append(Message("tapped late at {time}, {minutes:.0f} min after {due}{moved}", time=self._time(c.tapped_at, at),
                                 minutes=minutes, due=self._time(due, at), moved=moved))
            details["minutes_late"] = round(minutes, 2)
        if c.before:
            parts.append(Message("tapped out of order, before {checkpoints}", checkpoints=", ".join(c.before)))
            details["before"] = ",".join(c.before)
        message = (Message("{where} {first}; {second}", where=where, first=parts[0], second=parts[1]) if len(parts) == 2
                   else Message("{where} {first}", where=where, first=parts[0]))
        return _Finding(CHECKPOINT, f"{plan.key}:{c.tag}", Severity.INFO, message, details, at)

    def _silence(self, plan: _Plan, gap: tuple[datetime, datetime, bool]) -> _Finding:
        start, end, ongoing = gap
        limit = timedelta(minutes=plan.route.max_silence_minutes)
        minutes = (end - start).total_seconds() / 60
        details = self._details(plan) | {"gap_start": start.isoformat()}
        if ongoing:  # nothing here may grow with the watermark, or every tick would update
            message = Message("No tap in round {round} since {time}", round=self._label(plan),
                              time=self._time(start, start + limit))
            return _Finding(SILENCE, plan.key, Severity.WARNING, message, details, start + limit)
        message = Message("No tap for {minutes:.0f} min in round {round} ({start} to {end})", minutes=minutes,
                          round=self._label(plan), start=self._time(start, end), end=self._time(end, end))
        details |= {"gap_end": end.isoformat(), "gap_minutes": round(minutes, 2)}
        return _Finding(SILENCE, plan.key, Severity.WARNING, message, details, end)

    def _upload_late(self, plan: _Plan) -> _Finding:
        """One alert for a wand round whose wand was not uploaded by its deadline: without
        the taps nothing else about the round can be said."""
        deadline = plan.upload_deadline
        message = Message(
            "Wand of round {round} not uploaded by {time}: the round cannot be judged until the wand is docked",
            round=self._label(plan), time=self._time(deadline, deadline),
        )
        details = self._details(plan) | {"upload_deadline": deadline.isoformat(),
                                         "last_deadline": plan.deadlines[-1].isoformat()}
        return _Finding(UPLOAD, plan.key, Severity.WARNING, message, details, deadline)

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
        if key == "upload":
            uploaded = self._uploads.get(plan.route.id) or said.at
            rule, subject, at, note = UPLOAD, plan.key, max(said.at, uploaded), "wand uploaded"
            minutes = (uploaded - plan.upload_deadline).total_seconds() / 60
            message = Message("Wand of round {round} uploaded at {time}, {minutes:.0f} min after its upload deadline: "
                              "the round is judged on its taps", round=self._label(plan), time=self._time(uploaded, at),
                              minutes=minutes)
            details |= {"uploaded_at": uploaded.isoformat(), "minutes_late": round(minutes, 2)}
        elif key == "round":
            assert view.first_tap is not None
            tap, rule, subject = view.first_tap, ROUND, plan.key
            note = _reconciled(tap.source)
            at = max(said.at, tap.at)
            message = Message("Round {round} started at {time}: {note}", round=self._label(plan), time=self._time(tap.at, at),
                              note=Message(note))
        elif key == "silence":
            rule, subject, at = SILENCE, plan.key, said.at
            note = _reconciled(TapSource.WAND.value if view.wand else "")
            message = Message("Silence in round {round} {note}", round=self._label(plan), note=Message(note))
        else:
            tag = key.removeprefix("cp:")
            c = next(c for c in view.checkpoints if c.tag == tag)
            rule, subject = CHECKPOINT, f"{plan.key}:{tag}"
            note = _reconciled(c.source)
            at = max(said.at, c.tapped_at or said.at)
            visited = self._time(c.tapped_at or at, at)
            message = Message("Checkpoint {checkpoint} in round {round} visited at {visited}: {note}", checkpoint=tag,
                              round=self._label(plan), visited=visited, note=Message(note))
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

    def _label(self, plan: _Plan) -> Message:
        return Message("{start} of {day} on route {route}", start=f"{plan.start:%H:%M}", day=plan.day.isoformat(),
                       route=plan.route.id)

    def _time(self, at: datetime, ref: datetime) -> str:
        """`at` as a guard reads it in a message spoken at `ref`: with its date when on
        another local day, with its UTC offset on a night the clocks change."""
        return wall_clock(self._site, at, ref=ref)

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        """Plain JSON: the watermark, each followed round's taps and what was said about it,
        wand taps not yet applied and when each wand route was last uploaded."""
        return {
            "version": SNAPSHOT_VERSION,
            "watermark": state.dump(self._watermark),
            "since": state.dump(self._since),
            "rounds": state.dump(self._rounds),
            "staged": state.dump(self._staged),
            "staged_since": state.dump(self._staged_since),
            "uploads": state.dump(self._uploads),
            "wand_uploads": {route: state.dump(wands) for route, wands in self._wand_uploads.items()},
            "routes": self._route_json,
            "changed": state.dump(self._changed),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state; rounds of routes no longer configured are dropped. A round opened
        under another config of its route keeps that plan until judged, and the route's new plan
        applies from its next round (`_usable`). Versions 1 (before staged wand taps) and 2 (before
        rounds kept their plan) have the same rounds, nothing staged, judged by the config: read as such."""
        state.check_version(snapshot, self.name, (1, 2, SNAPSHOT_VERSION))
        self._watermark = _parse(snapshot["watermark"])
        self._since = _parse(snapshot["since"])
        rounds = {key: state.load(_Round, r) for key, r in snapshot["rounds"].items()}
        self._rounds = {key: r for key, r in rounds.items() if r.route in self._routes}
        self._route_rounds, self._pinned = {}, {}
        for key, rnd in self._rounds.items():
            self._route_rounds.setdefault(rnd.route, {})[key] = rnd
            if rnd.plan is not None and rnd.plan != self._route_json[rnd.route]:
                plan = self._make_plan(self._old_route(rnd.plan), date.fromisoformat(rnd.day), time.fromisoformat(rnd.start))
                if plan is not None:
                    self._pinned[key] = plan
        self._changed = {route: datetime.fromisoformat(at) for route, at in snapshot.get("changed", {}).items()
                         if route in self._routes}
        before = snapshot.get("routes")
        if before is not None and self._watermark is not None:  # version 3: the config the rounds were judged by
            for route_id, route in self._route_json.items():
                if before.get(route_id) != route:
                    self._changed[route_id] = self._watermark
        self._staged = [state.load(_Staged, item) for item in snapshot.get("staged", [])]
        self._staged_since = _parse(snapshot.get("staged_since"))
        self._uploads = {route: datetime.fromisoformat(at) for route, at in snapshot.get("uploads", {}).items()}
        self._wand_uploads = {route: {wand: datetime.fromisoformat(at) for wand, at in wands.items()}
                              for route, wands in snapshot.get("wand_uploads", {}).items()}  # none before: one wand each

    def _old_route(self, plan: dict[str, Any]) -> PatrolRoute:
        """The route a round opened under. Its schedule only chose the round's day: one renamed or
        removed from the site since is read as none, so the restart restores instead of failing."""
        route = PatrolRoute.model_validate(plan)
        return route if route.schedule in (None, *self._site.schedules) else route.model_copy(update={"schedule": None})


def _in_order_first(taps: list[_Tap], after: datetime | None) -> list[_Tap]:
    """A checkpoint's taps (in time order), those after the tap taken for the checkpoints before
    it first: tapped twice in a round (a stray tap of another route's guard, a guard's slip),
    the tap that keeps the route's order counts, not the stray one before it."""
    if after is None:
        return taps
    return [t for t in taps if t.at >= after] + [t for t in taps if t.at < after]


def _order(views: list[CheckpointView], i: int) -> CheckpointView:
    """Checkpoint i, with the earlier checkpoints of the route that were tapped after it."""
    mine = views[i].tapped_at
    later = [v for v in views[:i] if mine and v.tapped_at and v.tapped_at > mine]
    if not later:
        return views[i]
    last = max(v.tapped_at for v in later if v.tapped_at)
    return replace(views[i], before=tuple(v.tag for v in later), before_at=last)


def _reconciled(source: str) -> str:
    return N_("reconciled from wand upload") if source == TapSource.WAND.value else N_("reconciled from late data")


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
