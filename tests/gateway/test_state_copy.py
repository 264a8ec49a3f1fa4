"""Moving a campus's SQLite state into PostgreSQL (gateway/state_copy.py): a real gateway on
the real Mosquitto makes the SQLite state, the copy moves it into a real PostgreSQL, and a
gateway started on the copy serves the same alerts, work orders, statistics, outbox and rule
state, giving new rows fresh ids. An old file is migrated by the modules first, and each
refusal leaves both sides as they were.

Expected values are the scenario's facts, written down by hand next to each assert."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import yaml

from gateway import statistics
from gateway.config import GatewayConfig, LeaseConfig
from gateway.lease import Lease, lease_key
from gateway.service import Gateway
from gateway.state_copy import STATE_TABLES, LeaseTarget, SiteMigration, StateCopyError, TableCopied, TargetHoldsState, copy_state
from gateway.store import StateStore
from simulators.broker import free_port
from simulators.postgres import PostgresServer
from tests.gateway.alerting import SITE_ID, START, door, publish, webhook
from tests.gateway.test_shared_device_ids import FIRST, old_database
from tests.support.gateway_config import local_gateway_config
from tests.support.receivers import WebhookReceiver
from tests.support.state_db import drop_database, fresh_database
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import DoorAction, Reading, encode_events, stable_event_id
from warden.mqtt import make_client

#: The alerting tests' site, with a temperature probe beside the gate controller.
SITE = SiteConfig.model_validate({
    "id": SITE_ID, "timezone": "Europe/Berlin",
    "buildings": [{"id": "A", "rooms": [{"id": "A-hall", "devices": ["ctl-gate", "t-1"]}]}],
})  # fmt: skip

#: The temperatures t-1 reports at 21:00, 21:15 and 21:30 UTC (exact in binary floats).
TEMPERATURES = [(0, 4.0), (15, 4.5), (30, 5.25)]


def temperature(minute: int, value: float) -> Reading:
    at = START + timedelta(minutes=minute)
    return Reading(id=stable_event_id(SITE_ID, "t-1", "temperature", at.isoformat()), site=SITE_ID, device="t-1",
                   event_time=at, quantity="temperature", value=value, unit="°C")


def send(broker: BrokerConfig, payload: bytes) -> None:
    client = make_client(broker, f"test-raw-{id(payload)}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topics.events_topic(SITE_ID, "agent-a"), payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def config_on(broker: BrokerConfig, tmp_path: Path, state_db: str | Path, receiver: WebhookReceiver) -> GatewayConfig:
    """The campus's gateway; only state_db differs between its SQLite and PostgreSQL lives."""
    sink = webhook(receiver.url("/desk"), max_backoff_seconds=0.05, changes=["opened", "acknowledged", "resolved"])
    return local_gateway_config(
        broker, tmp_path, state_db=state_db, rules={"deadman": {"enabled": False}},
        alerts={"sinks": {"desk": sink}}, work_orders={"photo_dir": str(tmp_path / "work-order-photos")},
    )  # fmt: skip


def write_site(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(SITE.model_dump(mode="json", exclude_none=True)), encoding="utf-8")


