"""Guards walking their patrol rounds.

A guard walks every round of his route that starts during the night (the route's own
round times and days, from the gateway's rules, so both sides agree), tapping its
checkpoints in order a few minutes apart, always before each checkpoint's deadline. An
incident makes him skip a checkpoint or a whole round, or walk a whole round late (or
early): every tap of it shifted by the same amount. Taps go to an online reader's line
(simulators/patrol_reader.py) or into a wand, uploaded in one batch when it is docked,
hours later, with the original tap times (simulators/patrol_wand.py). A wand is docked at
the guard's `dock_at`, or at one time per round (`dock_at: {"23:30": "00:40", ...}`); a
bare time is its first occurrence after the round starts, so a week of nights docks every
morning.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from simulators.base import WAND, Emission, device_rng, epoch, utc
from simulators.calendar import local_instant
from simulators.patrol_wand import PatrolWandSim
from simulators.scenario import GuardSpec, LateRound, Scenario, SkipCheckpoint, SkipRound
from warden.config import PatrolRoute

#: The first checkpoint is reached this long after the round starts.
_FIRST_TAP_MINUTES = 2.0
#: A tap is never later than this before its checkpoint's deadline.
_DEADLINE_MARGIN_SECONDS = 90.0


@dataclass(frozen=True)
class Tap:
    t: float  # UTC epoch seconds, true time
    tag: str
    guard: str
    round: str = ""  # the round's key (Round.key)


@dataclass(frozen=True)
class Round:
    route: str
    day: date  # local date of the start
    at: time  # local start time
    start: float
    deadlines: tuple[float, ...]

    @property
    def key(self) -> str:
        """The patrol rule's alert subject for the round: route:YYYY-MM-DDTHH:MM (local)."""
        return f"{self.route}:{self.day.isoformat()}T{self.at:%H:%M}"


