"""The gateway's durable state: alerts and their history, events already seen,
dead letters and the rule engine's state. SQLite in WAL mode.

One batch of ingested events is committed in one transaction (seen ids, alert changes,
rule state), so after `kill -9` the store is as it was after the last whole batch,
and the broker redelivers the rest (they were not acknowledged yet).

The database is a SQLite file (a path, the default) or PostgreSQL (a `postgresql://`
URL): gateway/db.py gives both one connection surface; the SQL that differs is kept here
per engine (`_SQL`).

The rule state is a snapshot plus a journal: a batch commits either a new snapshot of
every rule (which empties the journal) or just its own inputs, appended to the journal.
A snapshot grows with the site (4 MB for 10 000 devices), a journal entry only with the
batch, so the gateway snapshots every few seconds and journals in between; the rules
are rebuilt by replaying the journal onto the snapshot (gateway/service.py).
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import Field

from gateway import db as engines
from gateway.db import Connection, Dialect
from rules.alerts import AlertChangeKind, AlertSignal, AlertState, SignalAction
from warden.clock import Clock
from warden.config import StrictModel
from warden.i18n import N_, Message

#: Written once for both engines (gateway/db.py render_schema fills the type words).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_events (id TEXT PRIMARY KEY) {without_rowid};  -- one b-tree, not two
CREATE TABLE IF NOT EXISTS seen_events_previous (id TEXT PRIMARY KEY) {without_rowid};
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id {id}, received_at TEXT NOT NULL,
    topic TEXT NOT NULL, payload {blob} NOT NULL, size INTEGER NOT NULL, reason TEXT NOT NULL,
    code TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS alerts (
    id {id},
    site TEXT NOT NULL, rule TEXT NOT NULL, subject TEXT NOT NULL,
    state TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL,
    details TEXT NOT NULL, count INTEGER NOT NULL,
    opened_at TEXT NOT NULL, updated_at TEXT NOT NULL, resolved_at TEXT,
    acknowledged_by TEXT, acknowledged_at TEXT, note TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_alert_per_key
    ON alerts (site, rule, subject) WHERE state != 'resolved';
CREATE TABLE IF NOT EXISTS alert_history (
    id {id}, alert_id {int} NOT NULL REFERENCES alerts(id),
    at TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rule_state (id INTEGER PRIMARY KEY CHECK (id = 1), snapshot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rule_journal (batch {rowid}, entry {blob} NOT NULL);
"""

#: The tables _SCHEMA makes, parents before children (gateway/state_copy.py copies them in this order).
TABLES = ("store_meta", "seen_events", "seen_events_previous", "dead_letters", "alerts", "alert_history",
          "rule_state", "rule_journal")

#: The statements that differ between the engines, by engine then purpose.
_SQL: dict[Dialect, dict[str, str]] = {
    "sqlite": {
        # which of a batch's ids (a JSON array) were seen before, as a JSON array
        "seen_among": """
SELECT json_group_array(batch.value) FROM json_each(?) AS batch
WHERE EXISTS (SELECT 1 FROM seen_events WHERE id = batch.value)
   OR EXISTS (SELECT 1 FROM seen_events_previous WHERE id = batch.value)
""",
        "mark_seen": "INSERT OR IGNORE INTO seen_events (id) SELECT value FROM json_each(?)",
        "new_generation": "CREATE TABLE seen_events (id TEXT PRIMARY KEY) WITHOUT ROWID",
        "kept_bytes": "MIN(size, ?)",
        "merge_details": "json_patch(details, ?)",
    },
    "postgres": {
        "seen_among": """
SELECT coalesce(json_agg(batch.value), '[]')::text FROM jsonb_array_elements_text(?::jsonb) AS batch(value)
WHERE EXISTS (SELECT 1 FROM seen_events WHERE id = batch.value)
   OR EXISTS (SELECT 1 FROM seen_events_previous WHERE id = batch.value)
""",
        "mark_seen": "INSERT INTO seen_events (id) SELECT value FROM jsonb_array_elements_text(?::jsonb) AS value"
                     " ON CONFLICT DO NOTHING",
        # the renamed table keeps its primary key's name, which the new one needs
        "new_generation": "ALTER TABLE seen_events_previous RENAME CONSTRAINT seen_events_pkey"
                          " TO seen_events_previous_pkey; CREATE TABLE seen_events (id TEXT PRIMARY KEY)",
        "kept_bytes": "LEAST(size, ?)",
        # a shallow merge: rules' details are flat (json_patch's nested merge is never needed)
        "merge_details": "(details::jsonb || ?::jsonb)::text",
    },
}

