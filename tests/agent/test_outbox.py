from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

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


# --------------------------------------------------------------------------- group commit


def rows_on_disk(path: Path) -> list[str]:
    """Event ids in the file, read through a connection of our own."""
    db = sqlite3.connect(path)
    try:
        return [json.loads(body)["id"] for (body,) in db.execute("SELECT body FROM outbox ORDER BY seq")]
    finally:
        db.close()


def hold_writer(outbox: Outbox) -> threading.Event:
    """Keep the writer busy in a callback until the returned event is set."""
    release, held = threading.Event(), threading.Event()

    def block(error: Exception | None) -> None:
        held.set()
        release.wait(10)

    outbox.submit("topic", reading(-1), block)
    assert held.wait(10)
    return release


def test_events_that_arrive_during_a_commit_share_the_next_transaction(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db")
    release = hold_writer(outbox)
    stored: list[Exception | None] = []
    for n in range(50):
        outbox.submit("topic", reading(n), stored.append)
    assert outbox.transactions == 1 and stored == []  # nothing reported stored before its commit
    release.set()
    outbox.wait_written()
    assert outbox.transactions == 2  # 50 events, one transaction, one fsync
    assert stored == [None] * 50 and len(outbox) == 51
    outbox.close()


def test_a_producer_can_wait_until_the_queue_is_short(tmp_path: Path) -> None:
    """Backpressure for the MQTT device callback, which does not wait for its events: with
    no more than 3 entries left waiting, ten events queued behind a busy writer take
    several transactions."""
    outbox = Outbox(tmp_path / "q.db")
    release = hold_writer(outbox)

    def flood() -> None:
        for n in range(10):
            outbox.wait_queued_below(3)
            outbox.submit("topic", reading(n))

    producer = threading.Thread(target=flood)
    producer.start()
    release.set()
    producer.join(10)
    assert not producer.is_alive()
    outbox.wait_written()
    assert outbox.transactions >= 1 + 4  # the blocker's, then the ten in batches of at most 3
    assert len(outbox) == 11
    outbox.close()


def test_an_event_is_reported_stored_only_once_another_connection_can_read_it(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db")
    seen_at_callback: list[list[str]] = []
    event = tap(1)
    outbox.submit("topic", event, lambda error: seen_at_callback.append(rows_on_disk(outbox.path)))
    outbox.put("topic", tap(2))  # returns once stored: and so after the first one
    assert event.id in seen_at_callback[0]
    assert rows_on_disk(outbox.path)[-1] == tap(2).id
    outbox.close()


def test_a_failed_transaction_fails_all_its_events_and_the_writer_goes_on(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db")
    outbox.put("topic", tap(1))
    saboteur = sqlite3.connect(outbox.path)
    saboteur.execute("ALTER TABLE outbox RENAME TO elsewhere")  # every insert now fails
    saboteur.commit()
    outcomes: list[Exception | None] = []
    outbox.submit("topic", tap(2), outcomes.append)
    with pytest.raises(sqlite3.OperationalError):
        outbox.put("topic", tap(3))
    assert len(outcomes) == 1 and isinstance(outcomes[0], sqlite3.OperationalError)
    assert outbox.transactions == 1 and len(outbox) == 1  # nothing of it counted as stored

    saboteur.execute("ALTER TABLE elsewhere RENAME TO outbox")
    saboteur.commit()
    saboteur.close()
    outbox.put("topic", tap(4))  # the writer survived the failure
    assert rows_on_disk(outbox.path) == [tap(1).id, tap(4).id]
    outbox.close()


def test_the_cap_sheds_only_readings_inside_one_transaction(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db", max_events=3)
    outbox.put("topic", reading(1))
    release = hold_writer(outbox)  # the blocker is a reading too: 2 on disk
    for event in (tap(1), tap(2), reading(2), tap(3)):
        outbox.submit("topic", event)
    release.set()
    outbox.wait_written()
    assert outbox.transactions == 3 and outbox.dropped == 3
    assert rows_on_disk(outbox.path) == [tap(1).id, tap(2).id, tap(3).id]
    assert len(outbox) == 3
    outbox.close()


def test_a_callback_without_a_row_runs_in_turn(tmp_path: Path) -> None:
    """What lets the agent acknowledge an unusable device message without overtaking
    the acknowledgements of earlier messages still waiting for their commit."""
    outbox = Outbox(tmp_path / "q.db")
    release = hold_writer(outbox)
    order: list[str] = []
    outbox.submit("topic", tap(1), lambda error: order.append("tap 1"))
    outbox.call_in_turn(lambda error: order.append("nothing to store"))
    outbox.submit("topic", tap(2), lambda error: order.append("tap 2"))
    assert order == []
    release.set()
    outbox.wait_written()
    assert order == ["tap 1", "nothing to store", "tap 2"]
    assert len(outbox) == 3
    outbox.close()


PRODUCER = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from agent.outbox import Outbox
from warden.events import PatrolTap, stable_event_id

outbox = Outbox(Path(sys.argv[1]))
t0 = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc)

def told(event_id):
    def stored(error):
        if error is None:
            sys.stdout.write(event_id + "\\n")
            sys.stdout.flush()
    return stored

n = 0
while True:
    for _ in range(10):
        event = PatrolTap(id=stable_event_id("t", n), site="s", device="r", event_time=t0, reader="r", tag=f"cp-{n}")
        outbox.submit("topic", event, told(event.id))
        n += 1
    outbox.wait_written()
"""


def test_every_event_reported_stored_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(path)], stdout=subprocess.PIPE, text=True)
    assert producer.stdout is not None
    reported = [producer.stdout.readline().strip() for _ in range(500)]
    producer.kill()  # mid-stream: transactions under way, events queued
    producer.wait(10)
    reported += [line.strip() for line in producer.stdout]  # told before it died
    on_disk = set(rows_on_disk(path))
    assert all(event_id in on_disk for event_id in reported)
