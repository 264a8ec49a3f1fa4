"""Patrol rounds walked with offline wands, uploads applied as a whole, and a late guard on
the fall-back night (issue 16, points 5, 6 and 8). Expected values are worked out by hand
from the route: checkpoints every 10 min after the start, taps belonging to a round until
60 min after its last deadline, wands due 240 min after it unless configured."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.alerts import AlertSignal, Severity, SignalAction
from rules.patrol import CHECKPOINT, ROUND, SILENCE, UPLOAD, PatrolConfig, PatrolRule
from tests.rules.helpers import AlertBook, utc
from tests.rules.test_patrol import ROUTE, SITE, TAGS, night, tap
from warden.events import TapSource

RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE
WAND = TapSource.WAND

R1 = "north:2026-03-03T23:30"  # deadlines 23:40, 23:50, 00:00, 00:10
R2 = "north:2026-03-04T02:00"  # deadlines 02:10, 02:20, 02:30, 02:40
IN_TIME_1 = [("23:35", "cp-gate"), ("23:45", "cp-hall"), ("23:55", "cp-204"), ("00:05", "cp-yard")]
IN_TIME_2 = [("02:05", "cp-gate"), ("02:15", "cp-hall"), ("02:25", "cp-204"), ("02:35", "cp-yard")]


def make(start: datetime, **route: Any) -> PatrolRule:
    rule = PatrolRule(SITE, PatrolConfig.model_validate({"routes": [{**ROUTE, **route}]}))
    rule.on_tick(start)  # the gateway ticks from start-up
    return rule


def ticks(rule: PatrolRule, first: datetime, last: datetime, every: timedelta = timedelta(minutes=1)) -> list[AlertSignal]:
    """The gateway's ticks from `first` to `last` inclusive (lateness 0: now is the watermark)."""
    signals, at = [], first
    while at <= last:
        signals += rule.on_tick(at)
        at += every
    return signals


def upload(rule: PatrolRule, taps: list[tuple[str, str]]) -> list[AlertSignal]:
    """A docked wand's batch: fed tap by tap with on_event only, as the gateway does."""
    return [signal for hhmm, tag in taps for signal in rule.on_event(tap(night(hhmm), tag, WAND))]


def states(rule: PatrolRule, key: str) -> dict[str, str]:
    [found] = [r for r in rule.rounds_state() if r["round"] == key]
    return {c["tag"]: c["state"] for c in found["checkpoints"]}


# --------------------------------------------------------------------------- wand routes


def test_rounds_walked_in_time_and_docked_3h_after_the_last_deadline_page_nobody() -> None:
    """Both rounds walked in time on a wand docked at 05:40, 3 h after the 02:00 round's
    last deadline (02:40). Wand due 360 min after each round: 00:10 + 6 h = 06:10 and
    02:40 + 6 h = 08:40, so nothing is judged before the dock, then everything is visited."""
    rule = make(night("22:00"), wand=True, upload_deadline_minutes=360)
    assert ticks(rule, night("22:01"), night("05:40")) == []  # no "not started" at 23:40 or 02:10
    assert [r["awaiting_upload"] for r in rule.rounds_state()] == [True, True]
    assert upload(rule, IN_TIME_1 + IN_TIME_2) == []
    assert rule.on_tick(night("05:41")) == []  # one tick, 60 s after the dock: the upload settles
    assert states(rule, R1) == states(rule, R2) == dict.fromkeys(TAGS, "visited")
    assert [r["awaiting_upload"] for r in rule.rounds_state()] == [False, False]
    assert ticks(rule, night("05:42"), night("09:00"), timedelta(minutes=5)) == []


def test_an_online_route_with_a_late_wand_is_reconciled_at_once_not_tap_by_tap() -> None:
    """An online route (as before: judged live) walked in time on a wand docked at 03:10.
    It was "not started" at 23:40; the upload then resolves that one alert, and no
    checkpoint or silence alert opens between its first and its last tap."""
    rule = make(night("22:00"), rounds=["23:30"])
    signals = ticks(rule, night("22:01"), night("03:10"))
    assert [(s.rule, s.action, s.at) for s in signals] == [
        (ROUND, RAISE, night("23:40")), (ROUND, UPDATE, night("23:50")),
        (ROUND, UPDATE, night("00:00")), (ROUND, UPDATE, night("00:10")),  # 2, 3, 4 of 4 missed
    ]
    assert upload(rule, IN_TIME_1) == []
    assert rule.on_tick(night("03:10:30")) == []  # 30 s < 60 s: the upload may still be arriving
    [resolved] = rule.on_tick(night("03:11"))
    assert (resolved.rule, resolved.subject, resolved.action) == (ROUND, R1, RESOLVE)
    assert resolved.at == night("00:10")  # the instant of the judgement it withdraws
    assert resolved.message == "Round 23:30 of 2026-03-03 on route north started at 23:35 on 2026-03-03: reconciled from wand upload"