#: Columns added after the first release; _migrate adds them to an existing database.
#: raised_at is the gateway's clock when the alert opened (opened_at is event time).
_ADDED_ALERT_COLUMNS = {
    "escalation_level": "INTEGER NOT NULL DEFAULT 0",
    "escalated_at": "TEXT",
    "raised_at": "TEXT",
    "assigned_to": "TEXT",  # issue 18: the person an alert is for, named by a dispatcher
    "assigned_at": "TEXT",
    # issue 19: the message as an id and parameters (warden/i18n.py), and how the alert ended kept beside
    # the facts it was raised with instead of over them
    "message_id": "TEXT NOT NULL DEFAULT ''",
    "params": "TEXT NOT NULL DEFAULT '{}'",
    "end_message": "TEXT",
    "end_message_id": "TEXT",
    "end_params": "TEXT",
}

#: alert_history columns added for issue 19: each step's message as an id and parameters.
_ADDED_HISTORY_COLUMNS = {
    "message_id": "TEXT NOT NULL DEFAULT ''",
    "params": "TEXT NOT NULL DEFAULT '{}'",
}


#: What a person's action says in the alert's history: msgids (warden/locales), by action and whether a note came.
_PERSON_SAID = {
    ("acknowledged", False): N_("acknowledged by {who}"), ("acknowledged", True): N_("acknowledged by {who}: {note}"),
    ("resolved", False): N_("resolved by {who}"), ("resolved", True): N_("resolved by {who}: {note}"),
    ("assigned", False): N_("assigned to {to} by {who}"), ("assigned", True): N_("assigned to {to} by {who}: {note}"),
}


class DeadLetterConfig(StrictModel):
    """Bounds of the refused messages kept for inspection; past either the oldest go
    (counted as warden_gateway_dead_letters_pruned), so a flood cannot fill the disk."""

    max_count: int = Field(default=10_000, ge=1, description="Dead letters kept at most")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024, description="Payload bytes kept at most, over all dead letters")


class AlertNotFound(LookupError):
    pass


class AlertStateConflict(ValueError):
    """The alert is not in a state that allows the action (e.g. acknowledging a resolved one)."""


@dataclass(frozen=True)
class Alert:
    id: int
    site: str
    rule: str
    subject: str
    state: AlertState
    severity: str
    message: str
    details: dict[str, Any]
    count: int
    opened_at: str
    updated_at: str
    resolved_at: str | None
    acknowledged_by: str | None
    acknowledged_at: str | None
    note: str | None
    escalation_level: int = 0  # 0: with the first responders; +1 per escalation
    escalated_at: str | None = None  # gateway clock
    raised_at: str | None = None  # gateway clock at opening; None in rows older than the column
    assigned_to: str | None = None  # the person named to deal with it (issue 18)
    assigned_at: str | None = None  # gateway clock
    message_id: str = ""  # `message` as a msgid and parameters, to show it in any locale (warden.i18n.render)
    params: dict[str, Any] = field(default_factory=dict)
    end_message: str | None = None  # how the rule said it ended (the facts above stay as raised/updated)
    end_message_id: str | None = None
    end_params: dict[str, Any] | None = None


#: A refused payload is kept up to this size (its full size is recorded), so a flood of
#: oversized garbage cannot fill the disk.
DEAD_LETTER_KEEP_BYTES = 64 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """A message the gateway refused, kept (its first DEAD_LETTER_KEEP_BYTES) with the
    reason and its code, within the store's dead-letter bounds."""

    topic: str
    payload: bytes
    reason: str
    code: str  # category for metrics, see warden.events.InvalidPayload


@dataclass(frozen=True)
class AlertChange:
    """What applying a signal, a person or an escalation did, for notifications."""

    action: AlertChangeKind
    alert: Alert
    note: str = ""  # the history entry's message, e.g. why it escalated (a Message where one made it)


@dataclass(frozen=True)
class Escalation:
    """A decision to move a live alert one level up (gateway/escalation.py decides)."""

    reason: str  # "not_acknowledged" or "not_resolved"
    message: Message  # kept as its id and parameters, shown in the reader's language


