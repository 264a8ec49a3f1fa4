from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.alerts import AlertSignal, Severity, SignalAction
from rules.config import RulesConfig
from rules.engine import RuleEngine
from rules.patrol import CHECKPOINT, ROUND, SILENCE, PatrolConfig, PatrolRule
from tests.rules.helpers import AlertBook, arrival_order, local, of_rule, replay, utc
from warden.config import SiteConfig
from warden.events import PatrolTap, TapSource, stable_event_id

RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

SITE = SiteConfig.model_validate({"id": "school", "timezone": "Europe/Berlin"})
TAGS = ["cp-gate", "cp-hall", "cp-204", "cp-yard"]
ROUTE: dict[str, Any] = {"id": "north", "checkpoints": TAGS, "rounds": ["23:30", "02:00"]}
# Round 23:30 of 2026-03-03 opens 23:20; deadlines 23:40, 23:50, 00:00, 00:10; taps count until
# 01:10 (late_minutes 60 after the last deadline).
R1 = "north:2026-03-03T23:30"


def config(**route: Any) -> PatrolConfig:
    return PatrolConfig.model_validate({"routes": [{**ROUTE, **route}]})


def tap(at: datetime, tag: str, source: TapSource = TapSource.ONLINE, guard: str | None = "guard-lee") -> PatrolTap:
    return PatrolTap(
        id=stable_event_id("school", "reader-1", tag, at.isoformat(), source),
        site="school",
        device="reader-1",
        event_time=at,
        reader="reader-1",
        tag=tag,
        guard=guard,
        source=source,
    )


def walk(rule: PatrolRule, *steps: tuple[str, str] | str) -> list[AlertSignal]:
    """Taps ("HH:MM[:SS] on the night of 2026-03-03", tag) and ticks ("HH:MM") in order."""
    signals: list[AlertSignal] = []
    for step in steps:
        if isinstance(step, tuple):
            signals += rule.on_event(tap(night(step[0]), step[1]))
        else:
            signals += rule.on_tick(night(step))
    return signals


def night(hhmm: str) -> datetime:
    """A local time on the night starting 2026-03-03 (times before noon are the next day)."""
    day = "2026-03-03" if int(hhmm[:2]) >= 12 else "2026-03-04"
    return local(f"{day} {hhmm}")


@pytest.fixture
def rule() -> PatrolRule:
    patrol = PatrolRule(SITE, config())
    patrol.on_tick(night("22:00"))  # the gateway ticks from start-up
    return patrol


def states(rule: PatrolRule, key: str = R1) -> dict[str, str]:
    [found] = [r for r in rule.rounds_state() if r["round"] == key]
    return {c["tag"]: c["state"] for c in found["checkpoints"]}


# --------------------------------------------------------------------------- rounds walked


def test_a_round_walked_in_time_raises_nothing(rule: PatrolRule) -> None:
    signals = walk(rule, ("23:35", "cp-gate"), ("23:45", "cp-hall"), ("23:55", "cp-204"), ("00:05", "cp-yard"), "01:00")
    assert signals == []
    assert states(rule) == dict.fromkeys(TAGS, "visited")


def test_a_missed_checkpoint_is_raised_when_its_window_closes(rule: PatrolRule) -> None:
    assert walk(rule, ("23:35", "cp-gate"), ("23:45", "cp-hall"), "23:59:59") == []
    [missed] = walk(rule, "00:00")
    assert (missed.rule, missed.subject, missed.action) == (CHECKPOINT, f"{R1}:cp-204", RAISE)
    assert (missed.at, missed.severity) == (night("00:00"), Severity.WARNING)
    assert missed.message == "Checkpoint cp-204 in round 23:30 of 2026-03-03 on route north missed: no tap by 00:00"
    assert missed.details["route"] == "north" and missed.details["round"] == "2026-03-03T23:30"
    assert walk(rule, ("00:05", "cp-yard"), "01:00") == []  # said once, and cp-yard was in time
    assert states(rule) == {"cp-gate": "visited", "cp-hall": "visited", "cp-204": "missed", "cp-yard": "visited"}


