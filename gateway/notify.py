"""Alert notifications: who hears about which alert change, and how it gets to them.

Every sink implements one small Protocol, `Sink`: a name and `send(change, key)`. Routes
decide which changes a sink receives (escalation level, severity, rule, kind of change;
docs/rules.md#notifications). The MQTT alerts topic is a sink that only enqueues in
paho, so it runs inline, at most once. Webhooks and mail can block for seconds and
their receivers go away for hours, so they are delivered at least once, durably:

- The outbox. Each change a webhook or mail sink will hear of is a row in
  `notification_outbox`, in the gateway's state.db, written by the store's transaction
  that made the change (StateStore.on_alert_changes), so a crash cannot keep the one
  without the other. The row carries the change as it was and an idempotency key.
- A thread per sink (`QueuedSink`) delivers its rows oldest first, one at a time (a
  receiver sees `opened` before `resolved`), retrying with doubling backoff until
  delivered, refused for good, or older than the sink's `expire_hours`. A row is deleted
  only once delivered, so a restart resumes where the last run stopped, with the same
  key: a receiver that keeps the keys it saw never acts twice on one change.
- Once for group bots and mail, which cannot drop a repeat (docs/scale.md, "Pages across a
  PostgreSQL restart or a takeover"): an attempt first commits a claim on its rows; right
  after the receiver took them their keys go to this machine's fsync'd receipts journal
  (`Receipts`), then the rows are deleted. A database gone between send and mark leaves the
  receipt, replayed before anything is sent again (by a standby process of this machine
  too, while it waits for the lease); a row another machine claimed waits
  `unconfirmed_wait_seconds` for that machine's receipt. Only an attempt cut short during
  the send itself can reach a receiver twice.
- Bounded: at most `queue_size` rows wait per sink besides the one being delivered; the
  oldest waiting go first, counted as dropped in the same transaction (so a retried
  batch does not count twice) and reported by the sink's thread.
- Rate-limited (a chat bot's `max_per_minute`, gateway/bots.py): past the limit the rows
  wait on disk, and what waits when a slot frees goes as one message (at most
  COALESCE_MAX changes): late, not dropped.

Secrets (webhook URL paths, headers, SMTP passwords) are never logged; sinks log only
scheme, host and port.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import smtplib
import sqlite3
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

import httpx
import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.config import AlertsConfig, DeliveryConfig, GatewayConfig, RouteConfig, SmtpSinkConfig, WebhookSinkConfig
from gateway.db import dialect, is_postgres_url, render_schema, table_columns
from gateway.delivery import DeliveryError, change_document, note_text, safe_target
from gateway.store import Alert, AlertChange, StateStore, close_thread_connections, thread_connection
from rules.alerts import AlertState, Severity
from warden import topics
from warden.i18n import N_, Message, Names, gettext_for, localise, site_names

log = logging.getLogger(__name__)

_PREFIX = "warden_gateway_"

#: At most this many waiting changes go in one message to a sink that sends several at
#: once (a chat bot under its rate limit; gateway/bots.py).
COALESCE_MAX = 10


class Sink(Protocol):
    """Somewhere alert changes go. `send` may block (blocking sinks run on their own
    thread) and raises DeliveryError when the change did not get through. `key` is the
    change's idempotency key for this sink (None on the inline MQTT topic)."""

    name: str

    def send(self, change: AlertChange, key: str | None = None) -> None: ...


def alert_payload(change: AlertChange, key: str | None = None) -> bytes:
    """The JSON every machine-facing sink sends: the kind of change, why, the alert, and
    (when delivered from the outbox) the idempotency key."""
    document = change_document(change)
    if key is not None:
        document["idempotency_key"] = key
    return json.dumps(document).encode()


def change_from_document(document: dict[str, Any]) -> AlertChange:
    """The inverse of change_document, for a change read back from the outbox."""
    known = Alert.__dataclass_fields__  # a row written by another release may differ
    alert = {name: value for name, value in document["alert"].items() if name in known}
    alert["state"] = AlertState(alert["state"])
    said = document.get("note_message")
    note = Message(said["id"], **said["params"]) if said else document["note"]
    return AlertChange(document["change"], Alert(**alert), note)


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    """Which changes one sink receives."""

    min_level: int = 0  # hears about an alert once it escalated this far
    min_severity: Severity = Severity.INFO
    rules: frozenset[str] | None = None  # None: every rule
    changes: frozenset[str] = frozenset({"opened", "updated", "acknowledged", "escalated", "resolved"})

    @classmethod
    def from_config(cls, config: RouteConfig, min_level: int = 0) -> Route:
        rules = frozenset(config.rules) if config.rules is not None else None
        return cls(min_level, Severity(config.min_severity), rules, frozenset(config.changes))

    def accepts(self, change: AlertChange) -> bool:
        alert = change.alert
        return (
            change.action in self.changes
            and alert.escalation_level >= self.min_level
            and Severity(alert.severity).rank >= Severity(self.min_severity).rank
            and (self.rules is None or alert.rule in self.rules)
        )