#: The connections opened through each `local` (weak keys: a store dropped drops its entry), with the thread
#: that owns each, so ended threads' connections are closed promptly (close_thread_connections). Left to
#: themselves they close only when the garbage collector finds them (sqlite3's statement cache is a reference
#: cycle), and while any other connection to the same file is open SQLite keeps even a closed connection's
#: descriptor (POSIX locks are per process, closing it would drop the others' locks): one connection left
#: open kept every API thread's descriptor for that file.
_opened: weakref.WeakKeyDictionary[threading.local, list[tuple[threading.Thread, Connection]]] = weakref.WeakKeyDictionary()
_opened_lock = threading.Lock()


def thread_connection(local: threading.local, path: str | Path) -> Connection:
    """This thread's connection to `path` (a file: WAL, synchronous=FULL; or a postgresql:// URL;
    autocommit), opened on first use. Opening one closes those of threads that have ended since (see _opened)."""
    db = getattr(local, "db", None)
    if db is None:
        db = engines.connect(path)
        local.db = db
        with _opened_lock:
            owned = _opened.setdefault(local, [])
            ended = [conn for thread, conn in owned if not thread.is_alive()]
            owned[:] = [(thread, conn) for thread, conn in owned if thread.is_alive()]
            owned.append((threading.current_thread(), db))
        for old in ended:
            old.close()
    return db


def close_thread_connections(local: threading.local) -> None:
    """Close the calling thread's connection through `local` and those of threads that have ended; live
    threads close their own (a sink thread on its way out) or are closed once they end."""
    me = threading.current_thread()
    with _opened_lock:
        owned = _opened.get(local, [])
        closing = [conn for thread, conn in owned if thread is me or not thread.is_alive()]
        owned[:] = [(thread, conn) for thread, conn in owned if thread is not me and thread.is_alive()]
    local.db = None
    for conn in closing:
        conn.close()