def test_the_next_tap_beyond_a_window_closes_it_without_a_tick(rule: PatrolRule) -> None:
    walk(rule, ("23:35", "cp-gate"), ("23:45", "cp-hall"))
    [missed] = walk(rule, ("00:05", "cp-yard"))
    assert (missed.subject, missed.at) == (f"{R1}:cp-204", night("00:00"))


def test_a_late_tap_turns_the_missed_alert_into_a_late_one(rule: PatrolRule) -> None:
    walk(rule, ("23:35", "cp-gate"), ("23:45", "cp-hall"), "00:00")
    [late] = walk(rule, ("00:04", "cp-204"))
    assert (late.action, late.severity, late.at) == (UPDATE, Severity.INFO, night("00:04"))
    assert late.details["state"] == "late" and late.details["minutes_late"] == 4
    assert late.message.endswith("tapped late at 00:04, 4 min after 00:00")
    assert walk(rule, ("00:06", "cp-yard"), "01:00") == []
    assert states(rule)["cp-204"] == "late"


def test_a_tap_out_of_order_is_flagged_on_the_checkpoint_tapped_too_early(rule: PatrolRule) -> None:
    signals = walk(rule, ("23:35", "cp-gate"), ("23:42", "cp-204"), ("23:46", "cp-hall"), ("00:05", "cp-yard"), "01:00")
    [flag] = signals
    assert (flag.subject, flag.action, flag.at, flag.severity) == (f"{R1}:cp-204", RAISE, night("23:46"), Severity.INFO)
    assert flag.details["before"] == "cp-hall"
    assert flag.message.endswith("tapped out of order, before cp-hall")


def test_a_round_not_started_is_one_alert_not_one_per_checkpoint(rule: PatrolRule) -> None:
    assert walk(rule, "23:39") == []
    [raised] = walk(rule, "23:40")
    assert (raised.rule, raised.subject, raised.action, raised.severity) == (ROUND, R1, RAISE, Severity.CRITICAL)
    assert raised.message == "Round 23:30 of 2026-03-03 on route north not started: no tap by 23:40"
    updates = walk(rule, "00:30")
    assert [(s.rule, s.action) for s in updates] == [(ROUND, UPDATE)]
    assert updates[0].details["missed"] == 4
    assert updates[0].message.endswith("4 of 4 checkpoints missed")


def test_a_round_walked_late_is_one_alert_for_the_round(rule: PatrolRule) -> None:
    """Issue 16 point 6 (this test used to pin one "late" alert per checkpoint). The guard
    starts 52 min after the first deadline (23:40 -> 00:32) and keeps the timetable from
    there: moved deadlines 23:50+52 = 00:42, 00:00+52 = 00:52, 00:10+52 = 01:02."""
    walk(rule, "00:30")  # not started since 23:40
    [update] = walk(rule, ("00:32", "cp-gate"))
    assert (update.rule, update.subject, update.action, update.severity) == (ROUND, R1, UPDATE, Severity.WARNING)
    assert update.message == (
        "Round 23:30 of 2026-03-03 on route north started late at 00:32, 52 min after its first deadline 23:40 on 2026-03-03"
    )
    assert update.details["minutes_late"] == 52
    assert walk(rule, ("00:41", "cp-hall"), ("00:52", "cp-204"), ("01:01", "cp-yard"), "01:45") == []
    assert states(rule) == dict.fromkeys(TAGS, "late")


def test_a_checkpoint_skipped_in_a_late_round_is_still_its_own_alert(rule: PatrolRule) -> None:
    """Started 52 min late (first deadline 23:40, first tap 00:32); cp-204 is skipped: its
    deadline 00:00 moved by 52 min is 00:52, and the guard taps cp-yard at 01:01 instead."""
    walk(rule, ("00:32", "cp-gate"), ("00:41", "cp-hall"))
    assert walk(rule, "00:51:59") == []
    [missed] = walk(rule, "00:52")
    assert (missed.rule, missed.subject, missed.action, missed.at) == (CHECKPOINT, f"{R1}:cp-204", RAISE, night("00:52"))
    assert missed.message == (
        "Checkpoint cp-204 in round 23:30 of 2026-03-03 on route north missed: no tap by 00:52"
        " (its deadline 00:00 + the round's 52 min delay)"
    )
    assert walk(rule, ("01:01", "cp-yard"), "01:45") == []