@pytest.fixture
def target(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database of the test's own on the session's server."""
    name = f"copy_{request.node.name[:40].lower()}"
    yield fresh_database(postgres, name)
    drop_database(postgres, name)


def campus_night(broker: BrokerConfig, tmp_path: Path, receiver: WebhookReceiver) -> tuple[dict[str, object], list[str]]:
    """The SQLite campus: a door held open (acknowledged, then a work order taken for it), a door
    forced (resolved by the desk), three temperatures and one garbled message, with the desk's
    webhook down (503), so the six notifications wait in the outbox. Its rule snapshot and the
    ids of the events it saw."""
    receiver.respond("/desk", *[503] * 100_000)
    config = config_on(broker, tmp_path, tmp_path / "state.db", receiver)
    gateway = Gateway(config, SITE, ManualClock(START))
    gateway.start()
    held, forced = door(START, DoorAction.HELD_OPEN), door(START, DoorAction.FORCED, "gate-back")
    readings = [temperature(minute, value) for minute, value in TEMPERATURES]
    try:
        assert gateway.subscribed.wait(10), "gateway did not subscribe"
        publish(broker, held)
        assert gateway.wait_until(lambda: len(gateway.store.alerts()) == 1, 10), "no held-open alert"
        publish(broker, forced)  # after the first: the ids 1 and 2 are the test's to name
        send(broker, encode_events(readings))
        send(broker, b"\x00garbled")
        assert gateway.wait_until(lambda: len(gateway.store.alerts()) == 2 and gateway.events_stored >= 5
                                  and gateway.store.count("dead_letters") == 1, 10), "the night did not arrive"
        gateway.store.acknowledge(1, "facilities-desk", note="on my way")
        gateway.store.resolve(2, "facilities-desk", note="frame checked")
        order = gateway.work_orders.create(room="A-hall", text="door closer broken", by="guard", alert_id=1)
        gateway.work_orders.act(order.order.id, "take", "desk")
    finally:
        gateway.stop()
    store = StateStore(config.state_db)
    try:
        snapshot = store.rule_snapshot()
    finally:
        store.close()
    return snapshot, [held.id, forced.id, *(r.id for r in readings)]


def test_a_campus_moved_into_postgresql_carries_on_there(
    broker_config: BrokerConfig, tmp_path: Path, target: str, receiver: WebhookReceiver,
) -> None:
    write_site(tmp_path)
    snapshot, seen = campus_night(broker_config, tmp_path, receiver)
    copied = {t.table: (t.rows, t.next_id) for t in copy_state(tmp_path / "state.db", target, sites=SiteMigration(SITE_ID))}
    # Two alerts, each opened then acknowledged/resolved by the desk: 2 alerts, 4 history rows. Five events
    # seen (two doors, three readings); one garbled message. One work order, created then taken. Six
    # notifications: opened and acknowledged (held open), opened and resolved (forced), the order's created
    # ("opened") and taken ("acknowledged"). One statistics series (t-1) with one hour.
    assert {t: copied[t] for t in ("alerts", "alert_history", "seen_events", "dead_letters", "work_orders",
                                    "work_order_history", "notification_outbox", "statistics_series", "statistics_hour")} == {
        "alerts": (2, 3), "alert_history": (4, 5), "seen_events": (5, None), "dead_letters": (1, 2),
        "work_orders": (1, 2), "work_order_history": (2, 3), "notification_outbox": (6, 7),
        "statistics_series": (1, 2), "statistics_hour": (1, None)}  # fmt: skip
    assert list(copied) == list(STATE_TABLES) and copied["rule_state"] == (1, None)
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        made = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    assert made == set(STATE_TABLES)  # every table a gateway makes is copied (a module's new table joins STATE_TABLES)

    receiver.respond("/desk")  # the desk's webhook is back: the PostgreSQL gateway delivers what waited
    gateway = Gateway(config_on(broker_config, tmp_path, target, receiver), SITE, ManualClock(START + timedelta(hours=1)))
    gateway.start()
    try:
        assert gateway.subscribed.wait(10), "gateway did not subscribe"
        store = gateway.store
        alerts = [(a.id, a.rule, a.subject, a.state, a.severity, a.acknowledged_by, a.note) for a in store.alerts()]
        assert sorted(alerts) == [(1, "door_held_open", "gate-main", "acknowledged", "warning", "facilities-desk", "on my way"),
                                  (2, "door_forced", "gate-back", "resolved", "critical", None, "frame checked")]
        assert [(s["action"], s["state"]) for s in store.alert_history(1)] == [("opened", "open"), ("acknowledged", "acknowledged")]
        assert [(s["action"], s["state"]) for s in store.alert_history(2)] == [("opened", "open"), ("resolved", "resolved")]
        assert store.unseen([*seen, "never-sent"]) == {"never-sent"}
        [letter] = store.dead_letters()
        assert (letter["payload"], letter["size"]) == (b"\x00garbled", 8)  # bytes kept as bytes
        assert store.rule_snapshot() == snapshot and snapshot  # the rules resume where SQLite left them
        hours = store.read(lambda db: statistics.StatisticsReader(db, SITE_ID).hours(START, START + timedelta(hours=1), ["t-1"]))
        # 4.0, 4.5 and 5.25 °C in hour 21: n 3, total 13.75, lo 4.0, hi 5.25, first 4.0, last 5.25
        assert [(h.n, h.total, h.lo, h.hi, h.first, h.last) for h in hours] == [(3, 13.75, 4.0, 5.25, 4.0, 5.25)]
        [order] = gateway.work_orders.search()
        assert (order.id, order.alert_id, order.state, order.owner, order.requested_by) == (1, 1, "taken", "desk", "guard")
        assert [(h["action"], h["who"], h["to_state"]) for h in gateway.work_orders.history(1)] == [
            ("created", "guard", "new"), ("take", "desk", "taken")]
        delivered = lambda: [(p.json()["change"], p.json()["alert"]["rule"], p.json()["alert"]["id"])  # noqa: E731
                             for p in receiver.posts if p.status == 200]
        assert gateway.wait_until(lambda: len(delivered()) >= 6, 10), f"outbox not delivered: {delivered()}"
        # The outbox in the order it was written (both doors opened before the desk acted); the order's
        # notifications carry its id as the alert's.
        assert delivered() == [("opened", "door_held_open", 1), ("opened", "door_forced", 2),
                               ("acknowledged", "door_held_open", 1), ("resolved", "door_forced", 2),
                               ("opened", "work_order", 1), ("acknowledged", "work_order", 1)]

        publish(broker_config, door(START + timedelta(hours=1), DoorAction.HELD_OPEN, "gate-side"))
        assert gateway.wait_until(lambda: len(store.alerts()) == 3, 10), "no alert after the copy"
        new_alert = max(a.id for a in store.alerts())
        new_order = gateway.work_orders.create(room="A-hall", text="side door sticks", by="guard", alert_id=new_alert).order
        assert (new_alert, new_order.id) == (3, 2)  # after the copied 1-2 and 1: fresh ids, no collision
        steps = store.read(lambda db: [row[0] for row in db.execute("SELECT id FROM alert_history WHERE alert_id = 3")])
        assert steps == [5]  # after the copied history rows 1-4
    finally:
        gateway.stop()


# --------------------------------------------------------------------------- an old file

#: The first release's state tables (git b152b5b): seen ids with their arrival time, alerts
#: and history without the columns added since, and no journal, work orders or outbox.
FIRST_RELEASE = """
CREATE TABLE seen_events (id TEXT PRIMARY KEY, received_at TEXT NOT NULL);
CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, size INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, rule TEXT NOT NULL, subject TEXT NOT NULL,
    state TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL, count INTEGER NOT NULL,
    opened_at TEXT NOT NULL, updated_at TEXT NOT NULL, resolved_at TEXT,
    acknowledged_by TEXT, acknowledged_at TEXT, note TEXT);
