"""The partition lease (gateway/lease.py) against a real PostgreSQL: two contenders, a
holder whose session is terminated, and a standby waiting through a server outage."""

from __future__ import annotations

import configparser
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from gateway.config import GatewayConfig, LeaseConfig
from gateway.lease import Lease
from simulators.postgres import PostgresServer
from tests.support.wait import wait_for
from warden.config import ConfigError, load_config

CHECK = 0.2  # check_seconds of every lease here: short, so a loss is noticed in a fraction of a second


def lease_config(dsn: str, name: str) -> LeaseConfig:
    return LeaseConfig(dsn=dsn, name=name, check_seconds=CHECK)


def standby_lease(config: LeaseConfig) -> Lease:
    return Lease(config, config.name or "", on_lost=lambda: None)


@contextmanager
def contender(lease: Lease, stop: threading.Event) -> Iterator[Lease]:
    """`lease` waited for on a thread of its own (a standby); released at the end."""
    thread = threading.Thread(target=lease.acquire, args=(stop,), kwargs={"grace": False}, daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join(timeout=10)
        lease.release()


def holders(dsn: str, name: str) -> list[int]:
    """Backend pids of the sessions holding an advisory lock, for the lease's sessions (by application name)."""
    with psycopg.connect(dsn, autocommit=True) as db:
        rows = db.execute(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
            (f"warden lease {name}",),
        ).fetchall()
    return [pid for (pid,) in rows]


def test_of_two_contenders_exactly_one_holds_and_the_other_takes_over_on_release(postgres: PostgresServer) -> None:
    config = lease_config(postgres.dsn, f"p-{uuid.uuid4().hex[:8]}")
    first = Lease(config, config.name or "", on_lost=lambda: None)
    assert first.acquire(threading.Event(), grace=False)
    with contender(standby_lease(config), threading.Event()) as second:
        # The second tried at least once: its session is open, and it holds nothing.
        wait_for(lambda: second._conn is not None, timeout=10, what="the second contender's session")
        assert not second.held.wait(3 * CHECK)
        assert len(holders(postgres.dsn, config.name or "")) == 1
        first.release()
        assert second.held.wait(10), "the waiting contender did not take the released lease"
        assert len(holders(postgres.dsn, config.name or "")) == 1


def test_a_holder_whose_session_is_terminated_learns_within_check_seconds_and_the_standby_takes_it(
    postgres: PostgresServer,
) -> None:
    config = lease_config(postgres.dsn, f"p-{uuid.uuid4().hex[:8]}")
    lost = threading.Event()
    holder = Lease(config, config.name or "", on_lost=lost.set)
    assert holder.acquire(threading.Event(), grace=False)
    with contender(standby_lease(config), threading.Event()) as standby:
        wait_for(lambda: standby._conn is not None, timeout=10, what="the standby's session")
        [pid] = holders(postgres.dsn, config.name or "")
        with psycopg.connect(postgres.dsn, autocommit=True) as db:
            ended = time.monotonic()
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert lost.wait(10)
        noticed = time.monotonic() - ended
        # The next check (at most CHECK = 0.2 s away) fails at once on the closed session;
        # 0.3 s more for a loaded machine's thread scheduling.
        assert noticed <= CHECK + 0.3, noticed
        assert holder.lost.is_set() and not holder.held.is_set()
        assert standby.held.wait(10), "the standby did not take the lease the holder lost"
        assert len(holders(postgres.dsn, config.name or "")) == 1
    holder.release()


def test_with_postgresql_down_a_standby_waits_logging_once_then_takes_the_lease(
    private_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.lease")
    config = lease_config(private_postgres.dsn, "p-outage")
    private_postgres.stop()
    tries: list[float] = []
    standby = standby_lease(config)
    connect = standby._connect

    def counted() -> psycopg.Connection[tuple[object, ...]]:
        tries.append(time.monotonic())
        return connect()

    standby._connect = counted  # type: ignore[method-assign]
    with contender(standby, threading.Event()):
        wait_for(lambda: len(tries) >= 4, timeout=20, what="the standby trying several times")
        assert not standby.held.is_set()
        unreachable = [r for r in caplog.records if r.getMessage().startswith("PostgreSQL unreachable")]
        assert len(unreachable) == 1, [r.getMessage() for r in caplog.records]  # once per outage, not per try
        private_postgres.start()
        assert standby.held.wait(20), "the standby did not take the lease once PostgreSQL was back"
        assert holders(private_postgres.dsn, "p-outage") != []
    messages = [r.getMessage() for r in caplog.records]
    assert "PostgreSQL reachable again" in messages and "lease taken" in messages


def test_the_dsn_password_is_never_logged(postgres: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.lease")
    secret = "pw-" + uuid.uuid4().hex  # trust authentication accepts any password
    dsn = postgres.dsn.replace("warden@", f"warden:{secret}@")
    lease = Lease(lease_config(dsn, f"p-{uuid.uuid4().hex[:8]}"), "pw", on_lost=lambda: None)
    assert lease.acquire(threading.Event(), grace=False)
    lease.release()
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "lease taken" in logged and str(postgres.port) in logged
    assert secret not in logged
    assert secret not in repr(lease.config)


def test_a_lease_section_is_read_and_a_wrong_dsn_names_its_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("site_file: site.yaml\nlease:\n  dsn: postgresql://w@db/warden\n  check_seconds: 0.5\n")
    config = load_config(path, GatewayConfig)
    assert config.lease is not None and (config.lease.name, config.lease.check_seconds) == (None, 0.5)
    path.write_text("site_file: site.yaml\nlease:\n  dsn: mysql://w@db/warden\n")
    with pytest.raises(ConfigError, match=r"lease\.dsn"):
        load_config(path, GatewayConfig)


def test_the_gateway_unit_restarts_a_gateway_that_lost_its_lease() -> None:
    """A fenced holder exits with 3 (gateway.lease.LEASE_LOST_EXIT) and must come back as a standby."""
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "warden-gateway.service")
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert "3" not in service.get("RestartPreventExitStatus", "").split()