def test_a_checkpoint_late_beyond_its_rounds_delay_is_flagged(rule: PatrolRule) -> None:
    """Started 10 min late (cp-gate at 23:50 for 23:40): cp-hall's deadline moves to
    23:50+10 = 00:00; tapped at 00:07 it is 7 min later than that."""
    walk(rule, ("23:50", "cp-gate"), "00:06")
    [late] = walk(rule, ("00:07", "cp-hall"))
    assert (late.subject, late.action, late.severity) == (f"{R1}:cp-hall", UPDATE, Severity.INFO)
    assert late.details["minutes_late"] == 7
    assert late.message.endswith("tapped late at 00:07, 7 min after 00:00 (its deadline 23:50 on 2026-03-03 + the round's 10 min delay)")


def test_repeated_taps_of_one_tag_count_once(rule: PatrolRule) -> None:
    walk(rule, ("23:35:00", "cp-gate"), ("23:35:30", "cp-gate"), ("23:35:55", "cp-gate"), "23:36")
    assert [c["taps"] for c in rule.rounds_state()[0]["checkpoints"]][0] == 1
    walk(rule, ("23:37:00", "cp-gate"), "23:38")
    assert [c["taps"] for c in rule.rounds_state()[0]["checkpoints"]][0] == 2
    assert rule.stats["repeats"] == 2


def test_taps_outside_any_round_or_of_another_guard_are_ignored() -> None:
    rule = PatrolRule(SITE, config(guard="guard-lee"))
    rule.on_tick(night("22:00"))
    assert rule.on_event(tap(night("22:30"), "cp-gate")) == []
    assert rule.on_event(tap(night("23:35"), "cp-gate", guard="guard-kim")) == []
    assert rule.on_event(tap(night("23:35"), "cp-unknown")) == []
    assert (rule.stats["outside_rounds"], rule.stats["other_guard"], rule.stats["unknown_tag"]) == (1, 1, 1)
    [raised] = rule.on_tick(night("23:40"))
    assert raised.rule == ROUND and raised.details["guard"] == "guard-lee"


# --------------------------------------------------------------------------- guard silence


@pytest.fixture
def slow_rule() -> PatrolRule:
    """20 minutes per checkpoint: deadlines 23:50, 00:10, 00:30, 00:50; silence after 30 min."""
    patrol = PatrolRule(SITE, config(allowance_minutes=20))
    patrol.on_tick(night("22:00"))
    return patrol


def test_a_guard_silent_for_too_long_during_a_round(slow_rule: PatrolRule) -> None:
    walk(slow_rule, ("23:35", "cp-gate"), ("23:45", "cp-hall"), ("23:58", "cp-204"))
    assert walk(slow_rule, "00:27:59") == []
    [silence] = walk(slow_rule, "00:28")  # 30 min since 23:58, every deadline still ahead or met
    assert (silence.rule, silence.subject, silence.action, silence.at) == (SILENCE, R1, RAISE, night("00:28"))
    # Spoken at 00:28 on 2026-03-04, so 23:58 carries its date (issue 16 point 8).
    assert silence.message == "No tap in round 23:30 of 2026-03-03 on route north since 23:58 on 2026-03-03"
    [closed] = walk(slow_rule, ("00:40", "cp-yard"))
    assert (closed.action, closed.at, closed.details["gap_minutes"]) == (UPDATE, night("00:40"), 42)
    assert closed.message == "No tap for 42 min in round 23:30 of 2026-03-03 on route north (23:58 on 2026-03-03 to 00:40)"


def test_a_skipped_checkpoint_ends_the_wait_for_taps_at_its_deadline() -> None:
    """The guard skips cp-204 and taps the last checkpoint early. Once cp-204's deadline
    (00:00) passes nothing is outstanding: the 14 quiet minutes after 23:46 are no
    silence, though the round's last deadline (00:10) is 24 minutes after that tap."""
    rule = PatrolRule(SITE, config(max_silence_minutes=15))
    rule.on_tick(night("22:00"))
    signals = walk(rule, ("23:35", "cp-gate"), ("23:45", "cp-hall"), ("23:46", "cp-yard"), "01:30")
    assert (CHECKPOINT, f"{R1}:cp-204") in {(s.rule, s.subject) for s in signals if s.action is RAISE}
    assert of_rule(signals, SILENCE) == []


