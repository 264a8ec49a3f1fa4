"""Work orders below the API: the state machine against a hand-written table, first-responder
ownership, append-only history, deadlines from config, escalation decisions, and a state.db
of an earlier release gaining the new tables and columns."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway import db as engines
from gateway.config import EscalationConfig, GatewayConfig
from gateway.escalation import EscalationPolicy
from gateway.store import StateStore
from gateway.workorders import WorkOrderConfig, WorkOrderConflict, WorkOrderForbidden, WorkOrders
from tests.support.state_db import state_db  # noqa: F401  (the fixture: once per engine)
from warden.clock import ManualClock
from warden.config import ConfigError, load_config

T0 = datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)
ALL = ["new", "taken", "in_progress", "waiting", "done", "closed", "reopened"]

#: From the issue: which states each step may start from, and where it leads (written here
#: by hand, not read from gateway/workorders.py).
EXPECTED = {
    "take": ({"new", "reopened"}, "taken"),
    "start": ({"taken", "waiting"}, "in_progress"),
    "wait": ({"taken", "in_progress"}, "waiting"),
    "done": ({"taken", "in_progress", "waiting"}, "done"),
    "close": ({"done"}, "closed"),
    "reopen": ({"done", "closed"}, "reopened"),
}
#: A path from "new" to each state, by people: desk takes, the guard requested.
PATHS = {
    "new": [], "taken": ["take"], "in_progress": ["take", "start"], "waiting": ["take", "wait"],
    "done": ["take", "done"], "closed": ["take", "done", "close"], "reopened": ["take", "done", "reopen"],
}


@pytest.fixture
def orders(state_db: str | Path, tmp_path: Path) -> WorkOrders:
    """On SQLite and on PostgreSQL (tests/support/state_db.py)."""
    StateStore(state_db)  # the alerts the orders may refer to
    return WorkOrders(state_db, WorkOrderConfig(photo_dir=tmp_path / "photos"), "riverside", ManualClock(T0))


def walk(orders: WorkOrders, state: str) -> int:
    order_id = orders.create(room="A-204", text="tap drips", by="guard").order.id
    for action in PATHS[state]:
        who = "guard" if action in ("close", "reopen") else "desk"
        orders.act(order_id, action, who, rating=3 if action == "close" else None)
    assert orders.get(order_id).state == state
    return order_id


@pytest.mark.parametrize("action", sorted(EXPECTED))
@pytest.mark.parametrize("state", ALL)
def test_each_step_from_each_state(orders: WorkOrders, state: str, action: str) -> None:
    order_id = walk(orders, state)
    sources, target = EXPECTED[action]
    who = "guard" if action in ("close", "reopen") else "desk"
    if state not in sources:
        with pytest.raises(WorkOrderConflict):
            orders.act(order_id, action, who, rating=5)
        assert orders.get(order_id).state == state
        return
    change = orders.act(order_id, action, who, rating=5)
    assert change.order.state == target
    assert orders.history(order_id)[-1]["to_state"] == target


def test_the_first_to_take_owns_it_until_handing_over(orders: WorkOrders) -> None:
    order_id = orders.create(room="A-204", text="light out", by="guard").order.id
    orders.act(order_id, "take", "desk")
    with pytest.raises(WorkOrderForbidden):
        orders.act(order_id, "done", "plumber")
    with pytest.raises(WorkOrderForbidden):
        orders.act(order_id, "hand_over", "plumber", to="plumber")
    orders.act(order_id, "hand_over", "desk", to="plumber", note="needs a ladder")
    with pytest.raises(WorkOrderForbidden):
        orders.act(order_id, "done", "desk")
    assert orders.act(order_id, "done", "plumber").order.owner == "plumber"
    with pytest.raises(WorkOrderForbidden):
        orders.act(order_id, "close", "desk", rating=5)  # only the requester
    with pytest.raises(ValueError, match="rating"):
        orders.act(order_id, "close", "guard")  # the requester rates


def test_history_is_append_only(orders: WorkOrders, state_db: str | Path) -> None:
    order_id = walk(orders, "done")
    db = engines.connect(state_db)  # a connection of its own, as another program's
    with pytest.raises(Exception, match="append-only"):  # sqlite3.DatabaseError or psycopg's RaiseException
        db.execute("UPDATE work_order_history SET who = 'someone else'")
    with pytest.raises(Exception, match="append-only"):
        db.execute("DELETE FROM work_order_history")
    db.close()
    assert [h["action"] for h in orders.history(order_id)] == ["created", "take", "done"]


def test_deadlines_by_priority_then_category_then_default() -> None:
    config = WorkOrderConfig.model_validate({
        "take_hours": 2, "resolve_hours": 24,
        "categories": {"plumbing": {"resolve_hours": 8}, "general": {}},
        "priorities": {"urgent": {"take_hours": 0.25}},
    })
    assert config.deadlines("general", "normal") == (2, 24)
    assert config.deadlines("plumbing", "normal") == (2, 8)  # the category's resolve
    assert config.deadlines("plumbing", "urgent") == (0.25, 8)  # the priority's take, the category's resolve
    assert config.deadlines("general", "urgent") == (0.25, 24)


def test_a_created_order_carries_its_deadlines(tmp_path: Path) -> None:
    config = WorkOrderConfig.model_validate({"categories": {"doors": {"take_hours": 1, "resolve_hours": 6}}})
    orders = WorkOrders(tmp_path / "state.db", config, "riverside", ManualClock(T0))
    order = orders.create(room="A-GATE", text="lock", by="guard", category="doors").order
    assert order.take_by == (T0 + timedelta(hours=1)).isoformat()  # 06:00 + 1 h
    assert order.resolve_by == (T0 + timedelta(hours=6)).isoformat()  # 06:00 + 6 h
    with pytest.raises(ValueError, match="category: unknown 'plumbing'"):
        orders.create(room="A-GATE", text="x", by="guard", category="plumbing")


@pytest.mark.parametrize(("yaml", "key"), [
    ("work_orders: {take_hours: 0}", "work_orders.take_hours"),
    ("work_orders: {priorities: {asap: {take_hours: 1}}}", "work_orders.priorities"),
    ("work_orders: {photo_types: [image/gif]}", "work_orders.photo_types"),
    ("work_orders: {categories: {plumbing: {take_minutes: 5}}}", "work_orders.categories.plumbing.take_minutes"),
])
def test_config_errors_name_the_key(tmp_path: Path, yaml: str, key: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"site_file: site.yaml\n{yaml}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path, GatewayConfig)


def test_escalation_of_orders_on_the_alert_ladder(orders: WorkOrders) -> None:
    policy = EscalationPolicy(EscalationConfig(levels=[[], [], []]))  # top level 2
    untaken = orders.create(room="A-204", text="x", by="guard").order  # take by 06:00 + 2 h, done by 06:00 + 24 h
    assert policy.due_work_order(untaken, T0 + timedelta(hours=2) - timedelta(seconds=1)) is None
    step = policy.due_work_order(untaken, T0 + timedelta(hours=2))
    assert step is not None and (step.reason, step.message) == ("not_taken", "not taken within 2 h: escalated to level 1")
    [change] = orders.escalate(lambda o: policy.due_work_order(o, T0 + timedelta(hours=2)), T0 + timedelta(hours=2))
    assert change.order.escalation_level == 1
    assert orders.escalate(lambda o: policy.due_work_order(o, T0 + timedelta(hours=2)), T0 + timedelta(hours=2)) == []  # once
    level1 = orders.get(untaken.id)
    # the next rung gets the full 2 h again: 08:00 + 2 h = 10:00
    assert policy.due_work_order(level1, T0 + timedelta(hours=4) - timedelta(seconds=1)) is None
    assert policy.due_work_order(level1, T0 + timedelta(hours=4)) is not None
    taken = orders.act(untaken.id, "take", "desk").order  # taken at 06:00 (the manual clock did not move)
    step = policy.due_work_order(taken, T0 + timedelta(hours=24))  # the 24-hour promise from creation
    assert step is not None and step.reason == "not_resolved"
    done = orders.act(untaken.id, "done", "desk").order
    assert policy.due_work_order(done, T0 + timedelta(days=30)) is None
    off = EscalationPolicy(EscalationConfig(enabled=False))
    assert off.due_work_order(orders.create(room="A", text="y", by="guard").order, T0 + timedelta(days=3)) is None


#: The alerts table as released before issue 18 (no assignment columns).
_OLD_ALERTS = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, rule TEXT NOT NULL, subject TEXT NOT NULL,
    state TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL, count INTEGER NOT NULL,
    opened_at TEXT NOT NULL, updated_at TEXT NOT NULL, resolved_at TEXT, acknowledged_by TEXT, acknowledged_at TEXT, note TEXT,
    escalation_level INTEGER NOT NULL DEFAULT 0, escalated_at TEXT, raised_at TEXT);
INSERT INTO alerts (site, rule, subject, state, severity, message, details, count, opened_at, updated_at)
    VALUES ('riverside', 'water_burst', 'flow-7', 'open', 'critical', 'burst', '{}', 1, '2026-11-17T22:00:00+00:00', '2026-11-17T22:00:00+00:00');
"""