class Notifier:
    """Routes each alert change to its sinks; never raises into ingestion.

    Attached to a store (`attach`), the durable sinks' rows are written by the store's
    own transactions (`record`) and `notify` only wakes their threads; otherwise
    `notify` writes the rows itself, after the fact."""

    def __init__(self, routes: list[tuple[Route, Sink]], outbox: Outbox | None = None) -> None:
        self.routes = routes
        self.outbox = outbox
        self.durable = False  # True once the store writes the outbox rows in its transactions

    def attach(self, store: StateStore) -> None:
        """Have every alert change's transaction write its outbox rows."""
        store.on_alert_changes = self.record
        self.durable = True

    def record(self, db: sqlite3.Connection, changes: list[AlertChange]) -> None:
        """The store's hook, inside the transaction that made `changes`."""
        for route, sink in self.routes:
            if isinstance(sink, QueuedSink):
                accepted = [change for change in changes if route.accepts(change)]
                if accepted:
                    sink.record(db, accepted)

    def notify(self, change: AlertChange) -> None:
        for route, sink in self.routes:
            if not route.accepts(change):
                continue
            try:
                if isinstance(sink, QueuedSink) and self.durable:
                    sink.wake()  # the store's transaction already wrote the row
                else:
                    sink.send(change)
            except Exception:  # a broken sink must not stop the others, nor ingestion
                log.exception("notification sink failed", extra={"sink": sink.name, "change": change.action, "alert": change.alert.id})

    def start(self) -> None:
        for _, sink in self.routes:
            if isinstance(sink, QueuedSink):
                sink.start()

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Give the durable sinks `drain_seconds` together to deliver what is due; what
        is left stays in the outbox for the next start."""
        deadline = time.monotonic() + drain_seconds
        queued = [sink for _, sink in self.routes if isinstance(sink, QueuedSink)]
        for sink in queued:
            sink.begin_stop(deadline)
        for sink in queued:
            sink.finish_stop(deadline)
        if self.outbox is not None:
            self.outbox.close()


# --------------------------------------------------------------------------- outbox

#: Written once for SQLite and PostgreSQL (gateway/db.py render_schema).
_OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS notification_outbox (
    id {id},
    sink TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,        -- idempotency key of this change for this sink
    change TEXT NOT NULL,            -- change_document() as JSON
    created_at {real} NOT NULL,        -- wall clock, unix seconds: expiry counts from here
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {real} NOT NULL,   -- wall clock, unix seconds
    last_error TEXT,
    claimed_by TEXT,                 -- the receipts journal (machine) of an attempt under way or cut short
    claimed_at {real});
CREATE INDEX IF NOT EXISTS notification_outbox_by_sink ON notification_outbox (sink, id);
CREATE TABLE IF NOT EXISTS notification_drops (sink TEXT PRIMARY KEY, count INTEGER NOT NULL) {without_rowid};
"""

#: The tables _OUTBOX_SCHEMA makes (gateway/state_copy.py copies them).
OUTBOX_TABLES = ("notification_outbox", "notification_drops")

#: Columns added after the first release (Outbox._migrate adds them to an existing table).
_ADDED_OUTBOX_COLUMNS = {"claimed_by": "TEXT", "claimed_at": "{real}"}

#: Deletes a sink's waiting rows beyond the newest ?2, sparing its oldest (the one being
#: delivered, or next).
_PRUNE = """
DELETE FROM notification_outbox WHERE sink = ?
  AND id > (SELECT MIN(id) FROM notification_outbox WHERE sink = ?)
  AND id <= (SELECT id FROM notification_outbox WHERE sink = ? ORDER BY id DESC LIMIT 1 OFFSET ?)
"""  # unnumbered parameters (sink three times, then keep): the same text on PostgreSQL


@dataclass(frozen=True)
class Pending:
    """One outbox row: a change waiting to reach one sink."""

    id: int
    sink: str
    key: str
    change: AlertChange
    created_at: float
    attempts: int
    next_attempt_at: float
    claimed_by: str | None = None  # the receipts journal of an attempt whose outcome was never recorded
    claimed_at: float | None = None  # wall clock of that attempt, unix seconds


def _pending(row: Any, change: AlertChange) -> Pending:
    return Pending(row["id"], row["sink"], row["key"], change, row["created_at"], row["attempts"], row["next_attempt_at"],
                   row["claimed_by"], row["claimed_at"])