def test_a_silence_between_taps_is_flagged(slow_rule: PatrolRule) -> None:
    walk(slow_rule, ("23:35", "cp-gate"), "23:50")
    [silence] = of_rule(walk(slow_rule, ("00:05", "cp-hall")), SILENCE)
    assert (silence.action, silence.at, silence.details["gap_minutes"]) == (RAISE, night("00:05"), 30)


def test_a_silence_is_reconciled_by_a_wand_upload(slow_rule: PatrolRule) -> None:
    [silence] = walk(slow_rule, ("23:35", "cp-gate"), ("00:09", "cp-hall"))
    assert (silence.rule, silence.action, silence.details["gap_minutes"]) == (SILENCE, RAISE, 34)
    assert slow_rule.on_event(tap(night("23:48"), "cp-hall", TapSource.WAND)) == []  # staged with its upload
    [resolved] = slow_rule.on_tick(night("00:10"))
    assert (resolved.rule, resolved.action, resolved.details["note"]) == (SILENCE, RESOLVE, "reconciled from wand upload")


# --------------------------------------------------------------------------- wand uploads


def test_a_wand_upload_reconciles_missed_checkpoints_and_the_silence(rule: PatrolRule) -> None:
    walk(rule, ("23:35", "cp-gate"), ("23:45", "cp-hall"))
    raised = walk(rule, "00:00", "00:10")
    assert {(s.rule, s.subject, s.action) for s in raised} == {
        (CHECKPOINT, f"{R1}:cp-204", RAISE),
        (CHECKPOINT, f"{R1}:cp-yard", RAISE),
    }
    rule.on_tick(night("06:00"))
    assert rule.on_event(tap(night("23:55"), "cp-204", TapSource.WAND)) == []
    assert rule.on_event(tap(night("00:05"), "cp-yard", TapSource.WAND)) == []
    assert rule.on_tick(night("06:00:02")) == []  # held until the upload has settled (60 s)
    upload = rule.on_tick(night("06:01"))  # then applied as a whole
    assert {(s.rule, s.subject, s.action) for s in upload} == {
        (CHECKPOINT, f"{R1}:cp-204", RESOLVE),
        (CHECKPOINT, f"{R1}:cp-yard", RESOLVE),
    }
    cp_204 = next(s for s in upload if s.subject.endswith("cp-204"))
    assert cp_204.details["note"] == "reconciled from wand upload"
    assert cp_204.at == night("00:00")
    assert cp_204.message == (
        "Checkpoint cp-204 in round 23:30 of 2026-03-03 on route north visited at 23:55 on 2026-03-03: reconciled from wand upload"
    )
    assert states(rule) == dict.fromkeys(TAGS, "visited")


def test_a_wand_upload_shows_a_round_not_started_was_started(rule: PatrolRule) -> None:
    [raised] = walk(rule, "23:45")
    assert rule.on_event(tap(night("23:38"), "cp-gate", TapSource.WAND)) == []
    [resolved] = rule.on_tick(night("23:46"))
    assert (resolved.rule, resolved.action, resolved.at) == (ROUND, RESOLVE, night("23:40"))
    assert resolved.message == "Round 23:30 of 2026-03-03 on route north started at 23:38: reconciled from wand upload"


def test_a_wand_upload_older_than_the_keep_time_is_too_late(rule: PatrolRule) -> None:
    rule.on_tick(local("2026-03-05 01:10"))  # 24 h after the last moment a tap counted for the round
    assert rule.on_event(tap(night("23:55"), "cp-204", TapSource.WAND)) == []
    assert rule.on_tick(local("2026-03-05 01:11")) == []
    assert rule.stats["too_late"] == 1


# --------------------------------------------------------------------------- daylight saving


