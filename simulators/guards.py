"""Guards walking their patrol rounds.

A guard walks every round of his route that starts during the night (the route's own
round times and days, from the gateway's rules, so both sides agree), tapping its
checkpoints in order a few minutes apart, always before each checkpoint's deadline. An
incident makes him skip a checkpoint or a whole round. Taps go to an online reader's line
(simulators/patrol_reader.py) or into a wand, uploaded in one batch when it is docked,
hours later, with the original tap times (simulators/patrol_wand.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time, timedelta

from rules.schedule import local_instant
from simulators.base import WAND, Emission, device_rng, epoch, utc
from simulators.patrol_wand import PatrolWandSim
from simulators.scenario import GuardSpec, Scenario, SkipCheckpoint, SkipRound
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
    taps: list[Tap] = []
    for rnd in rounds_in_night(scenario, route):
        at = rnd.at
        earliest = rnd.start
        for n, (checkpoint, deadline) in enumerate(zip(route.checkpoints, rnd.deadlines)):
            planned = rnd.start + 60 * (_FIRST_TAP_MINUTES + n * guard.pace_minutes)
            t = planned + rng.uniform(-guard.jitter_seconds, guard.jitter_seconds)
            t = max(min(t, deadline - _DEADLINE_MARGIN_SECONDS), earliest + 5)
            earliest = t
            if at in skipped_rounds or (at, checkpoint.tag) in skipped:
                continue
            taps.append(Tap(round(t), checkpoint.tag, guard.id))
    return taps


def wand_upload(scenario: Scenario, guard: GuardSpec, taps: list[Tap], skew: float = 0.0) -> Emission:
    """The dock's batch file with every tap the wand stored before it was docked."""
    assert guard.wand is not None and guard.dock is not None and guard.dock_at is not None
    docked = epoch(scenario.instant(guard.dock_at))
    late = [tap for tap in taps if tap.t >= docked]
    if late:
        raise ValueError(f"guard {guard.id}: taps after the wand is docked at {utc(docked):%H:%M} UTC would never be uploaded")
    wand = PatrolWandSim(guard.wand)
    for tap in taps:
        wand.tap(tap.tag, tap.guard, utc(tap.t + skew))
    uploaded = utc(docked + skew)
    return Emission(
        docked, guard.dock, WAND, wand.batch(uploaded), topic=wand.batch_name(uploaded, 1), kind="data", events=len(taps)
    )