def rounds_in_night(scenario: Scenario, route: PatrolRoute) -> list[Round]:
    """Every round of `route` that starts during the night, in start order."""
    zone = scenario.site.zone
    start, end = epoch(scenario.start_utc), epoch(scenario.end_utc)
    first = scenario.start_utc.astimezone(zone).date() - timedelta(days=1)
    rounds = []
    for n in range(int((end - start) // 86400) + 3):
        day = first + timedelta(days=n)
        if day.weekday() not in route.days:
            continue
        for at in route.rounds:
            t = epoch(local_instant(zone, day, at))
            if start <= t < end:
                deadlines, d = [], t
                for checkpoint in route.checkpoints:
                    d += 60 * (checkpoint.allowance_minutes or route.allowance_minutes)
                    deadlines.append(d)
                rounds.append(Round(route.id, day, at, t, tuple(deadlines)))
    return sorted(rounds, key=lambda r: r.start)


def guard_taps(scenario: Scenario, guard: GuardSpec, seed: int) -> list[Tap]:
    """The guard's taps over the night, true times, in order."""
    route = scenario.route(guard.route)
    rng = device_rng(seed, "guard", guard.id)
    skipped_rounds = {i.round for i in scenario.incidents if isinstance(i, SkipRound) and i.guard == guard.id}
    skipped = {(i.round, i.tag) for i in scenario.incidents if isinstance(i, SkipCheckpoint) and i.guard == guard.id}
    rounds = rounds_in_night(scenario, route)
    taps: list[Tap] = []
    for rnd in rounds:
        at = rnd.at
        earliest = rnd.start
        shift = round_shift(scenario, guard, rnd, rounds)
        for n, (checkpoint, deadline) in enumerate(zip(route.checkpoints, rnd.deadlines)):
            planned = rnd.start + 60 * (_FIRST_TAP_MINUTES + n * guard.pace_minutes)
            t = planned + rng.uniform(-guard.jitter_seconds, guard.jitter_seconds)
            t = max(min(t, deadline - _DEADLINE_MARGIN_SECONDS), earliest + 5)
            earliest = t
            if at in skipped_rounds or (at, checkpoint.tag) in skipped:
                continue
            taps.append(Tap(round(t + shift), checkpoint.tag, guard.id, rnd.key))
    start, end = epoch(scenario.start_utc), epoch(scenario.end_utc)
    outside = [tap for tap in taps if not start <= tap.t < end]
    if outside:
        raise ValueError(f"guard {guard.id}: round {outside[0].round} shifted out of the night "
                         f"(a tap at {utc(outside[0].t):%Y-%m-%d %H:%M} UTC)")
    return sorted(taps, key=lambda tap: tap.t)


def round_shift(scenario: Scenario, guard: GuardSpec, rnd: Round, rounds: list[Round]) -> float:
    """Seconds the guard walks `rnd` late (negative: early), from a `late_round` incident:
    `minutes` shifts every round at that time; `start_at` starts the one nearest to it."""
    for incident in scenario.incidents:
        if not isinstance(incident, LateRound) or incident.guard != guard.id or incident.round != rnd.at:
            continue
        if incident.start_at is None:
            return 60.0 * (incident.minutes or 0.0)
        target = epoch(scenario.instant(incident.start_at))
        nearest = min((r for r in rounds if r.at == rnd.at), key=lambda r: abs(r.start - target))
        if nearest == rnd:
            return target - rnd.start
    return 0.0


def dock_times(scenario: Scenario, guard: GuardSpec, rounds: list[Round]) -> dict[str, float]:
    """When each round's taps are uploaded (round key -> UTC epoch): the guard's `dock_at`,
    or the one given for the round's start time; a bare time is its first occurrence
    after the round starts, a date and time that instant."""
    plan: dict[str, float] = {}
    for rnd in rounds:
        when = guard.dock_time(rnd.at)
        if when is None:
            raise ValueError(f"guard {guard.id}: dock_at gives no dock time for the {rnd.at:%H:%M} round")
        plan[rnd.key] = _after(scenario, when, rnd.start)
    return plan


def _after(scenario: Scenario, when: datetime | time, start: float) -> float:
    """A dock time as an instant: a date and time is exact, a bare time the first at or after `start`."""
    if isinstance(when, datetime):
        return epoch(scenario.instant(when))
    zone = scenario.site.zone
    day = utc(start).astimezone(zone).date()
    for offset in range(3):
        t = epoch(local_instant(zone, day + timedelta(days=offset), when))
        if t >= start:
            return t
    raise ValueError(f"{when} does not follow {utc(start)}")


def wand_uploads(scenario: Scenario, guard: GuardSpec, taps: list[Tap], skew: float = 0.0) -> list[Emission]:
    """The dock's batch files, one per docking, each with every tap the wand stored since
    the last one, whichever round the docking was meant for (tap times and the upload
    time on the wand's clock, `skew` off); a docking with an empty wand writes nothing."""
    assert guard.wand is not None and guard.dock is not None and guard.dock_at is not None
    plan = dock_times(scenario, guard, rounds_in_night(scenario, scenario.route(guard.route)))
    docks = sorted(set(plan.values()))
    batches: dict[float, list[Tap]] = {}
    for tap in taps:
        own = plan[tap.round]
        if tap.t >= own:
            raise ValueError(f"guard {guard.id}: taps after the wand is docked at {utc(own):%H:%M} UTC would never be uploaded")
        # a docking uploads everything the wand holds, whichever round it was docked for
        docked = min([d for d in docks if d > tap.t] + [own])
        batches.setdefault(docked, []).append(tap)
    end = epoch(scenario.end_utc)
    wand = PatrolWandSim(guard.wand)
    uploads = []
    for docked in sorted(batches):
        if docked > end:
            raise ValueError(f"guard {guard.id}: the wand is docked at {utc(docked):%Y-%m-%d %H:%M} UTC, after the night ends")
        for tap in sorted(batches[docked], key=lambda tap: tap.t):
            wand.tap(tap.tag, tap.guard, utc(tap.t + skew))
        uploaded = utc(docked + skew)
        uploads.append(Emission(
            docked, guard.dock, WAND, wand.batch(uploaded), topic=wand.batch_name(uploaded, len(uploads) + 1),
            kind="data", events=len(batches[docked]),
        ))
        wand.memory.clear()
    return uploads


def wand_upload(scenario: Scenario, guard: GuardSpec, taps: list[Tap], skew: float = 0.0) -> Emission:
    """The one batch of a guard whose wand is docked once in the night."""
    uploads = wand_uploads(scenario, guard, taps, skew)
    if len(uploads) != 1:
        raise ValueError(f"guard {guard.id}: the wand is docked {len(uploads)} times, not once")
    return uploads[0]
