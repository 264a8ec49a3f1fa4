"""Repair requests (work orders): who reported what, who owns it, and every step on the way.

First-responder ownership (首问负责制): the first person to take a work order owns it until
they hand it over to someone named; nobody else moves it on, but a manager may assign it.
Every state change, hand-over and note is a row in `work_order_history`, which triggers
keep append-only. The states and who may move them are the two tables below
(TRANSITIONS here, the role permissions in gateway/auth.py); the API only maps routes onto them.

Deadlines come from `WorkOrderConfig` (per priority, per category) and are fixed on the
order when it is created or reopened, so a config change does not move a promise already
made. Overdue orders climb the alert escalation ladder (gateway/escalation.py decides,
`WorkOrders.escalate` applies once per level) and every change people should hear about
goes to the alert sinks as an alert-shaped change of rule `work_order` (`as_alert_change`),
written to the notification outbox in the same transaction as the change itself.

Times are the gateway's clock: deadlines are about people, like the alerts'.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import gateway.store as state_store
from gateway import db as engines
from warden.clock import Clock
from warden.documents import ConfigError
from warden.events import Identifier

log = logging.getLogger(__name__)

Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")
RULE = "work_order"  # the rule name work-order notifications carry to the alert sinks


# --------------------------------------------------------------------------- config


class Deadlines(BaseModel):
    """Hours to take and to resolve; a key left out keeps the broader default."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    take_hours: float | None = Field(default=None, gt=0, description="From creation (or reopening) until someone takes it")
    resolve_hours: float | None = Field(default=None, gt=0, description="From creation (or reopening) until it is done")


def _default_priorities() -> dict[str, Deadlines]:
    return {"urgent": Deadlines(take_hours=0.5, resolve_hours=4), "high": Deadlines(take_hours=1, resolve_hours=8)}


def _default_categories() -> dict[str, Deadlines]:
    return {name: Deadlines() for name in ("general", "plumbing", "electrical", "hvac", "doors", "devices", "cleaning")}


class WorkOrderConfig(BaseModel):
    """Repair requests (docs/operations.md): categories, deadlines, photos.

    A deadline is the priority's if it sets one, else the category's, else the default."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    take_hours: float = Field(default=2.0, gt=0, description="Default time to take a new work order")
    resolve_hours: float = Field(default=24.0, gt=0, description="Default time to finish it (the 24-hour promise)")
    categories: dict[Identifier, Deadlines] = Field(default_factory=_default_categories, min_length=1)
    priorities: dict[Priority, Deadlines] = Field(default_factory=_default_priorities)
    photo_dir: Path | None = Field(default=None, description="Where photos are kept; none: work-order-photos beside state_db")
    photo_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=32 * 1024 * 1024, description="Largest photo accepted")
    photo_types: list[Literal["image/jpeg", "image/png", "image/webp"]] = Field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/webp"], min_length=1)
    max_photos: int = Field(default=3, ge=0, le=20, description="Photos per work order")
    max_new_per_hour: int = Field(default=30, ge=1, le=10_000, description="New requests one person may make in an hour "
                                  "(a runaway script or stolen token must not bury the desk); more answer 429")
    teams: dict[Identifier, list[Identifier]] = Field(
        default_factory=dict, description="Team -> the categories of work it does (the monthly supervision view's "
        "per-team level); a category in no team is a team of its own")

    @field_validator("take_hours", "resolve_hours")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value > 24 * 365:
            raise ValueError("expected at most a year (8760 h)")
        return value

    @model_validator(mode="after")
    def _teams_do_known_work(self) -> WorkOrderConfig:
        """Each team's categories are categories of `categories`, and no category has two teams."""
        seen: dict[str, str] = {}
        for team, categories in self.teams.items():
            for category in categories:
                if category not in self.categories:
                    raise ValueError(f"teams.{team}: unknown category {category!r} (known: {', '.join(sorted(self.categories))})")
                if category in seen:
                    raise ValueError(f"teams.{team}: category {category!r} is already team {seen[category]!r}'s")
                seen[category] = team
        return self

    def team_of(self, category: str) -> str:
        """The team doing work of `category`: the one listing it in `teams`, else the category itself."""
        return next((team for team, categories in self.teams.items() if category in categories), category)

    def deadlines(self, category: str, priority: str) -> tuple[float, float]:
        """(take hours, resolve hours) for a new order of `category` and `priority`."""
        take, resolve = self.take_hours, self.resolve_hours
        for override in (self.categories.get(category), self.priorities.get(priority)):  # type: ignore[call-overload]
            if override is not None:
                take = override.take_hours if override.take_hours is not None else take
                resolve = override.resolve_hours if override.resolve_hours is not None else resolve
        return take, resolve


