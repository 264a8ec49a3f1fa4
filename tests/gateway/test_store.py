"""StateStore against a real SQLite file: the seen event ids stay bounded."""

from __future__ import annotations

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
