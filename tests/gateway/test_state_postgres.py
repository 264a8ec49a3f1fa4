"""State in PostgreSQL (issue 21): the report schedule on both engines, the one setting a
PostgreSQL state needs, and a real gateway on the real Mosquitto keeping its alerts in
a real PostgreSQL database, read back from it with a connection of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from gateway.api import ApiServer, create_app
from gateway.auth import hash_token
from gateway.report_schedule import Made, ReportScheduler, ReportSendConfig, archive_list, connections
from gateway.service import Gateway
from gateway.store import StateStore
from gateway.workorders import WorkOrderConfig, WorkOrders
from simulators.postgres import PostgresServer
from tests.gateway.alerting import SITE, START, door, publish
from tests.support.gateway_config import local_gateway_config
from tests.support.state_db import drop_database, fresh_database, state_db  # noqa: F401  (the fixture: once per engine)
from tests.support.wait import wait_for
from warden.clock import ManualClock
from warden.config import BrokerConfig
from warden.documents import ConfigError
from warden.events import DoorAction

MADE_AT = datetime(2026, 11, 18, 7, 5, tzinfo=timezone.utc)
DESK_TOKEN = "wdn_test-desk-0123456789abcdefghijklmnopqrstuvwx"


def test_the_report_schedule_makes_once_and_retries_a_failed_send(state_db: str | Path, tmp_path: Path) -> None:
    StateStore(state_db).close()
    tries: list[str] = []

    def send(made: Made, key: str) -> None:
        tries.append(key)
        if len(tries) == 1:
            raise OSError("receiver down")

    def make(kind: str, label: str) -> Made:
        folder = tmp_path / label
        folder.mkdir()
        (folder / "report.json").write_text("{}", encoding="utf-8")
        (folder / "report.html").write_text("<p>day</p>", encoding="utf-8")
        return Made(kind, label, folder, "<p>day</p>", {})

    config = ReportSendConfig(daily_at="08:05", sinks=["office"], archive_dir=tmp_path)
    scheduler = ReportScheduler(connections(state_db), config, "riverside", make, {"office": send})
    made = scheduler.run_due([("daily", "2026-11-17")], MADE_AT)
    again = scheduler.run_due([("daily", "2026-11-17")], MADE_AT)  # archived already: not made twice
    assert [m.label for m in made] == ["2026-11-17"] and again == []
    assert tries == ["report-riverside-daily-2026-11-17-office"] * 2  # failed once, retried with the same key
    assert scheduler.pending() == 0
    store = StateStore(state_db)
    try:
        assert store.read(lambda db: archive_list(db, ["riverside"])) == [
            {"kind": "daily", "label": "2026-11-17", "site": "riverside", "made_at": MADE_AT.isoformat()}]
    finally:
        store.close()


def test_work_orders_on_postgresql_need_a_photo_folder(postgres: PostgresServer) -> None:
    url = fresh_database(postgres, "state_photo_dir")
    try:
        StateStore(url).close()
        with pytest.raises(ConfigError, match=r"work_orders\.photo_dir"):
            WorkOrders(url, WorkOrderConfig(), "riverside", ManualClock(START))
    finally:
        drop_database(postgres, "state_photo_dir")


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    yield fresh_database(postgres, "state_end_to_end")
    drop_database(postgres, "state_end_to_end")


def test_a_gateway_on_postgresql_state_opens_and_acknowledges_through_the_api(
    broker_config: BrokerConfig, tmp_path: Path, database: str,
) -> None:
    site_text = yaml.safe_dump(SITE.model_dump(mode="json", exclude_none=True))
    (tmp_path / "site.yaml").write_text(site_text, encoding="utf-8")
    config = local_gateway_config(
        broker_config, tmp_path, state_db=database,
        rules={"deadman": {"enabled": False}},
        work_orders={"photo_dir": str(tmp_path / "photos")},
        report={"send": {"daily_at": "07:00", "archive_dir": str(tmp_path / "reports")}},  # its scheduler's sessions too
        api={"host": "127.0.0.1", "port": 0, "tokens": [{"name": "facilities-desk", "role": "manager",
                                                          "sha256": hash_token(DESK_TOKEN)}]},
    )  # fmt: skip
    gateway = Gateway(config, SITE, ManualClock(START))
    gateway.start()
    api = ApiServer(create_app(gateway), "127.0.0.1", 0)
    try:
        assert gateway.subscribed.wait(10), "gateway did not subscribe"
        api.start()
        held = door(START, DoorAction.HELD_OPEN)  # a door held open raises a warning at once
        publish(broker_config, held)
        assert gateway.wait_until(lambda: bool(gateway.store.alerts(rule="door_held_open")), 10), "no alert"
        [alert] = gateway.store.alerts(rule="door_held_open")
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {DESK_TOKEN}"}, timeout=10) as client:
            answer = client.post(f"/api/alerts/{alert.id}/acknowledge", json={"note": "on my way"})
        assert answer.status_code == 200, answer.text
    finally:
        api.stop()
        gateway.stop()
    with psycopg.connect(database, autocommit=True) as db:  # the rows, as PostgreSQL holds them
        # A stopped gateway leaves no session of its own behind (store, work orders, outbox, reports).
        # A closed session's server process leaves pg_stat_activity a moment after the client
        # hung up; a session left open never does.
        def others() -> int:
            db.execute("SELECT pg_stat_clear_snapshot()")  # each look sees the activity as it is now
            row = db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                             " AND pid <> pg_backend_pid()").fetchone()
            return int(row[0]) if row else -1
        wait_for(lambda: others() == 0, timeout=5, what="no session of the stopped gateway left")
        rows = db.execute("SELECT rule, subject, state, acknowledged_by, note FROM alerts").fetchall()
        steps = db.execute("SELECT action FROM alert_history ORDER BY id").fetchall()
        seen = db.execute("SELECT count(*) FROM seen_events WHERE id = %s", (held.id,)).fetchone()
        tables = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    assert rows == [("door_held_open", "gate-main", "acknowledged", "facilities-desk", "on my way")]
    assert steps == [("opened",), ("acknowledged",)]
    assert seen == (1,)  # the event's id, committed with the alert
    assert {"statistics_hour", "work_orders", "notification_outbox", "rule_state"} <= tables  # nothing left in a file
    assert not (tmp_path / "state.db").exists()


def test_the_store_carries_on_after_a_postgresql_restart(private_postgres: PostgresServer) -> None:
    store = StateStore(private_postgres.dsn, clock=ManualClock(START))
    try:
        store.commit_batch(["before"], [], {"rules": 1})
        private_postgres.restart()  # every session is cut
        with pytest.raises(psycopg.OperationalError):
            store.commit_batch(["during"], [], None)  # the batch that met the break fails whole (the gateway retries)
        store.commit_batch(["during"], [], None)  # the retry: a new session
        assert store.unseen(["before", "during", "never"]) == {"never"} and store.rule_snapshot() == {"rules": 1}
    finally:
        store.close()