def test_a_wand_not_uploaded_by_its_deadline_is_one_alert_then_the_round_is_judged() -> None:
    """Round 23:30, wand due 240 min after 00:10: 04:10. The wand comes at 05:00 with
    cp-204 skipped: the upload alert resolves (uploaded 05:00, when the last tick stood:
    50 min late) and cp-204 is missed at its deadline, 00:00."""
    rule = make(night("22:00"), rounds=["23:30"], wand=True)
    assert ticks(rule, night("22:01"), night("04:09")) == []
    [late] = rule.on_tick(night("04:10"))
    assert (late.rule, late.subject, late.action, late.severity, late.at) == (UPLOAD, R1, RAISE, Severity.WARNING, night("04:10"))
    assert late.message == (
        "Wand of round 23:30 of 2026-03-03 on route north not uploaded by 04:10: "
        "the round cannot be judged until the wand is docked"
    )
    assert late.details["upload_deadline"] == night("04:10").isoformat()
    assert ticks(rule, night("04:11"), night("05:00")) == []  # said once
    assert upload(rule, [("23:35", "cp-gate"), ("23:45", "cp-hall"), ("00:05", "cp-yard")]) == []
    signals = rule.on_tick(night("05:01"))
    assert [(s.rule, s.subject, s.action, s.at) for s in signals] == [
        (CHECKPOINT, f"{R1}:cp-204", RAISE, night("00:00")),
        (UPLOAD, R1, RESOLVE, night("05:00")),
    ]
    missed, resolved = signals
    assert missed.message == "Checkpoint cp-204 in round 23:30 of 2026-03-03 on route north missed: no tap by 00:00"
    assert resolved.message == (
        "Wand of round 23:30 of 2026-03-03 on route north uploaded at 05:00, 50 min after its upload deadline: "
        "the round is judged on its taps"
    )
    assert resolved.details["minutes_late"] == 50


def test_a_wand_docked_before_the_round_ended_does_not_judge_it() -> None:
    """Docked at 23:50 with the first two taps: before the last deadline (00:10), so the
    rest may still be on the wand; cp-204 is not "missed" at 00:00. Docked again at 01:00
    with the other two: all visited, nothing said."""
    rule = make(night("22:00"), rounds=["23:30"], wand=True)
    assert ticks(rule, night("22:01"), night("23:50")) == []
    assert upload(rule, IN_TIME_1[:2]) == []
    assert ticks(rule, night("23:51"), night("01:00")) == []
    assert states(rule, R1) == {"cp-gate": "visited", "cp-hall": "visited", "cp-204": "pending", "cp-yard": "pending"}
    assert upload(rule, IN_TIME_1[2:]) == []
    assert ticks(rule, night("01:01"), night("02:00")) == []
    assert states(rule, R1) == dict.fromkeys(TAGS, "visited")


def test_a_later_upload_shows_an_earlier_round_was_not_walked() -> None:
    """The 23:30 round is not walked; the 02:00 one is, and the wand is docked at 03:00.
    That upload came after both rounds ended (00:10 and 02:40), so it holds all their
    taps: the 23:30 round was not started (all 4 deadlines passed, the last at 00:10)."""
    rule = make(night("22:00"), wand=True)
    assert ticks(rule, night("22:01"), night("03:00")) == []
    assert upload(rule, IN_TIME_2) == []
    [raised] = rule.on_tick(night("03:01"))
    assert (raised.rule, raised.subject, raised.action, raised.severity, raised.at) == (ROUND, R1, RAISE, Severity.CRITICAL, night("00:10"))
    assert raised.message == (
        "Round 23:30 of 2026-03-03 on route north not started: no tap by 23:40 on 2026-03-03, 4 of 4 checkpoints missed"
    )
    assert states(rule, R2) == dict.fromkeys(TAGS, "visited")