class StateStore:
    def __init__(self, path: Path | str, clock: Clock | None = None, dead_letters: DeadLetterConfig | None = None) -> None:
        """`path`: the SQLite file, or a postgresql:// URL. `clock`: the gateway's, for times people and
        escalation act on (default: wall clock). `dead_letters`: how many refused messages, and how many of
        their bytes, are kept."""
        self.kind: Dialect = "postgres" if engines.is_postgres_url(path) else "sqlite"
        if self.kind == "sqlite":
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._sql = _SQL[self.kind]
        self.clock = clock
        self.dead_letter_limits = dead_letters or DeadLetterConfig()
        #: Called with the number of dead letters a committed batch pruned (for metrics).
        self.on_dead_letters_pruned: Callable[[int], None] | None = None
        #: Called inside each transaction that changed alerts, with its connection and the
        #: changes, so what they cause commits with them (gateway/notify.py's outbox).
        self.on_alert_changes: Callable[[Connection, list[AlertChange]], None] | None = None
        self._local = threading.local()
        self._db.executescript(engines.render_schema(_SCHEMA, self.kind))
        _migrate(self._db)

    def _clock_now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(timezone.utc)

    @property
    def _db(self) -> Connection:
        """One connection per thread: the ingest worker writes while the API reads."""
        return thread_connection(self._local, self.path)

    # ------------------------------------------------------------------ ingestion

    def unseen(self, ids: Iterable[str]) -> set[str]:
        """The ids not seen before. One statement for the whole batch (see _bulk)."""
        ids = list(ids)
        row = self._db.execute(self._sql["seen_among"], (_bulk(ids),)).fetchone()
        return set(ids).difference(json.loads(row[0]))

    def forget_old_event_ids(self, window: timedelta) -> bool:
        """Keep the seen ids from growing forever: ids are kept in two generations, and
        when the current one is `window / 2` old the previous one is dropped, so an id is
        remembered for between half the window and the window. Cheap (a table dropped,
        not rows scanned); True if it rotated."""
        now = self._clock_now()
        db = self._db
        with _transaction(db):
            row = db.execute("SELECT value FROM store_meta WHERE key = 'seen_events_since'").fetchone()
            if row is not None and now - datetime.fromisoformat(row[0]) < window / 2:
                return False
            if row is not None:
                db.execute("DROP TABLE seen_events_previous")
                db.execute("ALTER TABLE seen_events RENAME TO seen_events_previous")
                db.execute(self._sql["new_generation"])
            _set_meta(db, "seen_events_since", now.isoformat())
        return row is not None

    def commit_batch(
        self,
        event_ids: Iterable[str],
        signals: Iterable[AlertSignal],
        rule_snapshot: dict[str, Any] | None,
        dead_letters: Iterable[DeadLetter] = (),
        journal_entry: bytes | None = None,
        historian_position: str | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> list[AlertChange]:
        """Mark events seen, keep refused messages, apply alert signals and save rule
        state, all or nothing. The rule state is either `rule_snapshot` (all rules after
        this batch; the journal is emptied) or `journal_entry` (this batch's inputs,
        appended to the journal), never both. `historian_position`: where the history
        ended after this batch's events were written (see historian_position())."""
        if rule_snapshot is not None and journal_entry is not None:
            raise ValueError("a batch commits a rule snapshot or a journal entry, not both")
        now = self._clock_now().isoformat()
        db = self._db
        changes: list[AlertChange] = []
        letters = [(now, d.topic, d.payload[:DEAD_LETTER_KEEP_BYTES], len(d.payload), d.reason, d.code) for d in dead_letters]
        if letters and self.kind == "postgres":  # its text cannot hold NUL, which a refused payload may put in a reason
            letters = [(at, _no_nul(topic), payload, size, _no_nul(reason), _no_nul(code))
                       for at, topic, payload, size, reason, code in letters]
        pruned = 0
        with _transaction(db):
            db.execute(self._sql["mark_seen"], (_bulk(list(event_ids)),))
            if letters:
                db.executemany("INSERT INTO dead_letters (received_at, topic, payload, size, reason, code) VALUES (?, ?, ?, ?, ?, ?)", letters)
                pruned = self._prune_dead_letters(db)
            for signal in signals:
                change = self._apply(db, signal)
                if change is not None:
                    changes.append(change)
            self._changed(db, changes)
            if rule_snapshot is not None:
                db.execute(
                    "INSERT INTO rule_state (id, snapshot) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot",
                    (json.dumps(rule_snapshot),),
                )
                db.execute("DELETE FROM rule_journal")
            elif journal_entry is not None:
                db.execute("INSERT INTO rule_journal (entry) VALUES (?)", (journal_entry,))
            if historian_position is not None:
                _set_meta(db, "historian_position", historian_position)
            if also is not None:  # e.g. the batch's statistics (gateway/statistics.py): counted once, with its ids
                also(db)
        if pruned and self.on_dead_letters_pruned is not None:
            self.on_dead_letters_pruned(pruned)
        return changes

    def _prune_dead_letters(self, db: Connection) -> int:
        """Drop the oldest dead letters beyond the count and the kept-bytes bound; how many.
        Kept bytes come from the `size` column (min(size, DEAD_LETTER_KEEP_BYTES)), so no
        payload is read."""
        limits = self.dead_letter_limits
        cut = db.execute(
            f"SELECT id FROM (SELECT id, ROW_NUMBER() OVER newest AS n, SUM({self._sql['kept_bytes']}) OVER newest AS kept"
            " FROM dead_letters WINDOW newest AS (ORDER BY id DESC)) AS ranked"
            " WHERE n > ? OR kept > ? ORDER BY id DESC LIMIT 1",
            (DEAD_LETTER_KEEP_BYTES, limits.max_count, limits.max_bytes),
        ).fetchone()
        if cut is None:
            return 0
        return db.execute("DELETE FROM dead_letters WHERE id <= ?", (cut[0],)).rowcount

    def historian_position(self) -> str | None:
        """The historian's position as of the last committed batch: anything written
        after it belongs to a batch that was never committed (nor acknowledged)."""
        row = self._db.execute("SELECT value FROM store_meta WHERE key = 'historian_position'").fetchone()
        return str(row[0]) if row else None

    def rule_snapshot(self) -> dict[str, Any]:
        row = self._db.execute("SELECT snapshot FROM rule_state WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else {}

    def rule_journal(self) -> list[bytes | str]:
        """The batches committed since the last snapshot, oldest first (str: an entry of
        an earlier release, see gateway/rule_inputs.py)."""
        return [row[0] for row in self._db.execute("SELECT entry FROM rule_journal ORDER BY batch")]

    # ------------------------------------------------------------------ alert lifecycle

    def _apply(self, db: Connection, signal: AlertSignal) -> AlertChange | None:
        live = db.execute(
            "SELECT id, severity FROM alerts WHERE site = ? AND rule = ? AND subject = ? AND state != 'resolved'", signal.key
        ).fetchone()
        at = signal.at.astimezone(timezone.utc).isoformat()
        details = json.dumps(signal.details, sort_keys=True)
        said = (signal.message_id, json.dumps(signal.params, sort_keys=True, ensure_ascii=False))
        if signal.action is SignalAction.RAISE and live is None:
            alert_id = db.execute(
                "INSERT INTO alerts (site, rule, subject, state, severity, message, details, count, opened_at, updated_at,"
                " raised_at,"
                " message_id, params) VALUES (?, ?, ?, 'open', ?, ?, ?, 1, ?, ?, ?, ?, ?) RETURNING id",
                (*signal.key, signal.severity, signal.message, details, at, at, self._clock_now().isoformat(), *said),
            ).fetchone()[0]
            return self._record(db, alert_id, at, "opened", signal.message, details, said)
        if live is None:
            return None  # an update or resolve for an alert that is not open: nothing to do
        alert_id = live["id"]
        if signal.action is SignalAction.RESOLVE:
            # The message stays what the alert said (the burst, the litres); the ending goes beside it, and the
            # ending's details are added to the facts (final totals win) rather than replacing them.
            db.execute(
                "UPDATE alerts SET state = 'resolved', end_message = ?, end_message_id = ?, end_params = ?,"
                f" details = {self._sql['merge_details']}, updated_at = ?, resolved_at = ? WHERE id = ?",
                (signal.message, *said, details, at, at, alert_id),
            )
            return self._record(db, alert_id, at, "resolved", signal.message, details, said)
        db.execute(
            "UPDATE alerts SET message = ?, message_id = ?, params = ?, details = ?, updated_at = ?, severity = ?,"
            " count = count + ? WHERE id = ?",
            (signal.message, *said, details, at, signal.severity, int(signal.action is SignalAction.RAISE), alert_id),
        )  # the rule's latest judgement: escalation moves who is told, never the severity
        return AlertChange(action="updated", alert=self._alert(db, alert_id))

    def acknowledge(self, alert_id: int, by: str, note: str | None = None, at: datetime | None = None) -> AlertChange:
        """A person takes ownership of an open alert (first-responder ownership)."""
        return self._person_action(alert_id, "acknowledged", by, note, at)

    def resolve(self, alert_id: int, by: str, note: str | None = None, at: datetime | None = None) -> AlertChange:
        """A person closes an alert, e.g. after a repair; the note says what was done."""
        return self._person_action(alert_id, "resolved", by, note, at)

    def assign(self, alert_id: int, to: str, by: str, note: str | None = None, at: datetime | None = None) -> AlertChange:
        """Name the person a live alert is for (a dispatcher's decision, kept in its history);
        acknowledging stays theirs to do. The change's action is `assigned`."""
        when = self._stamp(at)
        db = self._db
        with _transaction(db):
            _live_state(db, alert_id)
            db.execute("UPDATE alerts SET assigned_to = ?, assigned_at = ? WHERE id = ?", (to, when, alert_id))
            return self._person_said(db, alert_id, when, "assigned", by, note, {"by": by, "to": to}, to=to)

    def _person_action(self, alert_id: int, action: str, by: str, note: str | None, at: datetime | None) -> AlertChange:
        when = self._stamp(at)
        db = self._db
        with _transaction(db):
            if _live_state(db, alert_id) == action:
                raise AlertStateConflict(f"alert {alert_id} is already {action}")
            if action == "acknowledged":
                db.execute(
                    "UPDATE alerts SET state = 'acknowledged', acknowledged_by = ?, acknowledged_at = ?, note = COALESCE(?, note), updated_at = ? WHERE id = ?",
                    (by, when, note, when, alert_id),
                )
            else:
                db.execute(
                    "UPDATE alerts SET state = 'resolved', resolved_at = ?, note = COALESCE(?, note), updated_at = ? WHERE id = ?",
                    (when, note, when, alert_id),
                )
            return self._person_said(db, alert_id, when, action, by, note, {"by": by})

    def _person_said(self, db: Connection, alert_id: int, when: str, action: str, by: str, note: str | None,
                     details: dict[str, str], **more: str) -> AlertChange:
        """Record what a person did, as a message id and parameters (_PERSON_SAID), and tell the listeners."""
        message = _PERSON_SAID[(action, bool(note))]
        params = {"who": by, "note": note or "", **more}
        said = (message, json.dumps(params, sort_keys=True, ensure_ascii=False))
        change = self._record(db, alert_id, when, action, message.format(**params), json.dumps(details, sort_keys=True), said)
        self._changed(db, [change])
        return change

    def _stamp(self, at: datetime | None) -> str:
        """`at`, or now on the gateway's clock, as the UTC ISO text the tables keep."""
        return (at or self._clock_now()).astimezone(timezone.utc).isoformat()

    def _changed(self, db: Connection, changes: list[AlertChange]) -> None:
        if changes and self.on_alert_changes is not None:
            self.on_alert_changes(db, changes)

    def _record(
        self, db: Connection, alert_id: int, at: str, action: str, message: str, details: str,
        said: tuple[str, str] = ("", "{}"),
    ) -> AlertChange:
        """A lifecycle step worth keeping in the alert's history (updates only refresh the row);
        `said`: the step's message id and parameters (JSON), when a rule built it."""
        alert = self._alert(db, alert_id)
        db.execute(
            "INSERT INTO alert_history (alert_id, at, action, state, message, details, message_id, params)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (alert_id, at, action, alert.state, message, details, *said),
        )
        return AlertChange(action=action, alert=alert, note=message)

    def escalate(self, decide: Callable[[Alert], Escalation | None], at: datetime | None = None) -> list[AlertChange]:
        """Move every live alert that `decide` finds overdue one level up: more people are
        told, but the severity stays the rule's judgement of the condition (an info note
        about a late tap does not become critical by being left unread).

        Decided again inside a write transaction and applied only if the level is still
        the one decided on, so a level fires once, whatever the races and restarts."""
        if not any(decide(alert) for alert in self.alerts_live()):
            return []  # the usual case: no write lock taken
        when = self._stamp(at)
        db = self._db
        changes: list[AlertChange] = []
        with _transaction(db):
            for row in db.execute("SELECT * FROM alerts WHERE state != 'resolved' ORDER BY id").fetchall():
                alert = _alert_from_row(row)
                step = decide(alert)
                if step is None:
                    continue
                level = alert.escalation_level + 1
                moved = db.execute(
                    "UPDATE alerts SET escalation_level = ?, escalated_at = ? WHERE id = ? AND escalation_level = ? AND state != 'resolved'",
                    (level, when, alert.id, alert.escalation_level),
                ).rowcount
                if moved:
                    details = json.dumps({"level": level, "reason": step.reason}, sort_keys=True)
                    said = (step.message.id, json.dumps(step.message.params, sort_keys=True, ensure_ascii=False))
                    changes.append(self._record(db, alert.id, when, "escalated", step.message, details, said))
            self._changed(db, changes)
        return changes

    # ------------------------------------------------------------------ queries

    def alerts(self, *, site: str | None = None, rule: str | None = None, state: str | None = None, limit: int = 500) -> list[Alert]:
        clauses, params = [], []
        for column, value in (("site", site), ("rule", rule), ("state", state)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT * FROM alerts {where} ORDER BY opened_at DESC, id DESC LIMIT ?", (*params, limit))
        return [_alert_from_row(row) for row in rows]

    def alerts_recent(self, cutoff: datetime) -> list[Alert]:
        """Every site's unresolved alerts and those resolved or updated at or after `cutoff`, in one
        query (the cross-site overview reads this once, not a few queries per site)."""
        stamp = cutoff.astimezone(timezone.utc).isoformat()  # the tables keep UTC ISO text
        rows = self._db.execute("SELECT * FROM alerts WHERE state != 'resolved' OR resolved_at >= ? OR updated_at >= ?"
                                " ORDER BY opened_at DESC, id DESC", (stamp, stamp))
        return [_alert_from_row(row) for row in rows]

    def alerts_live(self) -> list[Alert]:
        """Open and acknowledged alerts, oldest first."""
        return [_alert_from_row(row) for row in self._db.execute("SELECT * FROM alerts WHERE state != 'resolved' ORDER BY id")]

    def alert(self, alert_id: int) -> Alert | None:
        row = self._db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return _alert_from_row(row) if row else None

    def _alert(self, db: Connection, alert_id: int) -> Alert:
        return _alert_from_row(db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone())

    def alert_history(self, alert_id: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT at, action, state, message, details, message_id, params FROM alert_history WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        )
        return [{**dict(row), "details": json.loads(row["details"]), "params": json.loads(row["params"])} for row in rows]

    def history_after(self, after: int, limit: int = 1000) -> list[tuple[int, int, str]]:
        """Lifecycle steps recorded after history row `after`, oldest first, as (row id, alert id,
        action); `after` -1: none, only the last row's id (a cursor to start from). Another process
        follows the alerts this way (gateway/view.py); updates that record no step are not in it."""
        if after < 0:
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM alert_history").fetchone()
            return [(int(row[0]), 0, "")]
        rows = self._db.execute("SELECT id, alert_id, action FROM alert_history WHERE id > ? ORDER BY id LIMIT ?",
                                (after, limit))
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, received_at, topic, payload, size, reason, code FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(row) for row in rows]

    def count(self, table: str) -> int:
        if table not in ("seen_events", "seen_events_previous", "dead_letters", "alerts", "alert_history"):
            raise ValueError(f"unknown table {table!r}")
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def write(self, work: Callable[[Connection], Any]) -> Any:
        """Run `work` on this thread's connection in one write transaction (tables other
        modules own in this file, e.g. gateway/statistics.py)."""
        db = self._db
        with _transaction(db):
            return work(db)

    def read(self, work: Callable[[Connection], Any]) -> Any:
        """Run `work` on this thread's connection, for queries of tables other modules own."""
        return work(self._db)

    def close(self) -> None:
        close_thread_connections(self._local)


def _live_state(db: Connection, alert_id: int) -> str:
    """The alert's state, for a person's action on it: none if there is no such alert, and
    none on a resolved one."""
    row = db.execute("SELECT state FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        raise AlertNotFound(alert_id)
    if row["state"] == AlertState.RESOLVED:
        raise AlertStateConflict(f"alert {alert_id} is already resolved")
    return str(row["state"])


class _transaction:
    """A write transaction (BEGIN IMMEDIATE: on PostgreSQL, serialised as on SQLite, see gateway/db.py)."""

    def __init__(self, db: Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _migrate(db: Connection) -> None:
    """Bring a database from an older release up to date: add the alert columns it lacks
    and drop the seen ids' arrival time, which nothing read (checked again under the
    write lock, so two processes opening one file do not both migrate)."""
    def columns(table: str) -> set[str]:
        return engines.table_columns(db, table)

    def missing() -> list[tuple[str, str, str]]:
        added = (("alerts", _ADDED_ALERT_COLUMNS), ("alert_history", _ADDED_HISTORY_COLUMNS))
        return [(table, name, kind) for table, wanted in added for name, kind in wanted.items() if name not in columns(table)]

    def with_arrival_time() -> list[str]:
        return [table for table in ("seen_events", "seen_events_previous") if "received_at" in columns(table)]

    if "code" not in columns("dead_letters"):  # the reason code, kept since issue 17
        with _transaction(db):
            if "code" not in columns("dead_letters"):
                db.execute("ALTER TABLE dead_letters ADD COLUMN code TEXT NOT NULL DEFAULT ''")
    if not missing() and not with_arrival_time():
        return
    with _transaction(db):
        for table, name, kind in missing():
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        for table in with_arrival_time():
            db.execute(f"ALTER TABLE {table} DROP COLUMN received_at")


def _alert_from_row(row: Any) -> Alert:
    values = dict(row)
    values["details"] = json.loads(values["details"])
    values["state"] = AlertState(values["state"])
    values["params"] = json.loads(values.get("params") or "{}")
    values["end_params"] = json.loads(values["end_params"]) if values.get("end_params") else None
    return Alert(**values)


def _set_meta(db: Connection, key: str, value: str) -> None:
    db.execute("INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def _no_nul(text: str) -> str:
    """`text` with each NUL written as the four characters \\x00 (PostgreSQL text refuses NUL;
    a batch refused for it would be retried for ever)."""
    return text.replace("\x00", "\\x00")


def _bulk(values: list[Any]) -> str:
    """A list as one JSON parameter, for statements that read it with json_each: the
    whole batch then costs one sqlite3 call, which SQLite runs without holding the GIL,
    where executemany takes and releases the GIL once per row (and waits for it each time
    the MQTT thread has it)."""
    return json.dumps(values)
