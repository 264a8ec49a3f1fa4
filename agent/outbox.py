"""Store-and-forward: every event is written to disk before it is published, and
deleted only once the gateway confirmed it took it in (agent/uplink.py; with end-to-end
acknowledgement off, once the broker acknowledged it).

The queue is SQLite in WAL mode with synchronous=FULL, so an event that `put()`
returned for (or whose `submit()` callback reported it stored) survives `kill -9` and
power loss. When the queue is full, the oldest *readings* are dropped (and counted);
alarms, door events and patrol taps never are.

Group commit: one writer thread owns the inserts. It takes everything submitted since
its last transaction and writes it in one transaction, so events that arrive while a
commit (an fsync) is running share the next one. There is no timer: an event submitted
while the writer is idle is committed at once, and under load the batch grows by itself
to what arrived during one fsync. An event counts as stored only once its transaction
committed; a failed transaction fails every event in it. Producers that do not wait for
each event bound what they leave waiting (`wait_written`, `wait_queued_below`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from warden.events import DeviceStatus, Event, Reading

log = logging.getLogger(__name__)

LOW, HIGH = 0, 1

#: Told once an event's transaction ended: None when it committed, else the error.
Stored = Callable[[Exception | None], None]


def priority_of(event: Event) -> int:
    """Readings and heartbeats may be shed under pressure; everything else may not."""
    return LOW if isinstance(event, (Reading, DeviceStatus)) else HIGH


@dataclass(frozen=True)
class QueuedEvent:
    seq: int
    topic: str
    body: str  # the event as JSON
    event_id: str  # what the gateway's acknowledgement names (warden/acks.py)


@dataclass(frozen=True, slots=True)
class _Submitted:
    topic: str
    body: str | None  # None: no row, only a callback to run in turn
    event_id: str
    priority: int
    on_stored: Stored | None


class Outbox:
    def __init__(self, path: Path, max_events: int = 1_000_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.dropped = 0
        self.transactions = 0  # insert transactions committed (health, and lets tests see grouping)
        #: Called by the writer after each commit, e.g. to wake the uplink publisher.
        self.on_commit: Callable[[], None] | None = None
        self._db_lock = threading.Lock()  # the connection
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " body TEXT NOT NULL, priority INTEGER NOT NULL, event_id TEXT)"
        )
        if "event_id" not in {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}:
            self._db.execute("ALTER TABLE outbox ADD COLUMN event_id TEXT")  # a file from before acks: ids read from bodies
        self._count = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self._queue = threading.Condition()  # everything below, _count, dropped and transactions
        self._pending: deque[_Submitted] = deque()
        self._submitted = 0  # entries ever submitted; an entry's number is its ticket
        self._written = 0  # tickets whose transaction has ended (committed or failed)
        self._queued_rows = 0  # events submitted and not yet written
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name="agent-outbox-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ producers

    def submit(self, topic: str, event: Event, on_stored: Stored | None = None) -> int:
        """Queue an event for the next transaction without waiting; return its ticket.

        `on_stored` runs on the writer thread once the transaction ended; only then may
        anyone be told the event is stored (e.g. an MQTT PUBACK to the device). It must
        not submit."""
        body = event.model_dump_json(exclude_none=True)
        return self._enqueue(_Submitted(topic, body, event.id, priority_of(event), on_stored))

    def call_in_turn(self, callback: Stored) -> None:
        """Run `callback` on the writer thread once everything submitted before it was
        written, in turn with their `on_stored`: e.g. acknowledge a device message that
        had nothing to store without overtaking earlier ones (PUBACKs must keep order)."""
        self._enqueue(_Submitted("", None, "", LOW, callback))

    def _enqueue(self, entry: _Submitted) -> int:
        with self._queue:
            if self._closing:
                raise sqlite3.ProgrammingError("the outbox is closed")
            self._pending.append(entry)
            self._submitted += 1
            self._queued_rows += int(entry.body is not None)
            self._queue.notify_all()
            return self._submitted

    def put(self, topic: str, event: Event) -> None:
        """Store an event; it is on disk when this returns, or this raises why not."""
        outcome: list[Exception | None] = []
        self.wait_written(self.submit(topic, event, outcome.append))
        if outcome[0] is not None:
            raise outcome[0]

    def wait_written(self, ticket: int | None = None) -> None:
        """Block until the transaction holding `ticket` ended (default: everything
        submitted so far). Failures are reported to `on_stored` and logged, not here."""
        with self._queue:
            target = self._submitted if ticket is None else ticket
            self._queue.wait_for(lambda: self._written >= target)

    def wait_queued_below(self, limit: int) -> None:
        """Block until fewer than `limit` entries wait for the disk: backpressure for a
        producer that does not wait for its own events."""
        with self._queue:
            self._queue.wait_for(lambda: self._closing or self._submitted - self._written < limit)

    # ------------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        while batch := self._next_batch():
            rows = [entry for entry in batch if entry.body is not None]
            shed, error = self._write(rows)
            with self._queue:
                if error is None and rows:
                    self._count += len(rows) - shed
                    self.dropped += shed
                    self.transactions += 1
                self._queued_rows -= len(rows)
            self._tell(batch, error)
            with self._queue:  # only now may put() return for these tickets
                self._written += len(batch)
                self._queue.notify_all()
            if error is None and rows and self.on_commit is not None:
                self.on_commit()

    def _next_batch(self) -> list[_Submitted]:
        """Everything submitted since the last transaction; empty once closed."""
        with self._queue:
            self._queue.wait_for(lambda: self._pending or self._closing)
            batch = list(self._pending)
            self._pending.clear()
            return batch

    def _write(self, batch: list[_Submitted]) -> tuple[int, Exception | None]:
        """One transaction for the whole batch, one fsync: (readings shed, error)."""
        if not batch:
            return 0, None
        with self._db_lock:
            with self._queue:
                count, shed = self._count, 0  # rows on disk; stable: remove() needs _db_lock
            try:
                self._db.execute("BEGIN")
                for entry in batch:
                    if count >= self.max_events and self._shed_one_reading(self.dropped + shed + 1):
                        count, shed = count - 1, shed + 1
                    self._db.execute(
                        "INSERT INTO outbox (topic, body, priority, event_id) VALUES (?, ?, ?, ?)",
                        (entry.topic, entry.body, entry.priority, entry.event_id),
                    )
                    count += 1
                self._db.execute("COMMIT")
            except Exception as exc:  # disk full, I/O error...: nothing of this batch is stored
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                log.error("outbox: cannot store %d events (%s)", len(batch), exc, extra={"events": len(batch), "error": str(exc)})
                return 0, exc
        return shed, None

    def _shed_one_reading(self, nth: int) -> bool:
        """Delete the oldest reading or heartbeat, if any; `nth` counts sheds since start."""
        cursor = self._db.execute(
            "DELETE FROM outbox WHERE seq = (SELECT MIN(seq) FROM outbox WHERE priority = ?)", (LOW,)
        )
        if not cursor.rowcount:
            log.warning("outbox full of alarms and taps; keeping them over the cap", extra={"cap": self.max_events})
            return False
        if nth == 1 or nth % 1000 == 0:
            log.warning("outbox full: dropping oldest readings", extra={"dropped": nth, "cap": self.max_events})
        return True

    def _tell(self, batch: list[_Submitted], error: Exception | None) -> None:
        for entry in batch:
            if entry.on_stored is None:
                continue
            try:
                entry.on_stored(error)
            except Exception:  # a listener's bug must not stop the writer
                log.exception("outbox: on_stored callback failed")

    # ------------------------------------------------------------------ consumer

    def peek(self, after_seq: int, limit: int) -> list[QueuedEvent]:
        """The oldest events queued after `after_seq`, in order."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT seq, topic, body, event_id FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [QueuedEvent(seq, topic, body, event_id or json.loads(body)["id"]) for seq, topic, body, event_id in rows]

    def remove(self, seqs: list[int]) -> None:
        """Delete acknowledged rows in one transaction: one disk sync, not one per row."""
        with self._db_lock:
            self._db.execute("BEGIN")
            try:
                cursor = self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            with self._queue:
                self._count -= cursor.rowcount

    def __len__(self) -> int:
        """Events on disk plus those submitted and not yet written."""
        with self._queue:
            return self._count + self._queued_rows

    def close(self) -> None:
        """Store what was submitted, then close the file."""
        with self._queue:
            self._closing = True
            self._queue.notify_all()
        self._writer.join()
        with self._db_lock:
            self._db.close()