def test_spring_forward_round_starts_when_the_clocks_jump() -> None:
    rule = PatrolRule(SITE, config())
    rule.on_tick(utc("2026-03-28 20:00"))
    for minute, tag in zip((35, 45, 55, 65), TAGS):  # the 23:30 round (22:30 UTC), walked in time
        assert rule.on_event(tap(utc("2026-03-28 22:00") + timedelta(minutes=minute), tag)) == []
    # 02:00 on 2026-03-29 does not exist: the round starts at 03:00 CEST = 01:00 UTC.
    assert rule.on_tick(utc("2026-03-29 01:09:59")) == []
    [raised] = rule.on_tick(utc("2026-03-29 01:10"))
    assert (raised.subject, raised.at) == ("north:2026-03-29T02:00", utc("2026-03-29 01:10"))
    [state] = [r for r in rule.rounds_state() if r["round"] == "north:2026-03-29T02:00"]
    assert state["starts_at"] == "2026-03-29T01:00:00+00:00"


def test_fall_back_round_runs_once_and_counts_elapsed_time() -> None:
    rule = PatrolRule(SITE, config(rounds=["23:30"], allowance_minutes=60, max_silence_minutes=120))
    rule.on_tick(utc("2026-10-24 20:00"))
    # 23:30 CEST = 21:30 UTC; deadlines every 60 elapsed minutes: 22:30, 23:30, 00:30, 01:30 UTC.
    # The last one reads 02:30 on the clock for the second time (CET), not 03:30.
    for at, tag in (("2026-10-24 21:40", "cp-gate"), ("2026-10-24 22:40", "cp-hall"), ("2026-10-24 23:40", "cp-204")):
        assert rule.on_event(tap(utc(at), tag)) == []
    assert rule.on_tick(utc("2026-10-25 01:29:59")) == []
    [missed] = rule.on_tick(utc("2026-10-25 01:30"))
    assert (missed.subject, missed.at) == ("north:2026-10-24T23:30:cp-yard", utc("2026-10-25 01:30"))
    assert missed.message.endswith("no tap by 02:30+01:00")  # the second 02:30 of the night, said so


def test_fall_back_night_has_one_02_00_round() -> None:
    rule = PatrolRule(SITE, config(rounds=["02:00"]))
    rule.on_tick(utc("2026-10-24 20:00"))
    signals = rule.on_tick(utc("2026-10-25 03:00"))
    assert [(s.subject, s.at) for s in signals] == [("north:2026-10-25T02:00", utc("2026-10-25 00:40"))]  # 02:00 CEST + 40 min
    assert [r["starts_at"] for r in rule.rounds_state()] == ["2026-10-25T00:00:00+00:00"]


# --------------------------------------------------------------------------- state


def test_rounds_state_for_the_api(rule: PatrolRule) -> None:
    walk(rule, ("23:35", "cp-gate"), ("23:52", "cp-hall"), "00:01")
    [state] = rule.rounds_state()
    assert json.loads(json.dumps(state)) == state
    assert (state["round"], state["route"], state["date"], state["start"], state["started"]) == (R1, "north", "2026-03-03", "23:30", True)
    assert [(c["tag"], c["state"]) for c in state["checkpoints"]] == [
        ("cp-gate", "visited"), ("cp-hall", "late"), ("cp-204", "missed"), ("cp-yard", "pending"),
    ]
    assert state["checkpoints"][1]["tapped_at"] == night("23:52").isoformat()


def test_snapshot_restore_mid_round(rule: PatrolRule) -> None:
    walk(rule, ("23:35", "cp-gate"), "23:50")  # cp-hall raised
    restored = PatrolRule(SITE, config())
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    signals = walk(restored, "00:00")
    assert [(s.subject, s.action) for s in signals] == [(f"{R1}:cp-204", RAISE)]  # cp-hall not raised again
    [late] = walk(restored, ("00:02", "cp-hall"))
    assert (late.subject, late.action) == (f"{R1}:cp-hall", UPDATE)


def test_restore_refuses_an_unknown_version(rule: PatrolRule) -> None:
    with pytest.raises(ValueError, match="version"):
        rule.restore({"version": 99})


def test_engine_builds_patrol_from_config_and_exposes_rounds() -> None:
    engine = RuleEngine(SITE, RulesConfig.model_validate({"allowed_lateness_seconds": 0, "patrol": {"routes": [ROUTE]}}))
    engine.on_tick(night("22:00"))
    [signal] = engine.on_tick(night("23:40"))
    assert signal.rule == ROUND
    assert [r["round"] for r in engine.rounds_state()] == [R1]


