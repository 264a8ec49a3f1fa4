"""StateStore against a real SQLite file: the seen event ids stay bounded, and files of
earlier releases are brought up to date."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway.store import StateStore
from warden.clock import ManualClock

T0 = datetime(2026, 11, 17, 20, 0, tzinfo=timezone.utc)
WINDOW = timedelta(days=14)


def test_event_ids_are_remembered_between_half_the_window_and_the_window(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    store = StateStore(tmp_path / "state.db", clock=clock)
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


def test_the_generations_survive_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    store = StateStore(tmp_path / "state.db", clock=clock)
    store.forget_old_event_ids(WINDOW)
    store.commit_batch(["a"], [], {})
    store.close()
    clock.advance(WINDOW / 2)
    reopened = StateStore(tmp_path / "state.db", clock=clock)
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


def test_a_batch_past_sqlites_parameter_limit_is_checked_and_marked(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", clock=ManualClock(T0))
    ids = [f"evt-{n:06d}" for n in range(5000)]  # past SQLite's 999/32766 bound-parameter limits
    try:
        store.commit_batch(ids[::2], [], {})
        assert store.unseen(ids) == set(ids[1::2])
        assert store.unseen([]) == set()
    finally:
        store.close()
