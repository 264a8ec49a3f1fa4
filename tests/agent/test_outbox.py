from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from agent.outbox import Outbox
from warden.events import PatrolTap, Reading, stable_event_id

T0 = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc)


def reading(n: int) -> Reading:
    return Reading(id=stable_event_id("r", n), site="s", device="m", event_time=T0, quantity="power", value=n, unit="W")


def tap(n: int) -> PatrolTap:
    return PatrolTap(id=stable_event_id("t", n), site="s", device="r", event_time=T0, reader="r", tag=f"cp-{n}")


def test_events_survive_reopening_the_file_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db")
    for n in range(5):
        outbox.put("topic", reading(n))
    outbox.close()  # as after a crash: nothing but the file remains

    reopened = Outbox(tmp_path / "q.db")
    rows = reopened.peek(after_seq=0, limit=10)
    assert len(reopened) == 5
    assert [Reading.model_validate_json(r.body).value for r in rows] == [0, 1, 2, 3, 4]


def test_remove_deletes_only_acknowledged_rows(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db")
    for n in range(4):
        outbox.put("topic", reading(n))
    rows = outbox.peek(0, 10)
    outbox.remove([rows[0].seq, rows[2].seq])
    assert len(outbox) == 2
    assert [r.seq for r in outbox.peek(0, 10)] == [rows[1].seq, rows[3].seq]
    assert [r.seq for r in outbox.peek(rows[1].seq, 10)] == [rows[3].seq]


def test_full_outbox_sheds_oldest_readings_but_never_taps(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db", max_events=3)
    outbox.put("topic", tap(1))
    outbox.put("topic", reading(1))
    outbox.put("topic", reading(2))
    outbox.put("topic", tap(2))  # full: reading 1 goes
    outbox.put("topic", tap(3))  # full: reading 2 goes
    outbox.put("topic", tap(4))  # full of taps: kept over the cap

    kinds = [PatrolTap.model_validate_json(r.body).tag for r in outbox.peek(0, 10)]
    assert kinds == ["cp-1", "cp-2", "cp-3", "cp-4"]
    assert outbox.dropped == 2