# --------------------------------------------------------------------------- states


class WorkOrderState(StrEnum):
    NEW = "new"
    TAKEN = "taken"
    IN_PROGRESS = "in_progress"
    WAITING = "waiting"  # for parts
    DONE = "done"
    CLOSED = "closed"
    REOPENED = "reopened"


S = WorkOrderState
UNTAKEN = frozenset({S.NEW, S.REOPENED})
ACTIVE = frozenset({S.TAKEN, S.IN_PROGRESS, S.WAITING})
OPEN = UNTAKEN | ACTIVE  # somebody still has to act: deadlines run

#: action -> (states it may start from, state it leads to; None: unchanged). The one table.
TRANSITIONS: dict[str, tuple[frozenset[WorkOrderState], WorkOrderState | None]] = {
    "take": (UNTAKEN, S.TAKEN),
    "start": (frozenset({S.TAKEN, S.WAITING}), S.IN_PROGRESS),
    "wait": (frozenset({S.TAKEN, S.IN_PROGRESS}), S.WAITING),
    "done": (ACTIVE, S.DONE),
    "close": (frozenset({S.DONE}), S.CLOSED),
    "reopen": (frozenset({S.DONE, S.CLOSED}), S.REOPENED),
    "hand_over": (OPEN, None),
    "assign": (OPEN, None),  # with hand_over: an untaken order becomes taken by the person named (see _target)
    "note": (frozenset(S), None),
}
#: Actions only the owner may do (or someone allowed to act for others: a manager).
OWNER_ACTIONS = frozenset({"start", "wait", "done", "hand_over"})
#: Actions only the requester may do (or someone allowed to act for others).
REQUESTER_ACTIONS = frozenset({"close", "reopen"})


class WorkOrderNotFound(LookupError):
    pass


class WorkOrderConflict(ValueError):
    """The order's state does not allow the action (e.g. closing one that is not done)."""


class WorkOrderForbidden(PermissionError):
    """The caller may do this kind of thing, but not to this order (it is someone else's)."""


class WorkOrderTooMany(ValueError):
    """The person made work_orders.max_new_per_hour requests in the last hour already."""


@dataclass(frozen=True)
class WorkOrder:
    id: int
    site: str
    room: str
    category: str
    priority: str
    text: str
    state: WorkOrderState
    requested_by: str
    created_at: str
    updated_at: str
    owner: str | None
    taken_at: str | None
    done_at: str | None
    closed_at: str | None
    take_hours: float
    resolve_hours: float
    take_by: str  # deadlines, gateway clock, UTC ISO
    resolve_by: str
    escalation_level: int
    escalated_at: str | None
    alert_id: int | None
    rating: int | None
    rating_comment: str | None


@dataclass(frozen=True)
class WorkOrderChange:
    action: str  # created, take, start, wait, done, close, reopen, hand_over, assign, note, escalated
    order: WorkOrder
    by: str
    note: str = ""


@dataclass(frozen=True)
class Photo:
    id: int
    work_order_id: int
    content_type: str
    size: int
    path: str
    added_by: str
    added_at: str


#: Written once for both engines (gateway/db.py render_schema; `{{}}` is a literal `{}`).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS work_orders (
    id {id},
    site TEXT NOT NULL, room TEXT NOT NULL, category TEXT NOT NULL, priority TEXT NOT NULL, text TEXT NOT NULL,
    state TEXT NOT NULL, requested_by TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    owner TEXT, taken_at TEXT, done_at TEXT, closed_at TEXT,
    take_hours {real} NOT NULL, resolve_hours {real} NOT NULL, take_by TEXT NOT NULL, resolve_by TEXT NOT NULL,
    escalation_level INTEGER NOT NULL DEFAULT 0, escalated_at TEXT,
    alert_id {int} REFERENCES alerts(id), rating INTEGER CHECK (rating BETWEEN 1 AND 5), rating_comment TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS one_work_order_per_alert ON work_orders (alert_id) WHERE alert_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS work_orders_open ON work_orders (state) WHERE state NOT IN ('done', 'closed');
