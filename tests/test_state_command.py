"""`warden state copy`, the installed command: a gateway's SQLite state, named by its config,
copied into a real PostgreSQL database with each table's rows printed; a second copy is
refused without --replace; options that are missing or wrong are named."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from gateway.store import StateStore
from gateway.workorders import WorkOrderConfig, WorkOrders
from simulators.postgres import PostgresServer
from tests.support.scripts import console_script
from tests.support.state_db import drop_database, fresh_database
from warden.clock import ManualClock

PLAIN = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
T0 = datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24  # the PNG signature and some bytes: a photo as the store checks it


@pytest.fixture
def target(postgres: PostgresServer) -> Iterator[str]:
    yield fresh_database(postgres, "state_command")
    drop_database(postgres, "state_command")


def campus(folder: Path) -> Path:
    """gateway.yaml (state_db data/state.db, beside it) and a state with two events seen, a rule
    snapshot, and one work order with a photo; the config file."""
    (folder / "site.yaml").write_text(yaml.safe_dump({"id": "riverside", "timezone": "Europe/Berlin", "buildings": [
        {"id": "A", "rooms": [{"id": "A-hall", "devices": ["ctl-gate"]}]}]}), encoding="utf-8")
    (folder / "gateway.yaml").write_text(yaml.safe_dump({"id": "riverside-gw", "site_file": "site.yaml",
                                                          "state_db": "data/state.db"}), encoding="utf-8")
    path = folder / "data" / "state.db"
    store = StateStore(path, clock=ManualClock(T0))
    store.commit_batch(["e1", "e2"], [], {"rules": 1})
    store.close()
    orders = WorkOrders(path, WorkOrderConfig(), "riverside", ManualClock(T0))
    order = orders.create(room="A-hall", text="door closer broken", by="guard").order
    orders.add_photo(order.id, PNG, "image/png", "guard")
    orders.close()
    return folder / "gateway.yaml"


def test_the_command_copies_a_configured_gateways_state_and_refuses_a_second_copy(tmp_path: Path, target: str) -> None:
    config = campus(tmp_path)
    command = [console_script("warden"), "state", "copy", "--config", str(config), "--to", target]
    done = subprocess.run(command, capture_output=True, text=True, env=PLAIN, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # Two ids seen, one snapshot, one order (next id 2) with its photo (next id 2); the order's timeline:
    # created, then the photo added. 2 + 1 + 1 + 1 + 2 = 7 rows in all.
    for line in ("seen_events: 2 rows", "rule_state: 1 rows", "work_orders: 1 rows, next id 2",
                 "work_order_photos: 1 rows, next id 2", "work_order_history: 2 rows, next id 3",
                 "alerts: 0 rows, next id 1", "copied 7 rows in 17 tables; every count checked in PostgreSQL",
                 f"1 work-order photos stay files in {tmp_path / 'data' / 'work-order-photos'}: "
                 "set work_orders.photo_dir to that folder"):
        assert line in lines, done.stdout
    again = subprocess.run(command, capture_output=True, text=True, env=PLAIN, timeout=120)
    assert again.returncode == 2
    assert "error: PostgreSQL 127.0.0.1:" in again.stderr and "/state_command already holds warden state (rows in seen_events, " \
        "rule_state, work_orders, work_order_history, work_order_photos); --replace overwrites it" in again.stderr, again.stderr
    assert again.stdout == ""
    replaced = subprocess.run([*command, "--replace"], capture_output=True, text=True, env=PLAIN, timeout=120)
    assert replaced.returncode == 0 and "copied 7 rows in 17 tables; every count checked in PostgreSQL" in replaced.stdout


def test_missing_or_wrong_options_are_named(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(app, ["state", "copy"], env=PLAIN)
    wrong_target = runner.invoke(app, ["state", "copy", "--from", str(tmp_path / "state.db"), "--to", "state2.db"], env=PLAIN)
    assert (nothing.exit_code, wrong_target.exit_code) == (2, 2)
    assert "--from: required (the SQLite state file), or a --config whose state_db is one" in nothing.output
    assert "--to: expected a postgresql:// URL, got 'state2.db'" in wrong_target.output
