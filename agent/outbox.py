"""Store-and-forward: every event is written to disk before it is published, and
deleted only after the broker acknowledged it (QoS 1 PUBACK).

The queue is SQLite in WAL mode with synchronous=FULL, so an event that `put()`
returned for survives `kill -9` and power loss. When the queue is full, the oldest
*readings* are dropped (and counted); alarms, door events and patrol taps never are.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from warden.events import Event, Reading, DeviceStatus

log = logging.getLogger(__name__)

LOW, HIGH = 0, 1


def priority_of(event: Event) -> int:
    """Readings and heartbeats may be shed under pressure; everything else may not."""
    return LOW if isinstance(event, (Reading, DeviceStatus)) else HIGH


@dataclass(frozen=True)
class QueuedEvent:
    seq: int
    topic: str
    body: str  # the event as JSON


class Outbox:
    def __init__(self, path: Path, max_events: int = 1_000_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.dropped = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " body TEXT NOT NULL, priority INTEGER NOT NULL)"
        )
        self._count = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def put(self, topic: str, event: Event) -> None:
        body = event.model_dump_json(exclude_none=True)
        with self._lock:
            if self._count >= self.max_events:
                self._shed_one_reading()
            self._db.execute(
                "INSERT INTO outbox (topic, body, priority) VALUES (?, ?, ?)",
                (topic, body, priority_of(event)),
            )
            self._count += 1

    def _shed_one_reading(self) -> None:
        cursor = self._db.execute(
            "DELETE FROM outbox WHERE seq = (SELECT MIN(seq) FROM outbox WHERE priority = ?)", (LOW,)
        )
        if cursor.rowcount:
            self._count -= 1
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("outbox full: dropping oldest readings", extra={"dropped": self.dropped, "cap": self.max_events})
        else:
            log.warning("outbox full of alarms and taps; keeping them over the cap", extra={"cap": self.max_events})

    def peek(self, after_seq: int, limit: int) -> list[QueuedEvent]:
        """The oldest events queued after `after_seq`, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [QueuedEvent(*row) for row in rows]

    def remove(self, seqs: list[int]) -> None:
        """Delete acknowledged rows in one transaction: one disk sync, not one per row."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                cursor = self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._count -= cursor.rowcount

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            self._db.close()