class Outbox:
    """Pending notifications in SQLite, beside the alerts (normally state.db itself).
    Rows are added inside the caller's transaction (`add`) or in one of its own (`put`);
    each sink's thread reads and deletes through its own connection. `now` is the wall
    clock (unix seconds): backoff and expiry are about receivers, not the site's time."""

    def __init__(self, path: Path | str, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now
        self._local = threading.local()
        self._db.executescript(render_schema(_OUTBOX_SCHEMA, dialect(self._db)))
        self._migrate()

    def _migrate(self) -> None:
        """Add the claim columns to an outbox of an earlier release; a second process doing the same at once is fine."""
        db = self._db
        kind = dialect(db)
        for name, words in _ADDED_OUTBOX_COLUMNS.items():
            if name in table_columns(db, "notification_outbox"):
                continue
            column = f"{name} {render_schema(words, kind)}"
            if kind == "postgres":
                db.execute(f"ALTER TABLE notification_outbox ADD COLUMN IF NOT EXISTS {column}")
                continue
            try:
                db.execute(f"ALTER TABLE notification_outbox ADD COLUMN {column}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise

    @property
    def _db(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)

    def add(self, db: sqlite3.Connection, sink: str, changes: list[AlertChange], keep: int) -> None:
        """Queue `changes` for `sink` in `db`'s open transaction, keeping at most `keep`
        waiting rows besides the oldest; what is pruned is tallied in the same transaction."""
        now = self.now()
        rows = [(sink, uuid.uuid4().hex, json.dumps(change_document(change)), now, now) for change in changes]
        db.executemany("INSERT INTO notification_outbox (sink, key, change, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)", rows)
        dropped = db.execute(_PRUNE, (sink, sink, sink, keep)).rowcount
        if dropped > 0:
            db.execute(
                "INSERT INTO notification_drops (sink, count) VALUES (?, ?)"
                " ON CONFLICT(sink) DO UPDATE SET count = notification_drops.count + excluded.count",
                (sink, dropped),
            )

    def put(self, sink: str, changes: list[AlertChange], keep: int) -> None:
        """`add` in a transaction of its own."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self.add(db, sink, changes, keep)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def take_drops(self, sink: str) -> int:
        """Rows pruned for `sink` since the last call (a tally kept with the prunes)."""
        db = self._db
        row = db.execute("DELETE FROM notification_drops WHERE sink = ? RETURNING count", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def head(self, sink: str) -> Pending | None:
        """The oldest row of `sink`: delivered first, so a receiver sees changes in order.
        A row that cannot be read back (written by an incompatible release) is logged and
        deleted, so it cannot hold up the rest."""
        while True:
            row = self._db.execute("SELECT * FROM notification_outbox WHERE sink = ? ORDER BY id LIMIT 1", (sink,)).fetchone()
            if row is None:
                return None
            try:
                change = change_from_document(json.loads(row["change"]))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unreadable notification discarded", extra={"sink": sink, "idempotency_key": row["key"], "error": repr(exc)})
                self.remove(row["id"])
                continue
            return _pending(row, change)

    def heads(self, sink: str, count: int) -> list[Pending]:
        """The oldest `count` rows of `sink` that are due in order: what a sink that sends
        several changes as one message (a chat bot) sends together."""
        first = self.head(sink)
        if first is None:
            return []
        rows = self._db.execute("SELECT * FROM notification_outbox WHERE sink = ? AND id > ? ORDER BY id LIMIT ?", (sink, first.id, count - 1)).fetchall()
        taken = [first]
        for row in rows:
            try:
                change = change_from_document(json.loads(row["change"]))
            except (ValueError, KeyError, TypeError):
                break  # head() discards it when it comes first
            taken.append(_pending(row, change))
        return taken

    def due_now(self, sink: str) -> None:
        """Make every row of `sink` due: a (re)start tries at once what waited for backoff."""
        now = self.now()  # the earlier of the two, in words both engines know
        self._db.execute("UPDATE notification_outbox SET next_attempt_at ="
                         " CASE WHEN next_attempt_at < ? THEN next_attempt_at ELSE ? END WHERE sink = ?", (now, now, sink))

    def remove(self, row_id: int) -> None:
        self._db.execute("DELETE FROM notification_outbox WHERE id = ?", (row_id,))

    def claim(self, row_ids: list[int], by: str) -> None:
        """Mark rows as being sent by the receipts journal `by`, committed before the send: whoever
        finds the mark later knows an attempt was made whose outcome only that journal may know."""
        marks = ", ".join("?" * len(row_ids))
        self._db.execute(f"UPDATE notification_outbox SET claimed_by = ?, claimed_at = ? WHERE id IN ({marks})",
                         (by, self.now(), *row_ids))

    def forget(self, keys: list[str]) -> int:
        """Delete the rows of these idempotency keys (delivered: a receipts journal says so); how many were left."""
        gone = 0
        for start in range(0, len(keys), 500):  # within every engine's parameter limit
            part = keys[start : start + 500]
            gone += self._db.execute(f"DELETE FROM notification_outbox WHERE key IN ({', '.join('?' * len(part))})", part).rowcount
        return gone

    def postpone(self, row_id: int, until: float, error: str) -> None:
        """A failed attempt (the receiver answered, or could not be reached): retried later, the claim settled."""
        self._db.execute(
            "UPDATE notification_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
            " claimed_by = NULL, claimed_at = NULL WHERE id = ?", (until, error, row_id)
        )

    def expire(self, sink: str, created_before: float) -> list[Pending]:
        """Delete and return the rows of `sink` created before `created_before`."""
        rows = self._db.execute(
            "DELETE FROM notification_outbox WHERE sink = ? AND created_at < ? RETURNING *", (sink, created_before),
        ).fetchall()
        return [_pending(r, change_from_document(json.loads(r["change"]))) for r in rows]

    def prune(self, sink: str, keep: int) -> int:
        """Bring `sink` within its bound (e.g. after `queue_size` was lowered); how many went."""
        return int(self._db.execute(_PRUNE, (sink, sink, sink, keep)).rowcount)

    def discard_other_sinks(self, sinks: set[str]) -> dict[str, int]:
        """Delete the rows of sinks no longer configured (nothing would deliver them);
        how many per sink."""
        rows = self._db.execute("SELECT sink, COUNT(*) FROM notification_outbox GROUP BY sink").fetchall()
        gone = {row[0]: int(row[1]) for row in rows if row[0] not in sinks}
        for sink in gone:
            self._db.execute("DELETE FROM notification_outbox WHERE sink = ?", (sink,))
        return gone

    def pending(self, sink: str | None = None) -> int:
        """Rows waiting (for `sink`, or for every sink)."""
        if sink is None:
            return int(self._db.execute("SELECT COUNT(*) FROM notification_outbox").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM notification_outbox WHERE sink = ?", (sink,)).fetchone()[0])

    def close_thread(self) -> None:
        """Close the calling thread's connection (a sink thread on its way out), and those of threads that ended."""
        close_thread_connections(self._local)

    def close(self) -> None:
        """Close the calling thread's connection; each sink thread closes its own on its
        way out (one still in a hung request keeps it until its timeout)."""
        self.close_thread()


# --------------------------------------------------------------------------- receipts

#: The first line of a receipts journal, then its identity: the `claimed_by` of its attempts.
_RECEIPTS_HEADER = b"warden-notification-receipts "

#: An idempotency key as the outbox makes them (uuid4().hex); a torn line is no key.
_KEY = re.compile(rb"[0-9a-f]{32}")


class Receipts:
    """This machine's journal of delivered notifications, fsync'd right after each send and
    replayed into the outbox (its rows deleted) before anything is sent again. It bridges the
    moment between a send and its mark in the outbox: if the database goes away then, the
    receipt says "sent" to this machine's next gateway process, holder or standby, instead
    of the row being sent again. A file of keys, one a line, under an exclusive flock (a
    holder and a standby on one machine share it); emptied once the outbox has forgotten
    them (losing an emptying only replays deletions already done)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as journal:
            journal.seek(0)
            first = journal.readline()
        self.id = first[len(_RECEIPTS_HEADER):-1].decode()
        self._header = len(first)

    @contextmanager
    def _locked(self) -> Iterator[BinaryIO]:
        """The journal, locked against this process's threads and other processes; a missing or
        torn header is written (fsync'd with its folder) first."""
        with self._lock, self.path.open("a+b") as journal:
            fcntl.flock(journal, fcntl.LOCK_EX)
            journal.seek(0)
            first = journal.readline()
            if not (first.startswith(_RECEIPTS_HEADER) and first.endswith(b"\n")):
                identity = getattr(self, "id", None) or uuid.uuid4().hex
                journal.truncate(0)
                journal.write(_RECEIPTS_HEADER + identity.encode() + b"\n")
                _sync(journal)
                _sync_folder(self.path.parent)
            yield journal

    def record(self, keys: list[str]) -> None:
        """Say durably that these keys were delivered (before anything else happens)."""
        with self._locked() as journal:
            journal.seek(0, os.SEEK_END)
            torn = journal.tell() > self._header and not _ends_with_newline(journal)
            journal.write((b"\n" if torn else b"") + "".join(f"{key}\n" for key in keys).encode())
            _sync(journal)

    def pending(self) -> bool:
        """Whether receipts wait to be replayed (a stat, no lock)."""
        try:
            return self.path.stat().st_size > self._header
        except FileNotFoundError:
            return False

    def settle(self, forget: Callable[[list[str]], int]) -> int:
        """Replay the receipts with `forget` (the outbox's deletion by key), then empty the journal;
        if `forget` raises (the database is away) they stay. Returns the rows forgotten."""
        with self._locked() as journal:
            journal.seek(self._header)
            lines = journal.read().split(b"\n")[:-1]  # complete lines only: a torn last one is no receipt
            keys = [line.decode() for line in lines if _KEY.fullmatch(line)]
            gone = forget(keys) if keys else 0
            journal.truncate(self._header)
        return gone


def _sync(journal: BinaryIO) -> None:
    journal.flush()
    os.fsync(journal.fileno())


def _sync_folder(folder: Path) -> None:
    """A new file's name is durable once its folder is synced."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _ends_with_newline(journal: BinaryIO) -> bool:
    journal.seek(-1, os.SEEK_END)
    return journal.read(1) == b"\n"


#: The journal's file name beside the gateway's other local files.
RECEIPTS_NAME = "notify-receipts.log"


def _beside(local: Path | str | None) -> Path | None:
    """The journal beside a local file (none beside a postgresql:// URL)."""
    return None if local is None or is_postgres_url(local) else Path(local).with_name(RECEIPTS_NAME)


def receipts_file(config: GatewayConfig) -> Path | None:
    """Where a gateway's receipts journal lives: `alerts.receipts_file`, else beside its
    other local files (a SQLite state_db, else the historian's file or spool); None when it has none."""
    historian = getattr(config.historian, "path", None) or getattr(config.historian, "spool_path", None)
    return config.alerts.receipts_file or _beside(config.state_db) or _beside(historian)


def replay_receipts_meanwhile(path: Path | None, state_db: Path | str, stop: threading.Event,
                              every: float = 1.0) -> threading.Thread | None:
    """A process that starts as a standby replays its machine's receipts (`path`) into the outbox in
    `state_db` as soon as the database answers, so the holder (perhaps on another machine, which cannot
    read them) finds those rows gone instead of sending them again after `unconfirmed_wait_seconds`.
    Gives up at `stop`."""
    if path is None or not path.exists():
        return None
    receipts = Receipts(path)
    if not receipts.pending():
        return None

    def replay() -> None:
        while not stop.is_set():
            outbox = None
            try:
                outbox = Outbox(state_db)
                gone = receipts.settle(outbox.forget)
            except Exception as exc:  # the database still away: try again
                log.debug("receipts not replayed yet", extra={"error": type(exc).__name__})
                stop.wait(every)
                continue
            finally:
                if outbox is not None:
                    outbox.close()
            log.info("notification receipts replayed", extra={"receipts": str(path), "forgotten": gone})
            return

    thread = threading.Thread(target=replay, name="notify-receipts", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- dispatch


class NotifyMetrics:
    """Delivery counters by sink, in the gateway's registry (served at /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(f"{_PREFIX}notifications_sent", "Notifications delivered, by sink", ["sink"], registry=registry)
        self.failed = Counter(f"{_PREFIX}notifications_failed", "Notifications refused for good by the receiver "
                              "(or past `retries`), by sink", ["sink"], registry=registry)
        self.expired = Counter(f"{_PREFIX}notifications_expired", "Notifications not delivered within the sink's "
                               "expire_hours, by sink", ["sink"], registry=registry)
        self.dropped = Counter(f"{_PREFIX}notifications_dropped", "Waiting notifications pruned: the sink's "
                               "queue_size was reached", ["sink"], registry=registry)
        self.retries = Counter(f"{_PREFIX}notification_retries", "Delivery attempts retried, by sink", ["sink"], registry=registry)
        self.unconfirmed = Counter(f"{_PREFIX}notifications_unconfirmed", "Notifications sent again after an attempt "
                                   "whose outcome was never recorded (cut short during the send): possibly a repeat",
                                   ["sink"], registry=registry)  # fmt: skip
        self.pending = Gauge(f"{_PREFIX}notifications_pending", "Notifications waiting in the outbox, by sink", ["sink"], registry=registry)


#: After an unexpected error reading or writing the outbox (e.g. disk full), the thread
#: tries again after this long.
_OUTBOX_ERROR_PAUSE_S = 5.0

#: How often a row another machine claimed is looked at again while its receipt may still come.
_CLAIM_POLL_S = 1.0


class QueuedSink:
    """Delivers one blocking sink's outbox rows on a thread of its own: oldest first, with
    doubling backoff, until delivered, refused for good or expired. `send` and `record`
    only write a row (never block on the receiver)."""

    def __init__(self, sink: Sink, delivery: DeliveryConfig, metrics: NotifyMetrics, outbox: Outbox,
                 receipts: Receipts | None = None, unconfirmed_wait: float = 60.0) -> None:
        """`receipts`: this machine's journal (None: no claims, no receipts: at least once); `unconfirmed_wait`:
        seconds a row another machine claimed waits for that machine's receipt (a sink that deduplicates
        by key does not wait)."""
        self.sink = sink
        self.receipts = receipts
        self.unconfirmed_wait = unconfirmed_wait
        self.deduplicates = bool(getattr(sink, "deduplicates", False))
        self.name = sink.name
        self.delivery = delivery
        self.metrics = metrics
        self.outbox = outbox
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = 0.0  # monotonic: stop delivering after it, once stopping
        self._sent_at: deque[float] = deque()  # outbox clock of each attempt in the last minute (sinks with per_minute)
        self._thread = threading.Thread(target=self._run, name=f"notify-{sink.name}", daemon=True)

    def record(self, db: sqlite3.Connection, changes: list[AlertChange]) -> None:
        """Queue `changes` inside the caller's transaction (the store's hook)."""
        self.outbox.add(db, self.name, changes, self.delivery.queue_size)

    def send(self, change: AlertChange) -> None:
        """Queue one change in a transaction of its own and wake the thread."""
        self.outbox.put(self.name, [change], self.delivery.queue_size)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        """Deliver what an earlier run left in the outbox at once, then what comes."""
        self.outbox.due_now(self.name)
        self._thread.start()

    def stop(self, drain_seconds: float = 5.0) -> None:
        deadline = time.monotonic() + drain_seconds
        self.begin_stop(deadline)
        self.finish_stop(deadline)

    def begin_stop(self, deadline: float) -> None:
        """Deliver what is due, and retries whose backoff ends, until `deadline` (monotonic)."""
        self._deadline = deadline
        self._stopping.set()
        self._wake.set()

    def finish_stop(self, deadline: float) -> None:
        """Wait for the thread (a second past the deadline for an attempt under way; a
        request still hanging then is left to its timeout, its row to the next start)."""
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        close = getattr(self.sink, "close", None)
        if close is not None and not self._thread.is_alive():
            close()

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                try:
                    wait = self._step()
                except Exception:
                    log.exception("notification outbox failed; retrying", extra={"sink": self.name, "retry_in_s": _OUTBOX_ERROR_PAUSE_S})
                    wait = _OUTBOX_ERROR_PAUSE_S
                if self._stopping.is_set():
                    left = self._deadline - time.monotonic()
                    if wait is None or wait >= left:
                        return  # what is left waits in the outbox for the next start
                if wait is None:
                    self._wake.wait()
                elif wait > 0:
                    self._wake.wait(wait)
        finally:
            self.outbox.close_thread()

    def _step(self) -> float | None:
        """Expire, prune, and try the oldest row if it is due. Returns how long to wait
        before the next step (0: at once), or None when nothing waits."""
        if self.receipts is not None and self.receipts.pending():
            self._settle()  # before anything is sent again; raises while the database is away
        now = self.outbox.now()
        expire_after = self.delivery.expire_hours * 3600
        for gone in self.outbox.expire(self.name, now - expire_after):
            self.metrics.expired.labels(self.name).inc()
            log.warning("notification expired", extra={
                "sink": self.name, "alert": gone.change.alert.id, "change": gone.change.action,
                "idempotency_key": gone.key, "attempts": gone.attempts, "expire_hours": self.delivery.expire_hours})  # fmt: skip
        dropped = self.outbox.take_drops(self.name) + self.outbox.prune(self.name, self.delivery.queue_size)
        if dropped:
            self.metrics.dropped.labels(self.name).inc(dropped)
            log.warning("notifications dropped", extra={"sink": self.name, "count": dropped, "reason": "queue full", "queue_size": self.delivery.queue_size})
        self.metrics.pending.labels(self.name).set(self.outbox.pending(self.name))
        head = self.outbox.head(self.name)
        if head is None:
            return None
        if head.next_attempt_at > now:
            return min(head.next_attempt_at, head.created_at + expire_after) - now
        held = self._claim_wait(head, now)
        if held > 0:
            return held
        wait = self._rate_wait(now)
        if wait > 0:
            return wait  # the rows wait on disk; what gathers meanwhile goes as one message
        send_many = getattr(self.sink, "send_many", None)
        batch = self.outbox.heads(self.name, COALESCE_MAX) if send_many is not None else [head]
        batch = batch[: next((i for i, p in enumerate(batch) if p.next_attempt_at > now or (i and self._foreign(p))), len(batch))]
        together = getattr(self.sink, "together", None)  # a bot's message speaks one language (gateway/bots.py)
        batch = batch[: together([p.change for p in batch])] if together is not None else batch
        if len(batch) > 1:
            self._attempt_many(batch, now)
        else:
            self._attempt(head, now)
        return 0.0

    def _settle(self) -> None:
        assert self.receipts is not None
        gone = self.receipts.settle(self.outbox.forget)
        if gone:
            log.info("notifications marked delivered from the local receipts", extra={"sink": self.name, "count": gone})

    def _foreign(self, pending: Pending) -> bool:
        """Claimed by another machine's journal: its receipt, if any, is on that machine."""
        return self.receipts is not None and pending.claimed_by is not None and pending.claimed_by != self.receipts.id

    def _claim_wait(self, head: Pending, now: float) -> float:
        """Seconds to leave a row another machine claimed, for that machine's next process to replay
        its receipt (deleting the row); 0 once `unconfirmed_wait` has passed, or at once for a sink
        whose receiver drops a repeated key."""
        if self.deduplicates or not self._foreign(head):
            return 0.0
        left = (head.claimed_at or 0.0) + self.unconfirmed_wait - now
        return min(left, _CLAIM_POLL_S) if left > 0 else 0.0

    def _claim(self, batch: list[Pending]) -> None:
        """Commit the claim before the send (no database: no send). A row claimed before and
        still here had an attempt cut short whose outcome nobody recorded: sent again, said so."""
        if self.receipts is None:
            return
        for pending in batch:
            if pending.claimed_by is not None:
                self.metrics.unconfirmed.labels(self.name).inc()
                log.warning("notification sent again: an earlier attempt was cut short, possibly delivered", extra={
                    "sink": self.name, "idempotency_key": pending.key, "claimed_by": pending.claimed_by,
                    "deduplicates": self.deduplicates})  # fmt: skip
        self.outbox.claim([p.id for p in batch], self.receipts.id)

    def _delivered(self, batch: list[Pending]) -> None:
        """The receiver took `batch`: the receipt first (fsync'd), then the outbox forgets the rows.
        Without the database the receipt waits, replayed before anything is sent again."""
        self.metrics.sent.labels(self.name).inc(len(batch))
        if self.receipts is None:
            for pending in batch:
                self.outbox.remove(pending.id)
            return
        self.receipts.record([p.key for p in batch])
        try:
            self.receipts.settle(self.outbox.forget)
        except Exception as exc:
            log.warning("notification delivered; the outbox is told once the database answers (local receipt kept)",
                        extra={"sink": self.name, "count": len(batch), "error": type(exc).__name__})  # fmt: skip

    def _rate_wait(self, now: float) -> float:
        """Seconds until the sink may send again under its `per_minute` limit (0: now);
        counts this attempt when it may."""
        limit = getattr(self.sink, "per_minute", None)
        if not limit:
            return 0.0
        while self._sent_at and self._sent_at[0] <= now - 60.0:
            self._sent_at.popleft()
        if len(self._sent_at) >= limit:
            return self._sent_at[0] + 60.0 - now
        self._sent_at.append(now)
        return 0.0

    def _attempt_many(self, batch: list[Pending], now: float) -> None:
        """Several waiting changes as one message (a chat bot's rate limit); delivered,
        failed or retried together."""
        self._claim(batch)
        try:
            self.sink.send_many([p.change for p in batch], batch[0].key)  # type: ignore[attr-defined]
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # as in _attempt
            log.debug("notification sink raised", exc_info=True, extra={"sink": self.name})
            error = DeliveryError(type(exc).__name__, retryable=False)
        else:
            log.info("notifications sent together", extra={"sink": self.name, "count": len(batch)})
            self._delivered(batch)
            return
        attempts = max(p.attempts for p in batch) + 1
        retries = self.delivery.retries
        if not error.retryable or (retries is not None and attempts > retries):
            for pending in batch:
                self.outbox.remove(pending.id)
            self.metrics.failed.labels(self.name).inc(len(batch))
            log.warning("notifications failed", extra={"sink": self.name, "count": len(batch), "error": error.reason, "attempts": attempts})
            return
        delay = min(self.delivery.backoff_seconds * 2 ** (attempts - 1), self.delivery.max_backoff_seconds)
        for pending in batch:
            self.outbox.postpone(pending.id, now + delay, error.reason)
        self.metrics.retries.labels(self.name).inc()
        log.info("notification retry", extra={"sink": self.name, "count": len(batch), "attempt": attempts, "error": error.reason, "retry_in_s": delay})

    def _attempt(self, pending: Pending, now: float) -> None:
        change = pending.change
        self._claim([pending])
        try:
            self.sink.send(change, pending.key)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a bug or an unforeseen library error: do not retry blindly
            # The traceback only at debug level: a library's message may quote a secret URL.
            log.debug("notification sink raised", exc_info=True, extra={"sink": self.name})
            error = DeliveryError(type(exc).__name__, retryable=False)
        else:
            self._delivered([pending])
            return
        attempts = pending.attempts + 1
        retries = self.delivery.retries
        if not error.retryable or (retries is not None and attempts > retries):
            self.outbox.remove(pending.id)
            self.metrics.failed.labels(self.name).inc()
            log.warning("notification failed", extra={
                "sink": self.name, "alert": change.alert.id, "change": change.action, "error": error.reason,
                "idempotency_key": pending.key, "attempts": attempts})  # fmt: skip
            return
        delay = min(self.delivery.backoff_seconds * 2 ** (attempts - 1), self.delivery.max_backoff_seconds)
        self.outbox.postpone(pending.id, now + delay, error.reason)
        self.metrics.retries.labels(self.name).inc()
        log.info("notification retry", extra={
            "sink": self.name, "alert": change.alert.id, "attempt": attempts, "error": error.reason, "retry_in_s": delay})  # fmt: skip


# --------------------------------------------------------------------------- sinks


class MqttSink:
    """The alerts topic of the alert's site (QoS 1); paho queues, so this never blocks."""

    name = "mqtt"

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client

    def send(self, change: AlertChange, key: str | None = None) -> None:
        self.client.publish(topics.alerts_topic(change.alert.site), alert_payload(change, key), qos=1)


class WebhookSink:
    """POSTs the change as JSON. 5xx, 429 and connection errors are worth a retry; other
    answers are final. The idempotency key goes in the body and as `Idempotency-Key` (and
    `X-Warden-Delivery`, as before): the same on every attempt for one change, also after
    a restart, so a receiver can drop a repeat (a timeout after it had stored the first)."""

    #: Its receiver is told the key and drops a repeat: a row whose attempt was cut short goes again at once.
    deduplicates = True

    def __init__(self, name: str, config: WebhookSinkConfig) -> None:
        self.name = name
        self.config = config
        self.target = safe_target(config.url)
        self.per_minute = config.max_per_minute  # QueuedSink keeps to it; the rows wait on disk meanwhile
        self._client = httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)

    def send(self, change: AlertChange, key: str | None = None) -> None:
        self.post(alert_payload(change, key), key)

    def post(self, body: bytes, key: str | None = None) -> None:
        """POST a JSON body (an alert change, or a report: gateway/report_schedule.py)."""
        delivery = key if key is not None else hashlib.sha256(body).hexdigest()[:32]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "warden-gateway",
            "Idempotency-Key": delivery,
            "X-Warden-Delivery": delivery,
            **self.config.headers,
        }
        try:
            response = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TransportError as exc:  # str(exc) may quote the URL: name the class only
            raise DeliveryError(type(exc).__name__, retryable=True) from None
        if response.is_success:
            return
        status = response.status_code
        raise DeliveryError(f"HTTP {status}", retryable=status >= 500 or status == 429)

    def close(self) -> None:
        self._client.close()


class SmtpSink:
    """A plain-text mail per change, through an SMTP relay (STARTTLS or implicit TLS)."""

    def __init__(self, name: str, config: SmtpSinkConfig, locale: str = "en", names: Names | None = None,
                 voices: Voices | None = None) -> None:
        """`locale`, `names`: the site's, so the people on duty read the mail in their language, by names;
        `voices`: each site's, on a gateway of several sites (issue 21)."""
        self.name = name
        self.config = config
        self.target = f"smtp://{config.host}:{config.port}"
        self.locale, self.names = locale, names
        self.voices = voices

    def send(self, change: AlertChange, key: str | None = None) -> None:
        self.deliver(self.message(change, key))

    def deliver(self, mail: EmailMessage) -> None:
        """Send a prepared mail (an alert change's, or a report: gateway/report_schedule.py)."""
        try:
            with self._connect() as smtp:
                if self.config.username is not None and self.config.password is not None:
                    smtp.login(self.config.username, self.config.password)
                smtp.send_message(mail)
        except smtplib.SMTPResponseException as exc:  # 4xx: try later; 5xx: refused for good
            raise DeliveryError(f"SMTP {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise DeliveryError(f"SMTP recipients refused {codes}", retryable=all(400 <= c < 500 for c in codes)) from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, TLS failed, disconnected
            raise DeliveryError(type(exc).__name__, retryable=True) from None

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        if config.tls == "implicit":
            return smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_seconds, context=self._tls())
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
        if config.tls == "starttls":
            try:
                smtp.starttls(context=self._tls())
            except BaseException:
                smtp.close()
                raise
        return smtp

    def _tls(self) -> ssl.SSLContext:
        cafile = str(self.config.tls_ca_file) if self.config.tls_ca_file else None
        return ssl.create_default_context(cafile=cafile)

    def message(self, change: AlertChange, key: str | None = None) -> EmailMessage:
        """The mail; with `key`, its Message-ID is derived from it, the same on every
        attempt, so a mail system that drops repeated ids delivers a change once."""
        mail = EmailMessage()
        if key is not None:
            mail["Message-ID"] = f"<{key}@warden>"
        mail["From"] = self.config.sender
        mail["To"] = ", ".join(self.config.to)
        locale, names = self.voices(change.alert.site) if self.voices is not None else (self.locale, self.names)
        mail["Subject"] = mail_subject(change, self.config.subject_prefix, locale, names)
        mail.set_content(mail_body(change, locale, names))
        return mail


#: Change kinds as a mail names them (translated there).
_CHANGE_WORDS = (N_("opened"), N_("updated"), N_("acknowledged"), N_("escalated"), N_("resolved"))


def mail_subject(change: AlertChange, prefix: str = "", locale: str = "en", names: Names | None = None) -> str:
    """English keeps the codes integrators filter on; another locale leads with the message, by names."""
    alert = change.alert
    if locale.split("-")[0] == "en":
        return f"{prefix} {alert.severity.upper()} {change.action}: {alert.rule} {alert.subject} ({alert.site})".strip()
    _ = gettext_for(locale)
    text = localise(alert.message, alert.message_id, alert.params, locale, names)
    return f"{prefix} [{_(alert.severity)}] {_(change.action)}: {text}".strip()


def mail_body(change: AlertChange, locale: str = "en", names: Names | None = None) -> str:
    """What a person needs to act without opening the dashboard, in the site's locale."""
    alert = change.alert
    _ = gettext_for(locale)
    ending = alert.end_message and localise(alert.end_message, alert.end_message_id, alert.end_params, locale, names)
    lines = [
        localise(alert.message, alert.message_id, alert.params, locale, names),
        *([ending] if ending and ending != alert.message else []),
        "",
        _("Change:     {action}").format(action=_(change.action)) + (f" - {note_text(change, locale, names)}" if change.note else ""),
        _("Alert:      #{id} {rule} / {subject} at {site}").format(
            id=alert.id, rule=alert.rule, subject=alert.subject, site=alert.site),
        _("State:      {state}, severity {severity}, escalation level {level}").format(
            state=_(str(alert.state)), severity=_(alert.severity), level=alert.escalation_level),
        _("Opened:     {at} (event time), {count} occurrence(s)").format(at=alert.opened_at, count=alert.count),
    ]
    if alert.acknowledged_by:
        lines.append(_("Owner:      {who} since {at}").format(who=alert.acknowledged_by, at=alert.acknowledged_at))
    if alert.resolved_at:
        lines.append(_("Resolved:   {at}").format(at=alert.resolved_at))
    if alert.details:
        lines += ["", _("Details:"), *(f"  {key}: {value}" for key, value in sorted(alert.details.items()))]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- assembly

#: A site's language and display names, by site id: what people read an alert in.
Voices = Callable[[str], tuple[str, Names | None]]


def site_voices(sites: list[Any]) -> Voices:
    """Each site's locale and names; a site not served speaks as the first one."""
    by_site = {site.id: (site.locale, site_names(site)) for site in sites}
    first = by_site[sites[0].id]
    return lambda site_id: by_site.get(site_id, first)



def build_notifier(
    config: AlertsConfig, client: mqtt.Client, registry: CollectorRegistry, store: StateStore, site: Any = None,
    receipts: Path | None = None,
) -> Notifier:
    """The MQTT alerts topic (unless disabled) and every configured sink, each routed; the
    webhook and mail sinks deliver from an outbox in `store`'s database, whose rows the
    store's transactions write with the changes. `site`: a site, or a list of the sites
    served, each alert then told in its own site's language and names. `receipts`: this
    machine's receipts journal (receipts_file); default `config.receipts_file`, else beside a
    SQLite `store`; none: at least once, a page cut off from its mark sent again."""
    sites = site if isinstance(site, list) else None
    voices = site_voices(sites) if sites and len(sites) > 1 else None
    site = sites[0] if sites else site
    routes: list[tuple[Route, Sink]] = []
    if config.mqtt.enabled:
        routes.append((Route.from_config(config.mqtt), MqttSink(client)))
    metrics = NotifyMetrics(registry)
    outbox = Outbox(store.path)
    receipts = receipts or config.receipts_file or _beside(store.path)
    journal = Receipts(receipts) if receipts is not None and config.sinks else None
    for gone, count in outbox.discard_other_sinks(set(config.sinks)).items():
        log.warning("notifications discarded: their sink is no longer configured", extra={"sink": gone, "count": count})
    from gateway import bots  # here: gateway.bots builds on this module's DeliveryError

    for name, sink_config in config.sinks.items():
        sink: WebhookSink | SmtpSink | bots.BotSink
        locale, names = getattr(site, "locale", "en"), site_names(site) if site is not None else None
        if isinstance(sink_config, WebhookSinkConfig):
            sink = (bots.BotSink(name, sink_config, locale=locale, names=names, voices=voices)
                    if bots.is_bot(sink_config) else WebhookSink(name, sink_config))
        else:
            sink = SmtpSink(name, sink_config, locale, names, voices)
        level = config.sink_level(name)
        queued = QueuedSink(sink, sink_config, metrics, outbox, journal, config.unconfirmed_wait_seconds)
        routes.append((Route.from_config(sink_config, level), queued))
        log.info("notification sink", extra={"sink": name, "type": sink_config.type, "target": sink.target, "from_level": level,
                                             "expire_hours": sink_config.expire_hours, "waiting": outbox.pending(name)})  # fmt: skip
    notifier = Notifier(routes, outbox)
    notifier.attach(store)
    return notifier
