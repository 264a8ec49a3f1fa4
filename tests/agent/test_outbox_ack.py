"""The outbox keeps each row's event id, which the gateway's acknowledgement names."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from agent.outbox import Outbox
from warden.events import Reading, stable_event_id

T0 = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc)


def reading(n: int) -> Reading:
    return Reading(id=stable_event_id("outbox-ack", n), site="s", device="m", event_time=T0, quantity="power", value=n, unit="W")


def test_rows_carry_their_event_id(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db")
    outbox.put("topic", reading(1))
    [row] = outbox.peek(0, 10)
    outbox.close()
    assert row.event_id == stable_event_id("outbox-ack", 1)


def test_a_file_written_before_acknowledgements_is_read_with_its_ids(tmp_path: Path) -> None:
    """An agent upgraded with events still queued: the old table has no event_id column."""
    path = tmp_path / "q.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
               " body TEXT NOT NULL, priority INTEGER NOT NULL)")  # fmt: skip
    db.execute("INSERT INTO outbox (topic, body, priority) VALUES (?, ?, 0)", ("topic", reading(7).model_dump_json()))
    db.commit()
    db.close()

    outbox = Outbox(path)
    outbox.put("topic", reading(8))
    rows = outbox.peek(0, 10)
    outbox.close()
    assert [r.event_id for r in rows] == [stable_event_id("outbox-ack", 7), stable_event_id("outbox-ack", 8)]