CREATE TABLE IF NOT EXISTS work_order_history (
    id {id}, work_order_id {int} NOT NULL REFERENCES work_orders(id),
    at TEXT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '', details TEXT NOT NULL DEFAULT '{{}}');
CREATE INDEX IF NOT EXISTS work_order_history_by_order ON work_order_history (work_order_id, id);
CREATE TABLE IF NOT EXISTS work_order_photos (
    id {id}, work_order_id {int} NOT NULL REFERENCES work_orders(id),
    content_type TEXT NOT NULL, size INTEGER NOT NULL, path TEXT NOT NULL, added_by TEXT NOT NULL, added_at TEXT NOT NULL);
"""

#: The tables _SCHEMA makes, parents first (gateway/state_copy.py copies them in this order).
TABLES = ("work_orders", "work_order_history", "work_order_photos")

#: The history is append-only, enforced by the database (each engine's trigger syntax).
_APPEND_ONLY: dict[engines.Dialect, str] = {
    "sqlite": """
CREATE TRIGGER IF NOT EXISTS work_order_history_no_update BEFORE UPDATE ON work_order_history
    BEGIN SELECT RAISE(ABORT, 'work_order_history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS work_order_history_no_delete BEFORE DELETE ON work_order_history
    BEGIN SELECT RAISE(ABORT, 'work_order_history is append-only'); END;
""",
    "postgres": """
CREATE OR REPLACE FUNCTION work_order_history_append_only() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'work_order_history is append-only'; END $$;
CREATE OR REPLACE TRIGGER work_order_history_append_only BEFORE UPDATE OR DELETE ON work_order_history
    FOR EACH STATEMENT EXECUTE FUNCTION work_order_history_append_only();
""",
}

#: First bytes of each accepted photo type: the declared type must match the content.
_MAGIC: dict[str, Callable[[bytes], bool]] = {
    "image/jpeg": lambda b: b[:3] == b"\xff\xd8\xff",
    "image/png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    "image/webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
}
_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}

#: Category of a work order made from an alert, by the alert rule's prefix.
_ALERT_CATEGORIES = (("water_", "plumbing"), ("door_", "doors"), ("deadman", "devices"), ("patrol_", "general"))
_SEVERITY_PRIORITY = {"critical": "urgent", "warning": "high", "info": "normal"}


def priority_for_severity(severity: str) -> str:
    """The priority a work order made from an alert of `severity` starts with (the person may pick another)."""
    return _SEVERITY_PRIORITY.get(severity, "normal")


def category_for_rule(rule: str, known: set[str]) -> str:
    """The category a work order made from a `rule` alert starts in (the person may pick another)."""
    found = next((category for prefix, category in _ALERT_CATEGORIES if rule.startswith(prefix)), None)
    if found is None and ("after_hours" in rule or rule.startswith("ac_")):
        found = "hvac" if rule.startswith("ac_") else "electrical"
    return found if found in known else ("general" if "general" in known else sorted(known)[0])


class Notifier(Protocol):
    """gateway/notify.py's Notifier, as far as work orders use it."""

    def record(self, db: sqlite3.Connection, changes: list[state_store.AlertChange]) -> None: ...

    def notify(self, change: state_store.AlertChange) -> None: ...


Decide = Callable[[WorkOrder], "state_store.Escalation | None"]


class WorkOrders:
    """The work-order store and state machine, in the gateway's state.db."""

    def __init__(self, path: Path, config: WorkOrderConfig, site: str, clock: Clock | None = None,
                 notifier: Notifier | None = None, site_of_room: Callable[[str], str | None] | None = None) -> None:
        """`site`: the site of an order whose room no site names; `site_of_room`: which
        served site a room is in (issue 21: a gateway of several sites)."""
        self.path = path
        self.config = config
        self.site = site
        self.site_of_room = site_of_room or (lambda room: None)
        self.clock = clock
        self.notifier = notifier
        if config.photo_dir is None and engines.is_postgres_url(path):
            raise ConfigError("work_orders.photo_dir: required when state_db is a PostgreSQL URL (photos are files, not rows)")
        self.photo_dir = config.photo_dir or Path(path).parent / "work-order-photos"
        self._local = threading.local()
        kind = engines.dialect(self._db)
        self._db.executescript(engines.render_schema(_SCHEMA, kind) + _APPEND_ONLY[kind])  # idempotent: an older state.db gains them

    @property
    def _db(self) -> sqlite3.Connection:
        return state_store.thread_connection(self._local, self.path)

    def _now(self) -> datetime:
        return (self.clock.now() if self.clock is not None else datetime.now(timezone.utc)).astimezone(timezone.utc)

    # ------------------------------------------------------------------ create

    def create(self, *, room: str, text: str, by: str, category: str = "general", priority: str = "normal",
               alert_id: int | None = None, site: str | None = None) -> WorkOrderChange:
        """A new request; its deadlines are fixed now. 409 (conflict) if the alert has one already.
        `site`: the order's site; by default the room's (a room id two sites share: give it)."""
        if category not in self.config.categories:
            raise ValueError(f"category: unknown {category!r} (known: {', '.join(sorted(self.config.categories))})")
        if priority not in PRIORITIES:
            raise ValueError(f"priority: expected one of {', '.join(PRIORITIES)}")
        take_hours, resolve_hours = self.config.deadlines(category, priority)
        order_site = site or self.site_of_room(room) or self.site
        now = self._now()
        at = now.isoformat()
        db = self._db
        with state_store._transaction(db):
            self._check_rate(db, by, now)
            if alert_id is not None:
                taken = db.execute("SELECT id FROM work_orders WHERE alert_id = ?", (alert_id,)).fetchone()
                if taken is not None:
                    raise WorkOrderConflict(f"alert {alert_id} already has work order {taken[0]}")
            order_id = db.execute(
                "INSERT INTO work_orders (site, room, category, priority, text, state, requested_by, created_at, updated_at,"
                " take_hours, resolve_hours, take_by, resolve_by, alert_id) VALUES (?, ?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (order_site, room, category, priority, text, by, at, at, take_hours, resolve_hours,
                 (now + timedelta(hours=take_hours)).isoformat(), (now + timedelta(hours=resolve_hours)).isoformat(), alert_id),
            ).fetchone()[0]
            assert order_id is not None
            change = self._record(db, order_id, "created", by, None, at, "", {"alert_id": alert_id} if alert_id else {})
            self._notify_in(db, [change])
        self._notify_after([change])
        log.info("work order created", extra={"work_order": order_id, "by": by, "room": room, "category": category, "alert": alert_id})
        return change

    def _check_rate(self, db: sqlite3.Connection, by: str, now: datetime) -> None:
        """At most max_new_per_hour requests by `by` created in the hour up to `now` (under the write lock)."""
        since = (now - timedelta(hours=1)).isoformat()
        made = db.execute("SELECT COUNT(*) FROM work_orders WHERE requested_by = ? AND created_at > ?", (by, since)).fetchone()[0]
        if made >= self.config.max_new_per_hour:
            raise WorkOrderTooMany(f"{by} made {made} requests in the last hour (work_orders.max_new_per_hour): try later")

    # ------------------------------------------------------------------ act

    def act(self, order_id: int, action: str, by: str, *, may_act_for_others: bool = False, note: str = "",
            to: str | None = None, rating: int | None = None, comment: str | None = None) -> WorkOrderChange:
        """Move an order by `action` (TRANSITIONS), as `by`. `may_act_for_others`: a manager,
        who may do the owner's and the requester's steps. `to`: the person named in a
        hand-over or assignment. `rating`/`comment`: the requester's, on closing."""
        if action not in TRANSITIONS:
            raise ValueError(f"unknown action {action!r}")
        now = self._now()
        at = now.isoformat()
        db = self._db
        with state_store._transaction(db):
            order = self._get(db, order_id)
            sources, _ = TRANSITIONS[action]
            if order.state not in sources:
                raise WorkOrderConflict(f"work order {order_id} is {order.state}: cannot {action.replace('_', ' ')}")
            self._check_who(order, action, by, may_act_for_others, to, rating)
            target = _target(order, action)
            updates, details = self._updates(order, action, by, now, to, rating, comment)
            updates |= {"state": target, "updated_at": at}
            assignments = ", ".join(f"{column} = ?" for column in updates)
            db.execute(f"UPDATE work_orders SET {assignments} WHERE id = ?", (*updates.values(), order_id))
            change = self._record(db, order_id, action, by, order.state, at, note, details)
            self._notify_in(db, [change])
        self._notify_after([change])
        log.info("work order " + action, extra={"work_order": order_id, "by": by, "state": target, "to": to})
        return change

    def _check_who(self, order: WorkOrder, action: str, by: str, for_others: bool, to: str | None, rating: int | None) -> None:
        if action in ("hand_over", "assign"):
            if not to:
                raise ValueError("to: name the person who takes it over")
            if to == order.owner:
                raise WorkOrderConflict(f"work order {order.id} is already {to}'s")
        if for_others:
            return
        if action == "assign":
            raise WorkOrderForbidden("only a manager assigns work orders; the owner hands over")
        if action == "take" and order.owner not in (None, by):
            raise WorkOrderForbidden(f"work order {order.id} is {order.owner}'s (first-responder ownership): they hand it over")
        if action in OWNER_ACTIONS and order.owner != by:
            raise WorkOrderForbidden(f"work order {order.id} is {order.owner or 'nobody'}'s: only the owner may {action.replace('_', ' ')}")
        if action in REQUESTER_ACTIONS and order.requested_by != by:
            raise WorkOrderForbidden(f"only the requester ({order.requested_by}) may {action} work order {order.id}")
        if action == "close" and rating is None:
            raise ValueError("rating: the requester rates the service on closing (1-5)")

    def _updates(self, order: WorkOrder, action: str, by: str, now: datetime, to: str | None, rating: int | None,
                 comment: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Columns `action` sets besides state, and what the history row says about it."""
        at = now.isoformat()
        if action == "take":
            return {"owner": by, "taken_at": at}, {}
        if action in ("hand_over", "assign"):
            taken = {} if order.taken_at else {"taken_at": at}
            return {"owner": to, **taken}, {"from": order.owner, "to": to}
        if action == "done":
            return {"done_at": at}, {}
        if action == "close":
            return {"closed_at": at, "rating": rating, "rating_comment": comment}, {"rating": rating, "comment": comment}
        if action == "reopen":  # the promise starts again; the owner stays (first-responder ownership)
            return {"done_at": None, "closed_at": None, "escalation_level": 0, "escalated_at": None, "rating": None,
                    "rating_comment": None, "take_by": (now + timedelta(hours=order.take_hours)).isoformat(),
                    "resolve_by": (now + timedelta(hours=order.resolve_hours)).isoformat()}, {}
        return {}, {}

    # ------------------------------------------------------------------ escalate

    def escalate(self, decide: Decide, now: datetime | None = None) -> list[WorkOrderChange]:
        """Move every open order `decide` finds overdue one level up, once per level (the
        level is checked again in the UPDATE, as for alerts); notified like alert escalations."""
        if not any(decide(order) for order in self.open_orders()):
            return []
        at = (now or self._now()).astimezone(timezone.utc).isoformat()
        db = self._db
        changes: list[WorkOrderChange] = []
        with state_store._transaction(db):
            for order in self._open(db):
                step = decide(order)
                if step is None:
                    continue
                level = order.escalation_level + 1
                moved = db.execute(
                    "UPDATE work_orders SET escalation_level = ?, escalated_at = ? WHERE id = ? AND escalation_level = ?",
                    (level, at, order.id, order.escalation_level)).rowcount
                if moved:
                    changes.append(self._record(db, order.id, "escalated", "warden", order.state, at, step.message,
                                                {"level": level, "reason": step.reason}))
            self._notify_in(db, changes)
        self._notify_after(changes)
        return changes

    def alert_resolved(self, alert_id: int, by: str | None) -> WorkOrderChange | None:
        """The alert an open order was made from is resolved (by a person, or on its own when
        the condition cleared): a step in the order's history, told to the sinks as an update.
        The order stays open: a leak that stopped still wants someone to look, and only the
        requester closes (first-responder ownership). None if no open order came from it."""
        db = self._db
        linked = "SELECT id, state FROM work_orders WHERE alert_id = ? AND state NOT IN ('done', 'closed')"
        if db.execute(linked, (alert_id,)).fetchone() is None:  # most alerts have none: no write lock for them
            return None
        at = self._now().isoformat()
        with state_store._transaction(db):
            row = db.execute(linked, (alert_id,)).fetchone()
            if row is None:
                return None
            note = f"alert {alert_id} resolved" + (f" by {by}" if by else " on its own")
            change = self._record(db, int(row[0]), "alert_resolved", "warden", str(row[1]), at, note, {"alert_id": alert_id})
            self._notify_in(db, [change])
        self._notify_after([change])
        return change

    # ------------------------------------------------------------------ photos

    def add_photo(self, order_id: int, content: bytes, content_type: str, by: str, *, may_act_for_others: bool = False) -> Photo:
        """Keep a photo of the fault on disk (bounded in size, type and number); the
        requester and the owner may add one."""
        if content_type not in self.config.photo_types:
            raise ValueError(f"photo: type {content_type!r} not accepted (accepted: {', '.join(self.config.photo_types)})")
        if len(content) > self.config.photo_max_bytes:
            raise ValueError(f"photo: {len(content)} bytes, more than work_orders.photo_max_bytes ({self.config.photo_max_bytes})")
        if not content or not _MAGIC[content_type](content):
            raise ValueError(f"photo: the content is not a {content_type} image")
        order = self.get(order_id)
        if not may_act_for_others and by not in (order.requested_by, order.owner):
            raise WorkOrderForbidden(f"only the requester or the owner may add photos to work order {order_id}")
        self.photo_dir.mkdir(parents=True, exist_ok=True)
        at = self._now().isoformat()
        db = self._db
        with state_store._transaction(db):
            count = db.execute("SELECT COUNT(*) FROM work_order_photos WHERE work_order_id = ?", (order_id,)).fetchone()[0]
            if count >= self.config.max_photos:
                raise WorkOrderConflict(f"work order {order_id} has {count} photos already (work_orders.max_photos)")
            photo_id = db.execute(
                "INSERT INTO work_order_photos (work_order_id, content_type, size, path, added_by, added_at) VALUES (?, ?, ?, '', ?, ?)"
                " RETURNING id", (order_id, content_type, len(content), by, at)).fetchone()[0]
            name = f"{order_id}-{photo_id}{_SUFFIX[content_type]}"
            temporary = self.photo_dir / (name + ".part")
            temporary.write_bytes(content)
            temporary.replace(self.photo_dir / name)  # whole or absent, also after a crash
            db.execute("UPDATE work_order_photos SET path = ? WHERE id = ?", (name, photo_id))
            self._record(db, order_id, "photo", by, order.state, at, "", {"photo": photo_id, "bytes": len(content)})
        return self.photo(order_id, photo_id)  # type: ignore[return-value]

    def photos(self, order_id: int) -> list[Photo]:
        rows = self._db.execute("SELECT * FROM work_order_photos WHERE work_order_id = ? ORDER BY id", (order_id,))
        return [Photo(**dict(row)) for row in rows]

    def photo(self, order_id: int, photo_id: int) -> Photo | None:
        row = self._db.execute("SELECT * FROM work_order_photos WHERE work_order_id = ? AND id = ?", (order_id, photo_id)).fetchone()
        return Photo(**dict(row)) if row else None

    def photo_bytes(self, photo: Photo) -> bytes:
        return (self.photo_dir / photo.path).read_bytes()

    # ------------------------------------------------------------------ queries

    def get(self, order_id: int) -> WorkOrder:
        return self._get(self._db, order_id)

    def search(self, *, state: list[str] | None = None, person: str | None = None, alert_id: int | None = None,
             limit: int = 500) -> list[WorkOrder]:
        """Newest first; `person`: only those they requested or own."""
        clauses, params = [], []
        if state:
            clauses.append(f"state IN ({', '.join('?' * len(state))})")
            params += state
        if person is not None:
            clauses.append("(requested_by = ? OR owner = ?)")
            params += [person, person]
        if alert_id is not None:
            clauses.append("alert_id = ?")
            params.append(alert_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT * FROM work_orders {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_order_from_row(row) for row in rows]

    def for_alert(self, alert_id: int) -> WorkOrder | None:
        found = self.search(alert_id=alert_id, limit=1)
        return found[0] if found else None

    def by_alerts(self, alert_ids: list[int]) -> dict[int, int]:
        """alert id -> its work order's id, for those of `alert_ids` that have one (one query)."""
        rows = self._db.execute(f"SELECT alert_id, id FROM work_orders WHERE alert_id IN ({engines.bulk_ids(self._db)})",
                                (json.dumps(alert_ids),))
        return {int(row[0]): int(row[1]) for row in rows}

    def open_orders(self) -> list[WorkOrder]:
        return self._open(self._db)

    def history(self, order_id: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT at, who, action, from_state, to_state, note, details FROM work_order_history WHERE work_order_id = ? ORDER BY id",
            (order_id,))
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]

    def _open(self, db: sqlite3.Connection) -> list[WorkOrder]:
        rows = db.execute("SELECT * FROM work_orders WHERE state NOT IN ('done', 'closed') ORDER BY id")
        return [_order_from_row(row) for row in rows]

    def _get(self, db: sqlite3.Connection, order_id: int) -> WorkOrder:
        row = db.execute("SELECT * FROM work_orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            raise WorkOrderNotFound(order_id)
        return _order_from_row(row)

    # ------------------------------------------------------------------ history, notifications

    def _record(self, db: sqlite3.Connection, order_id: int, action: str, by: str, from_state: str | None, at: str,
                note: str, details: dict[str, Any]) -> WorkOrderChange:
        order = self._get(db, order_id)
        db.execute(
            "INSERT INTO work_order_history (work_order_id, at, who, action, from_state, to_state, note, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (order_id, at, by, action, from_state, order.state, note, json.dumps(details, sort_keys=True)))
        return WorkOrderChange(action, order, by, note)

    def _notify_in(self, db: sqlite3.Connection, changes: list[WorkOrderChange]) -> None:
        """Outbox rows for the durable sinks, in the transaction of the change."""
        told = [as_alert_change(c) for c in changes if c.action in NOTIFIED]
        if told and self.notifier is not None:
            self.notifier.record(db, told)

    def _notify_after(self, changes: list[WorkOrderChange]) -> None:
        if self.notifier is None:
            return
        for change in changes:
            if change.action in NOTIFIED:
                self.notifier.notify(as_alert_change(change))

    def close(self) -> None:
        state_store.close_thread_connections(self._local)


def _target(order: WorkOrder, action: str) -> WorkOrderState:
    _, target = TRANSITIONS[action]
    if action in ("assign", "hand_over") and order.state in UNTAKEN:
        return S.TAKEN  # it has an owner now
    return target or order.state


def _order_from_row(row: sqlite3.Row) -> WorkOrder:
    values = dict(row)
    values["state"] = WorkOrderState(values["state"])
    return WorkOrder(**values)


# --------------------------------------------------------------------------- to the alert sinks

#: Work-order action -> the alert change kind it is sent as (routes filter on these kinds).
NOTIFIED: dict[str, str] = {
    "created": "opened", "take": "acknowledged", "hand_over": "acknowledged", "assign": "acknowledged",
    "escalated": "escalated", "done": "updated", "close": "resolved", "reopen": "opened", "alert_resolved": "updated",
}
_PRIORITY_SEVERITY = {"urgent": "critical", "high": "warning", "normal": "info", "low": "info"}


def as_alert_change(change: WorkOrderChange) -> state_store.AlertChange:
    """A work-order change in the shape every alert sink sends: rule `work_order`, subject
    `WO-<id>`, severity from the priority, the order's escalation level (so the ladder's
    routes apply), the owner as `acknowledged_by`, and what happened as the note."""
    from rules.alerts import AlertState

    order = change.order
    state = AlertState.RESOLVED if order.state == S.CLOSED else AlertState.OPEN if order.state in UNTAKEN else AlertState.ACKNOWLEDGED
    said = {"created": f"reported by {change.by}", "take": f"taken by {change.by}",
            "hand_over": f"handed over by {change.by} to {order.owner}", "assign": f"assigned by {change.by} to {order.owner}",
            "done": f"done by {change.by}", "close": f"closed by {change.by}, rated {order.rating}",
            "reopen": f"reopened by {change.by}"}
    what = said.get(change.action, change.note)  # escalated, alert_resolved: the note says it all
    note = what + (f": {_gist(change.note)}" if change.note and change.action in said else "")
    alert = state_store.Alert(
        id=order.id, site=order.site, rule=RULE, subject=f"WO-{order.id}", state=state,
        severity=_PRIORITY_SEVERITY.get(order.priority, "info"),
        message=f"Work order #{order.id} ({order.category}, {order.priority}) in {order.room}: {_gist(order.text)}",
        details={"work_order": order.id, "state": order.state.value, "room": order.room, "requested_by": order.requested_by,
                 "owner": order.owner, "take_by": order.take_by, "resolve_by": order.resolve_by, "alert_id": order.alert_id},
        count=1, opened_at=order.created_at, updated_at=order.updated_at,
        resolved_at=order.closed_at, acknowledged_by=order.owner, acknowledged_at=order.taken_at, note=None,
        escalation_level=order.escalation_level, escalated_at=order.escalated_at, raised_at=order.created_at,
    )
    return state_store.AlertChange(action=NOTIFIED.get(change.action, "updated"), alert=alert, note=note)


#: Characters of a request's text or note a notification carries: group bots take a few KB
#: (WeCom text: 2048 bytes) and 2000 Chinese characters are 6000; the order keeps the whole text.
GIST_CHARS = 200


def _gist(text: str) -> str:
    return text if len(text) <= GIST_CHARS else text[:GIST_CHARS] + "…"


def orders_created_between(db: sqlite3.Connection, start: str, end: str, site: str | None = None) -> list[WorkOrder]:
    """Orders created in [start, end) (UTC ISO), oldest first, for reports; [] where the
    state.db has no work-order table yet (a gateway that never started the feature).
    `site`: that site's only (a district's schools share one table and repeat room ids)."""
    if site is not None:
        return _orders(db, "created_at >= ? AND created_at < ? AND site = ?", (start, end, site))
    return _orders(db, "created_at >= ? AND created_at < ?", (start, end))


def overdue_at(order: WorkOrder, at: datetime) -> bool:
    """Behind at `at`: not taken by then though its take-by time had passed, or not done by
    then though its resolve-by time had passed. A reopened order's deadlines run from the
    reopening: a take before then (its first one) does not meet the new take-by time."""
    def missed(deadline: str, hours: float, met_at: str | None) -> bool:
        due = datetime.fromisoformat(deadline)
        met = met_at is not None and due - timedelta(hours=hours) <= datetime.fromisoformat(met_at) <= at
        return due <= at and not met

    return missed(order.take_by, order.take_hours, order.taken_at) or missed(order.resolve_by, order.resolve_hours, order.done_at)


def day_counts(db: sqlite3.Connection, start: datetime, end: datetime, site: str | None = None) -> dict[str, int] | None:
    """The daily report's repair requests: opened and closed in [start, end), and overdue at
    `end` (overdue_at); None where the state.db has no work-order table yet. `site`: that site's only."""
    if not _has_orders(db):
        return None
    span = (start.isoformat(), end.isoformat())
    live = _orders(db, "created_at < ? AND (closed_at IS NULL OR closed_at >= ?)", (span[1], span[0]))
    live = [o for o in live if site is None or o.site == site]
    return {
        "opened": sum(1 for o in live if o.created_at >= span[0]),
        "closed": sum(1 for o in live if o.closed_at is not None and o.closed_at < span[1]),
        "overdue": sum(1 for o in live if overdue_at(o, end)),
    }


def _has_orders(db: sqlite3.Connection) -> bool:
    return engines.has_table(db, "work_orders")


def _orders(db: sqlite3.Connection, where: str, params: tuple[str, ...]) -> list[WorkOrder]:
    """Orders matching `where`, oldest first, on a cursor of our own (the connection is the caller's)."""
    if not _has_orders(db):
        return []
    if engines.dialect(db) == "postgres":  # its rows are by name already
        return [_order_from_row(row) for row in db.execute(f"SELECT * FROM work_orders WHERE {where} ORDER BY id", params)]
    cursor = db.cursor()
    cursor.row_factory = sqlite3.Row
    return [_order_from_row(row) for row in cursor.execute(f"SELECT * FROM work_orders WHERE {where} ORDER BY id", params)]


def order_json(order: WorkOrder) -> dict[str, Any]:
    return asdict(order)