def test_route_config_is_validated() -> None:
    with pytest.raises(ValueError, match="each tag may appear once"):
        config(checkpoints=["cp-gate", "cp-gate"])
    parsed = config(rounds=[1410, "02:00"], days="mon-fri")  # YAML 1.1 reads 23:30 as 1410
    assert [f"{t:%H:%M}" for t in parsed.routes[0].rounds] == ["23:30", "02:00"]


# --------------------------------------------------------------------------- arrival order

_any_taps = st.lists(
    st.tuples(
        st.sampled_from(TAGS),
        st.integers(min_value=0, max_value=100 * 60),  # seconds after 23:20 (round 1) or 01:50 (round 2)
        st.sampled_from([0, 1]),  # round
        st.booleans(),  # from a wand
    ),
    max_size=14,
)
def _walk(rnd: int, steps: list[tuple[bool, int, bool]]) -> list[tuple[str, int, int, bool]]:
    """A guard walking the route from 23:35 (or 02:05), a checkpoint about every 10 minutes."""
    return [(tag, 15 * 60 + 600 * i + jitter, rnd, wand) for i, (tag, (kept, jitter, wand)) in enumerate(zip(TAGS, steps)) if kept]


_step = st.tuples(st.booleans(), st.integers(min_value=-300, max_value=500), st.booleans())  # kept, jitter (s), wand
_walks = st.builds(_walk, st.sampled_from([0, 1]), st.lists(_step, min_size=4, max_size=4))
_tap_plan = st.one_of(_any_taps, _walks)


def _events(plan: list[tuple[str, int, int, bool]]) -> list[PatrolTap]:
    opens = [night("23:20"), night("01:50")]
    events = [
        tap(opens[rnd] + timedelta(seconds=s), tag, TapSource.WAND if wand else TapSource.ONLINE)
        for tag, s, rnd, wand in plan
    ]
    return sorted(events, key=lambda e: (e.event_time, e.id))


def _run(arrivals: list[tuple[datetime, Any]], lateness: timedelta, tick: timedelta | None) -> AlertBook:
    rule = PatrolRule(SITE, config(), lateness=lateness)
    rule.on_tick(night("22:00") - lateness)
    return replay(rule.on_event, rule.on_tick, arrivals, lateness, tick, night("08:00"))


@settings(max_examples=60, deadline=None)
@given(
    plan=_tap_plan,
    lateness_minutes=st.integers(min_value=1, max_value=15),
    tick_minutes=st.sampled_from([None, 1, 4]),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_any_arrival_order_within_the_lateness_gives_the_same_alerts(
    plan: list[tuple[str, int, int, bool]], lateness_minutes: int, tick_minutes: int | None, seed: int
) -> None:
    events, lateness = _events(plan), timedelta(minutes=lateness_minutes)
    tick = timedelta(minutes=tick_minutes) if tick_minutes else None
    in_order = _run([(e.event_time, e) for e in events], lateness, timedelta(minutes=1)).summary()
    assert _run(arrival_order(events, lateness, seed), lateness, tick).summary() == in_order


@settings(max_examples=40, deadline=None)
@given(plan=_tap_plan, seed=st.integers(min_value=0, max_value=10_000))
def test_wand_uploads_at_dawn_end_with_the_same_open_alerts(plan: list[tuple[str, int, int, bool]], seed: int) -> None:
    """Uploaded hours late, wand taps reconcile: what stays open is what in-time data gives."""
    events, lateness = _events(plan), timedelta(minutes=5)
    in_time = _run([(e.event_time, e) for e in events], lateness, timedelta(minutes=1))
    online = [(e.event_time, e) for e in events if e.source is TapSource.ONLINE]
    dawn = night("06:00")
    uploaded = [(dawn + timedelta(seconds=i), e) for i, e in enumerate(e for e in events if e.source is TapSource.WAND)]
    late = _run(online + uploaded, lateness, timedelta(minutes=1))
    assert late.summary()[1] == in_time.summary()[1]