def test_staged_taps_and_uploads_survive_a_restart() -> None:
    rule = make(night("22:00"), rounds=["23:30"])
    ticks(rule, night("22:01"), night("03:10"))
    upload(rule, IN_TIME_1[:2])
    restored = PatrolRule(SITE, PatrolConfig.model_validate({"routes": [{**ROUTE, "rounds": ["23:30"]}]}))
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    assert upload(restored, IN_TIME_1[2:]) == []
    assert restored.on_tick(night("03:10:59")) == []  # the settling counts from the first staged tap, 03:10
    assert [(s.rule, s.action) for s in restored.on_tick(night("03:11"))] == [(ROUND, RESOLVE)]
    with pytest.raises(ValueError, match="version"):
        restored.restore({**rule.state_snapshot(), "version": 4})  # 3 is read since rounds keep their plan


def test_a_version_1_snapshot_is_read_with_nothing_staged() -> None:
    """The release before wand staging saved watermark, since and rounds only."""
    rule = make(night("22:00"), rounds=["23:30"])
    rule.on_event(tap(night("23:35"), "cp-gate"))
    snapshot = rule.state_snapshot()
    old = {"version": 1, "watermark": snapshot["watermark"], "since": snapshot["since"], "rounds": snapshot["rounds"]}
    restored = PatrolRule(SITE, PatrolConfig.model_validate({"routes": [{**ROUTE, "rounds": ["23:30"]}]}))
    restored.restore(json.loads(json.dumps(old)))
    [missed] = restored.on_tick(night("23:50"))  # cp-gate kept; cp-hall missed at 23:50
    assert (missed.subject, missed.action) == (f"{R1}:cp-hall", RAISE)


def test_wand_route_config_is_validated() -> None:
    with pytest.raises(ValueError, match="upload_deadline_minutes: only for a route walked with a wand"):
        PatrolConfig.model_validate({"routes": [{**ROUTE, "upload_deadline_minutes": 120}]})
    with pytest.raises(ValueError, match="upload_deadline_minutes must be shorter than keep_hours"):
        PatrolConfig.model_validate({"keep_hours": 2, "routes": [{**ROUTE, "wand": True}]})  # 240 >= 60 + 120


# --------------------------------------------------------------------------- late rounds, daylight saving


def test_a_guard_walking_the_second_0230_of_the_fall_back_night_is_one_late_round() -> None:
    """Round 02:30 on Sunday 2026-10-25 is the first 02:30, CEST: 00:30 UTC. Deadlines
    00:40, 00:50, 01:00, 01:10 UTC (02:40+02:00, 02:50+02:00, then the clocks go back at
    01:00 UTC: 02:00+01:00, 02:10+01:00). The guard walks from the second 02:30: taps at
    02:32, 02:42, 02:52, 03:02 CET = 01:32, 01:42, 01:52, 02:02 UTC. 01:32 - 00:40 = 52 min
    late; moved deadlines 00:50+52 = 01:42, 01:00+52 = 01:52, 01:10+52 = 02:02: every tap
    on time for a round 52 min late. Taps belong to the round until 01:10 + 60 = 02:10 UTC."""
    rule = make(utc("2026-10-24 22:00"), rounds=["02:30"])
    before = ticks(rule, utc("2026-10-24 22:01"), utc("2026-10-25 01:31"))
    assert [(s.rule, s.action, s.at) for s in before] == [
        (ROUND, RAISE, utc("2026-10-25 00:40")), (ROUND, UPDATE, utc("2026-10-25 00:50")),
        (ROUND, UPDATE, utc("2026-10-25 01:00")), (ROUND, UPDATE, utc("2026-10-25 01:10")),
    ]
    assert before[0].message == "Round 02:30 of 2026-10-25 on route north not started: no tap by 02:40+02:00"
    [started] = rule.on_event(tap(utc("2026-10-25 01:32"), "cp-gate"))
    assert (started.rule, started.action, started.severity) == (ROUND, UPDATE, Severity.WARNING)
    assert started.message == (
        "Round 02:30 of 2026-10-25 on route north started late at 02:32+01:00, 52 min after its first deadline 02:40+02:00"
    )
    assert started.details["minutes_late"] == 52
    rest = [rule.on_event(tap(utc(at), tag)) for at, tag in
            (("2026-10-25 01:42", "cp-hall"), ("2026-10-25 01:52", "cp-204"), ("2026-10-25 02:02", "cp-yard"))]
    assert rest == [[], [], []]
    assert ticks(rule, utc("2026-10-25 02:03"), utc("2026-10-25 04:00")) == []
    [state] = rule.rounds_state()
    assert (state["minutes_late"], [c["state"] for c in state["checkpoints"]]) == (52, ["late"] * 4)


