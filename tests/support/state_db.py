"""The state database a test runs against, once per engine: `sqlite` (a file in the test's
folder) and `postgres` (a database of the test's own on the session's PostgreSQL server,
so tests never see each other's rows). Import the fixture into a test module to use it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from simulators.postgres import PostgresServer

_numbers = itertools.count(1)


def fresh_database(server: PostgresServer, name: str) -> str:
    """Create the empty database `name` on `server`; its URL."""
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.dsn.rsplit("/", 1)[0] + "/" + name


def drop_database(server: PostgresServer, name: str) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def state_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    """A fresh state database: a path (SQLite) or a postgresql:// URL of a new database."""
    if request.param == "sqlite":
        yield tmp_path / "state.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"state_{next(_numbers)}"
    yield fresh_database(server, name)
    drop_database(server, name)
