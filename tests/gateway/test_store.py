"""StateStore against a real SQLite file and a real PostgreSQL database (the `state_db`
fixture runs each test once per engine): the seen event ids stay bounded, alerts go
through their lifecycle, rule state and dead letters are kept, and SQLite files of
earlier releases are brought up to date."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.store import AlertStateConflict, DeadLetter, DeadLetterConfig, Escalation, StateStore
from rules.alerts import AlertSignal, AlertState, SignalAction
from tests.support.state_db import state_db  # noqa: F401  (the fixture: once per engine)
from warden.clock import ManualClock
from warden.i18n import Message

T0 = datetime(2026, 11, 17, 20, 0, tzinfo=timezone.utc)
WINDOW = timedelta(days=14)


def test_event_ids_are_remembered_between_half_the_window_and_the_window(state_db: str | Path) -> None:
    clock = ManualClock(T0)
    store = StateStore(state_db, clock=clock)
    try:
        assert store.forget_old_event_ids(WINDOW) is False  # starts the first generation
        store.commit_batch(["old-1", "old-2"], [], {})
        clock.advance(WINDOW / 2 - timedelta(minutes=1))
        assert store.forget_old_event_ids(WINDOW) is False  # not half a window yet
        clock.advance(timedelta(minutes=1))
        assert store.forget_old_event_ids(WINDOW) is True  # the first generation becomes the previous
        store.commit_batch(["new-1"], [], {})
        assert store.unseen(["old-1", "new-1", "never"]) == {"never"}  # both generations answer
        clock.advance(WINDOW / 2)
        assert store.forget_old_event_ids(WINDOW) is True  # the oldest generation is dropped
        assert store.unseen(["old-1", "old-2", "new-1"]) == {"old-1", "old-2"}
        assert store.count("seen_events") == 0 and store.count("seen_events_previous") == 1
    finally:
        store.close()


def test_the_generations_survive_a_restart(state_db: str | Path) -> None:
    clock = ManualClock(T0)
    store = StateStore(state_db, clock=clock)
    store.forget_old_event_ids(WINDOW)
    store.commit_batch(["a"], [], {})
    store.close()
    clock.advance(WINDOW / 2)
    reopened = StateStore(state_db, clock=clock)
    try:
        assert reopened.forget_old_event_ids(WINDOW) is True  # the generation's start was kept on disk
        assert reopened.unseen(["a"]) == set()
    finally:
        reopened.close()


def test_seen_ids_of_an_older_file_keep_working_without_their_arrival_time(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:  # seen ids as earlier releases kept them
        for table in ("seen_events", "seen_events_previous"):
            db.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, received_at TEXT NOT NULL) WITHOUT ROWID")
        db.execute("INSERT INTO seen_events VALUES ('kept-1', '2026-11-17T20:00:00+00:00')")
    store = StateStore(path, clock=ManualClock(T0))
    try:
        store.commit_batch(["new-1", "kept-1"], [], {})
        assert store.unseen(["kept-1", "new-1", "never"]) == {"never"}
        assert store.count("seen_events") == 2
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert [row[1] for row in db.execute("PRAGMA table_info(seen_events)")] == ["id"]


def test_a_batch_past_sqlites_parameter_limit_is_checked_and_marked(state_db: str | Path) -> None:
    store = StateStore(state_db, clock=ManualClock(T0))
    ids = [f"evt-{n:06d}" for n in range(5000)]  # past SQLite's 999/32766 bound-parameter limits
    try:
        store.commit_batch(ids[::2], [], {})
        assert store.unseen(ids) == set(ids[1::2])
        assert store.unseen([]) == set()
    finally:
        store.close()


def leak(action: SignalAction, at: datetime, litres: int, **details: float | str) -> AlertSignal:
    return AlertSignal(site="campus", rule="leak", subject="A-101", action=action, at=at,
                       message=Message("water flowing for {minutes} min", minutes=litres // 10),
                       details={"litres": litres, **details})


def test_an_alert_goes_through_its_lifecycle_once_per_key(state_db: str | Path) -> None:
    clock = ManualClock(T0)
    store = StateStore(state_db, clock=clock)
    try:
        opened = store.commit_batch(["e1"], [leak(SignalAction.RAISE, T0, 40)], None)
        assert [c.action for c in opened] == ["opened"] and opened[0].alert.id == 1  # the first row of a fresh database
        again = store.commit_batch(["e2"], [leak(SignalAction.RAISE, T0 + timedelta(minutes=5), 90)], None)
        assert [c.action for c in again] == ["updated"]
        live = store.alerts_live()
        assert [(a.id, a.count, a.details, a.params) for a in live] == [(1, 2, {"litres": 90}, {"minutes": 9})]  # 2 raises; 90 // 10
        clock.advance(timedelta(minutes=7))
        acked = store.acknowledge(1, "caretaker", note="on my way")
        assert (acked.alert.state, acked.alert.acknowledged_by, acked.alert.acknowledged_at) == (
            AlertState.ACKNOWLEDGED, "caretaker", (T0 + timedelta(minutes=7)).isoformat())
        with pytest.raises(AlertStateConflict):
            store.acknowledge(1, "caretaker")
        ended = store.commit_batch(["e3"], [leak(SignalAction.RESOLVE, T0 + timedelta(minutes=20), 150, closed="valve")], None)
        assert [c.action for c in ended] == ["resolved"]
        alert = store.alert(1)
        assert alert is not None and alert.state is AlertState.RESOLVED
        assert alert.details == {"litres": 150, "closed": "valve"}  # the ending's facts merged over the raised ones
        assert [h["action"] for h in store.alert_history(1)] == ["opened", "acknowledged", "resolved"]  # updates are not history
        reopened = store.commit_batch(["e4"], [leak(SignalAction.RAISE, T0 + timedelta(hours=1), 10)], None)
        assert reopened[0].alert.id == 2  # a new alert: the resolved one is not live any more
        assert store.count("alerts") == 2 and len(store.alerts(site="campus", state="resolved")) == 1
    finally:
        store.close()


def test_an_escalation_level_fires_once(state_db: str | Path) -> None:
    store = StateStore(state_db, clock=ManualClock(T0))
    try:
        store.commit_batch(["e1"], [leak(SignalAction.RAISE, T0, 40)], None)
        step = Escalation("not_acknowledged", Message("not acknowledged after {minutes} min", minutes=15))
        first = store.escalate(lambda alert: step if alert.escalation_level == 0 else None)
        second = store.escalate(lambda alert: step if alert.escalation_level == 0 else None)
        assert [c.alert.escalation_level for c in first] == [1] and second == []
    finally:
        store.close()


def test_rule_state_is_a_snapshot_plus_the_journal_since(state_db: str | Path) -> None:
    store = StateStore(state_db, clock=ManualClock(T0))
    try:
        store.commit_batch(["e1"], [], {"leak": {"A-101": 3}})
        store.commit_batch(["e2"], [], None, journal_entry=b"\x00batch-2")
        store.commit_batch(["e3"], [], None, journal_entry=b"batch-3\xff")
        assert store.rule_snapshot() == {"leak": {"A-101": 3}}
        assert store.rule_journal() == [b"\x00batch-2", b"batch-3\xff"]  # bytes kept as bytes, in order
        store.commit_batch(["e4"], [], {"leak": {}}, historian_position="42")
        assert (store.rule_snapshot(), store.rule_journal(), store.historian_position()) == ({"leak": {}}, [], "42")
    finally:
        store.close()


def test_dead_letters_are_kept_within_their_count(state_db: str | Path) -> None:
    store = StateStore(state_db, clock=ManualClock(T0), dead_letters=DeadLetterConfig(max_count=3))
    pruned: list[int] = []
    store.on_dead_letters_pruned = pruned.append
    try:
        letters = [DeadLetter(f"warden/v1/campus/a{n}/events", bytes([n, 0, 255]), "not json", "invalid_json") for n in range(5)]
        store.commit_batch([], [], None, dead_letters=letters)
        kept = store.dead_letters()
        assert [d["payload"] for d in kept] == [bytes([4, 0, 255]), bytes([3, 0, 255]), bytes([2, 0, 255])]  # 5 - 3 oldest go
        assert pruned == [2] and kept[0]["size"] == 3
    finally:
        store.close()


def test_a_failed_batch_leaves_nothing(state_db: str | Path) -> None:
    store = StateStore(state_db, clock=ManualClock(T0))

    def fail(_db: object) -> None:
        raise RuntimeError("the batch's statistics failed")

    try:
        with pytest.raises(RuntimeError):
            store.commit_batch(["e1"], [leak(SignalAction.RAISE, T0, 40)], {"leak": 1}, also=fail)
        assert store.unseen(["e1"]) == {"e1"} and store.count("alerts") == 0 and store.rule_snapshot() == {}
    finally:
        store.close()


def test_a_refused_payload_with_nul_characters_is_kept(state_db: str | Path) -> None:
    store = StateStore(state_db, clock=ManualClock(T0))
    try:
        reason = "events.0.device: 'a\x00b' is not an identifier"  # a reason quoting the payload it refuses
        store.commit_batch([], [], None, dead_letters=[DeadLetter("warden/v1/campus/a1/events", b"a\x00b", reason, "invalid")])
        [kept] = store.dead_letters()
        assert kept["payload"] == b"a\x00b"  # the payload bytes as they came
        on_postgres = isinstance(state_db, str)
        assert kept["reason"] == (reason.replace("\x00", "\\x00") if on_postgres else reason)  # PostgreSQL text holds no NUL
    finally:
        store.close()