def test_an_earlier_state_db_gains_tables_and_columns_idempotently(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD_ALERTS)
    db.close()
    for _ in range(2):  # opening twice changes nothing more
        store = StateStore(path, clock=ManualClock(T0))
        orders = WorkOrders(path, WorkOrderConfig(), "riverside", ManualClock(T0))
        [alert] = store.alerts()
        assert (alert.rule, alert.assigned_to, alert.assigned_at) == ("water_burst", None, None)
        store.close()
        orders.close()
    store = StateStore(path, clock=ManualClock(T0))
    orders = WorkOrders(path, WorkOrderConfig(), "riverside", ManualClock(T0))
    change = store.assign(alert.id, "plumber", "manager")
    assert (change.action, change.alert.assigned_to, change.alert.assigned_at) == ("assigned", "plumber", T0.isoformat())
    order = orders.create(room="store", text="burst", by="manager", category="plumbing", alert_id=alert.id).order
    assert orders.by_alerts([alert.id, 999]) == {alert.id: order.id}
    with pytest.raises(WorkOrderConflict):
        orders.create(room="store", text="again", by="manager", alert_id=alert.id)


def test_handing_over_or_assigning_an_untaken_order_gives_it_an_owner(orders: WorkOrders) -> None:
    order_id = orders.create(room="A-204", text="x", by="guard").order.id
    with pytest.raises(WorkOrderForbidden):
        orders.act(order_id, "hand_over", "desk", to="plumber")  # nobody's yet: only a manager may give it
    given = orders.act(order_id, "assign", "manager", to="plumber", may_act_for_others=True).order
    assert (given.state, given.owner, given.taken_at) == ("taken", "plumber", T0.isoformat())
    orders.act(order_id, "done", "plumber")
    reopened = orders.act(order_id, "reopen", "guard").order
    assert (reopened.state, reopened.owner) == ("reopened", "plumber")  # back to its owner
    handed = orders.act(order_id, "hand_over", "plumber", to="desk").order
    assert (handed.state, handed.owner) == ("taken", "desk")
    with pytest.raises(WorkOrderConflict):
        orders.act(order_id, "hand_over", "desk", to="desk")  # already theirs