def test_a_late_round_with_a_silence_and_a_skip_is_judged_on_its_moved_timetable() -> None:
    """23:30 round started 30 min late (cp-gate 00:10 for 23:40): moved deadlines 00:20,
    00:30, 00:40. cp-hall 00:18; cp-204 skipped; cp-yard missed at 00:40, then tapped at
    00:52, 12 min after it. The 34 min between 00:18 and 00:52 exceed max_silence (30),
    but a silence counts only until the round's moved end, 00:40: 22 min, none."""
    rule = make(night("22:00"), rounds=["23:30"])
    ticks(rule, night("22:01"), night("00:09"))
    signals = [s for hhmm, tag in (("00:10", "cp-gate"), ("00:18", "cp-hall")) for s in rule.on_event(tap(night(hhmm), tag))]
    signals += ticks(rule, night("00:19"), night("00:51"))
    signals += rule.on_event(tap(night("00:52"), "cp-yard"))
    signals += ticks(rule, night("00:53"), night("02:00"))
    assert [(s.rule, s.subject, s.action) for s in signals] == [
        (ROUND, R1, UPDATE),  # started late, 30 min
        (CHECKPOINT, f"{R1}:cp-204", RAISE),  # missed at 00:30
        (CHECKPOINT, f"{R1}:cp-yard", RAISE),  # missed at 00:40
        (CHECKPOINT, f"{R1}:cp-yard", UPDATE),  # tapped 12 min after its moved deadline
    ]
    assert (signals[1].at, signals[2].at, signals[3].at) == (night("00:30"), night("00:40"), night("00:52"))
    assert signals[3].details["minutes_late"] == 12
    assert signals[3].message.endswith("tapped late at 00:52, 12 min after 00:40 (its deadline 00:10 + the round's 30 min delay)")
    assert not [s for s in signals if s.rule == SILENCE]


# --------------------------------------------------------------------------- arrival order of an upload

_walk = st.lists(st.tuples(st.booleans(), st.integers(min_value=-600, max_value=1800)), min_size=8, max_size=8)


@settings(max_examples=40, deadline=None)
@given(steps=_walk, seed=st.integers(min_value=0, max_value=10_000), gap_seconds=st.integers(min_value=0, max_value=6))
def test_an_upload_in_any_order_and_split_gives_the_same_alerts_as_in_one_piece(
    steps: list[tuple[bool, int]], seed: int, gap_seconds: int
) -> None:
    """Both rounds of a wand route walked any way (each tap kept or not, up to 10 min early
    or 30 min late), docked at 05:40. Fed in one piece, or shuffled and split by gateway
    ticks a few seconds apart (all within the 60 s settling): the same alerts."""
    starts = [night("23:35"), night("02:05")]
    taps = [
        tap(starts[i // 4] + timedelta(minutes=10 * (i % 4), seconds=jitter), TAGS[i % 4], WAND)
        for i, (kept, jitter) in enumerate(steps) if kept
    ]

    def run(order: list[Any], gap: timedelta | None) -> AlertBook:
        rule, book = make(night("22:00"), wand=True, upload_deadline_minutes=360), AlertBook()
        book.apply(ticks(rule, night("22:01"), night("05:40")))
        for n, event in enumerate(order):
            book.apply(rule.on_event(event))
            if gap is not None:
                book.apply(rule.on_tick(night("05:40") + gap * (n + 1)))
        book.apply(ticks(rule, night("05:41"), night("09:00"), timedelta(minutes=5)))
        return book

    shuffled = list(taps)
    random.Random(seed).shuffle(shuffled)
    assert run(shuffled, timedelta(seconds=gap_seconds)).summary() == run(taps, None).summary()