CREATE TABLE alert_history (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER NOT NULL REFERENCES alerts(id),
    at TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL);
CREATE TABLE rule_state (id INTEGER PRIMARY KEY CHECK (id = 1), snapshot TEXT NOT NULL);
INSERT INTO seen_events VALUES ('kept-1', '2026-11-17T20:00:00+00:00');
INSERT INTO alerts (id, site, rule, subject, state, severity, message, details, count, opened_at, updated_at)
    VALUES (41, 'north', 'leak', 'A-101', 'open', 'warning', 'water flowing', '{}', 1,
            '2026-11-17T20:00:00+00:00', '2026-11-17T20:00:00+00:00');
INSERT INTO alert_history (alert_id, at, action, state, message, details)
    VALUES (41, '2026-11-17T20:00:00+00:00', 'opened', 'open', 'water flowing', '{}');
INSERT INTO rule_state VALUES (1, '{"old": true}');
INSERT INTO dead_letters (received_at, topic, payload, size, reason)
    VALUES ('2026-11-17T20:00:00+00:00', 'warden/v1/north/agent-a/events', x'00', 1, 'garbled');
INSERT INTO dead_letters SELECT id + 1, received_at, topic, payload, size, reason FROM dead_letters;
DELETE FROM dead_letters;
"""


def test_an_old_state_file_is_migrated_by_the_modules_and_then_copied(tmp_path: Path, target: str) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(FIRST_RELEASE)
    old_database(path)  # statistics and reports from before sites: series 7 with two hours, two archived reports
    copied = {t.table: (t.rows, t.next_id) for t in copy_state(path, target, sites=SiteMigration("north"))}
    assert (copied["alerts"], copied["alert_history"], copied["statistics_hour"]) == ((1, 42), (1, 2), (2, None))
    assert copied["dead_letters"] == (0, 3)  # ids 1 and 2 given, then pruned: the next is 3, as on SQLite
    store = StateStore(target)
    try:
        [alert] = store.alerts()
        # the columns added since the first release, with their defaults
        assert (alert.id, alert.rule, alert.escalation_level, alert.message_id, alert.params) == (41, "leak", 0, "", {})
        assert store.unseen(["kept-1", "new"]) == {"new"} and store.rule_snapshot() == {"old": True}
        rows = store.read(lambda db: statistics.StatisticsReader(db, "north").hours(FIRST, FIRST + timedelta(hours=2)))
        archive = store.read(lambda db: sorted(db.execute("SELECT label, site FROM report_archive").fetchall()))
    finally:
        store.close()
    assert [(r.series.id, r.first, r.last) for r in rows] == [(7, 1000.0, 1003.0), (7, 1004.0, 1007.0)]  # north's, by the site given
    assert [tuple(a) for a in archive] == [("2026-11-16", "north"), ("south/2026-11-16", "south")]


# --------------------------------------------------------------------------- refusals


def small_state(path: Path) -> None:
    """A state file the store made: two events seen, a rule snapshot."""
    store = StateStore(path, clock=ManualClock(START))
    try:
        store.commit_batch(["e1", "e2"], [], {"rules": 1})
    finally:
        store.close()


def table_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as db:
        found = db.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not (found and found[0]):
            return 0
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def test_a_target_holding_warden_state_is_refused_unless_replaced(tmp_path: Path, target: str) -> None:
    small_state(tmp_path / "state.db")
    other = StateStore(target)
    other.commit_batch(["other-campus"], [], {"theirs": 1})
    other.close()
    with pytest.raises(TargetHoldsState, match=r"already holds warden state \(rows in seen_events, rule_state\)"):
        copy_state(tmp_path / "state.db", target)
    assert table_rows(target, "seen_events") == 1  # untouched
    copy_state(tmp_path / "state.db", target, replace=True)
    store = StateStore(target)
    try:
        assert store.unseen(["e1", "e2", "other-campus"]) == {"other-campus"} and store.rule_snapshot() == {"rules": 1}
    finally:
        store.close()


def test_a_file_that_is_not_warden_state_is_refused_untouched(tmp_path: Path, target: str) -> None:
    text, other, missing = tmp_path / "notes.txt", tmp_path / "other.db", tmp_path / "absent.db"
    text.write_text("not a database at all, but long enough to have a header" * 4, encoding="utf-8")
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE alerts (id INTEGER)")  # one of the two tables every state file has
    with pytest.raises(StateCopyError, match="not readable as a SQLite database"):
        copy_state(text, target)
    with pytest.raises(StateCopyError, match=r"other\.db: not a warden state file \(no seen_events table\)"):
        copy_state(other, target)
    with pytest.raises(StateCopyError, match=r"absent\.db: no such file"):
        copy_state(missing, target)
    assert not missing.exists()
    with closing(sqlite3.connect(other)) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["alerts"]  # nothing migrated into it
    assert table_rows(target, "alerts") == 0 and table_rows(target, "rule_state") == 0


def test_an_unreachable_target_is_refused(tmp_path: Path) -> None:
    small_state(tmp_path / "state.db")
    port = free_port()  # nothing listens there
    with pytest.raises(StateCopyError, match=rf"PostgreSQL 127\.0\.0\.1:{port}/warden: unreachable") as refused:
        copy_state(tmp_path / "state.db", f"postgresql://warden:secret-pw@127.0.0.1:{port}/warden")
    assert "secret-pw" not in str(refused.value)  # the URL's password is never shown


def test_a_rule_journal_of_an_earlier_release_is_refused(tmp_path: Path, target: str) -> None:
    path = tmp_path / "state.db"
    small_state(path)
    with closing(sqlite3.connect(path)) as db, db:  # an entry as releases before byte journals wrote it: JSON text
        db.execute("INSERT INTO rule_journal (entry) VALUES ('{\"tick\": null, \"messages\": []}')")
    with pytest.raises(StateCopyError, match="the rule journal holds entries of an earlier release; start the gateway"):
        copy_state(path, target)
    assert table_rows(target, "rule_state") == 0


def test_a_source_a_running_gateway_holds_open_is_refused(tmp_path: Path, target: str) -> None:
    path = tmp_path / "state.db"
    small_state(path)
    holder = subprocess.Popen(  # another process with the store open, as a running gateway has
        [sys.executable, "-c", "import sys; from gateway.store import StateStore; s = StateStore(sys.argv[1]);"
         " s.unseen(['x']); print('open', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(StateCopyError, match=r"state\.db: in use by another process .*stop the gateway first"):
            copy_state(path, target)
    finally:
        holder.communicate("")  # its stdin closed: it exits
    assert table_rows(target, "seen_events") == 0
    copy_state(path, target)  # once it has stopped
    assert table_rows(target, "seen_events") == 2


def test_a_held_lease_is_refused_and_the_copy_holds_it_meanwhile(tmp_path: Path, target: str) -> None:
    small_state(tmp_path / "state.db")
    lease = Lease(LeaseConfig(dsn=target, check_seconds=0.5), "riverside-gw", on_lost=lambda: None)
    assert lease.acquire(threading.Event(), grace=False)
    try:
        with pytest.raises(StateCopyError, match=r"a gateway holds the lease 'riverside-gw' on PostgreSQL 127\.0\.0\.1:\d+/copy_"):
            copy_state(tmp_path / "state.db", target, lease=LeaseTarget(target, "riverside-gw"))
    finally:
        lease.release()
    assert table_rows(target, "seen_events") == 0
    standby_took: list[bool] = []

    def seen_by_standby(table: TableCopied) -> None:  # during the copy, a standby cannot take the lease
        if table.table == "seen_events":
            standby_took.append(takes_lease(target, "riverside-gw"))

    copy_state(tmp_path / "state.db", target, lease=LeaseTarget(target, "riverside-gw"), progress=seen_by_standby)
    assert standby_took == [False] and takes_lease(target, "riverside-gw")  # and it may once the copy is done


def takes_lease(url: str, name: str) -> bool:
    """Whether a standby could take the lease now (released again as its session closes)."""
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute("SELECT pg_try_advisory_lock(%s)", (lease_key(name),)).fetchone()
    return bool(row and row[0])
