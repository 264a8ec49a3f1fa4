"""Moving a gateway's state from its SQLite file into PostgreSQL (`warden state copy`), for a
campus that started on one machine and joins a district (docs/scale.md).

Every table of every module that keeps state in state.db is copied, ids kept, so alerts
keep their history, work orders their timeline and the outbox its rows. The schemas are
the modules' own: each module is opened on the source (its migrations bring an old file up
to date) and on the target (its CREATE TABLEs), exactly as a gateway starting there would;
only the rows are this module's business. They are copied in one transaction (all or
nothing; an interrupted copy leaves at most the empty tables a gateway's start makes),
streamed in batches with COPY, counted again before the commit, and each identity is then
set past the highest id SQLite ever gave (`sqlite_sequence`), so new rows get fresh ids.

Refused, before anything is written: a source that is no warden state file, or is in use
(SQLite's lock); an unreachable target; a target already holding warden state (unless
`replace`); a gateway holding the partition's lease, which the copy then holds itself so
no standby starts on a half-made state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from gateway import db as engines
from gateway import notify, report_schedule, statistics, workorders
from gateway import store as state_store
from gateway.lease import lease_key, where
from gateway.store import _no_nul as no_nul  # PostgreSQL text refuses NUL: written as the store writes it

#: Every table of the state database, by owning module, parents before children (foreign keys).
STATE_TABLES: tuple[str, ...] = (
    state_store.TABLES + statistics.TABLES + workorders.TABLES + notify.OUTBOX_TABLES + report_schedule.TABLES
)

#: Tables every warden state file has had since the first release: what tells one from any SQLite file.
_SIGNATURE = ("alerts", "seen_events")


class StateCopyError(Exception):
    """Why the copy was refused or failed; the message names what is wrong."""


class NeedsSite(StateCopyError):
    """The file's statistics predate sites (issue 21): the site they belong to must be given."""


class TargetHoldsState(StateCopyError):
    """The target has rows in warden tables (`tables`); `replace` overwrites them."""

    def __init__(self, server: str, tables: list[str]) -> None:
        super().__init__(f"{server} already holds warden state (rows in {', '.join(tables)})")
        self.tables = tables


@dataclass(frozen=True)
class LeaseTarget:
    """The partition's lease (gateway/lease.py): where it is taken and its name."""

    dsn: str
    name: str


@dataclass(frozen=True)
class TableCopied:
    """One table as copied and counted again in PostgreSQL (what `warden state copy` prints)."""

    table: str
    rows: int
    next_id: int | None  # the id PostgreSQL gives the next new row; None: the table has no generated id


@dataclass(frozen=True)
class SiteMigration:
    """What a file from before issue 21 needs to be brought up to date, as the gateway passes it:
    `site` owns its unsited statistics; `scoped`: the gateway serves several sites."""

    site: str | None = None
    scoped: bool = False


def copy_state(source: Path, target: str, *, sites: SiteMigration = SiteMigration(), lease: LeaseTarget | None = None,
               replace: bool = False, batch_rows: int = 2000,
               progress: Callable[[TableCopied], None] | None = None) -> list[TableCopied]:
    """Copy the SQLite state file `source` into the PostgreSQL database `target` (a URL); each
    table's count as copied and checked, in STATE_TABLES' order. Raises StateCopyError."""
    server = _describe(target)
    check_source(source)
    with _connect(target, server) as pg, _holding_lease(lease):
        if not replace:
            _refuse_held_state(pg, server)
        open_modules(source, sites, None)  # the modules' own migrations bring an old file up to date
        try:
            open_modules(target, sites, source.parent)  # and make the target's tables
        except psycopg.Error as exc:
            raise StateCopyError(f"{server}: the tables could not be made: {str(exc).strip()}") from exc
        reader = sqlite3.connect(source, isolation_level=None)
        try:
            return _copy_rows(reader, pg, server, replace, batch_rows, progress or (lambda _: None))
        finally:
            reader.close()


def check_source(source: Path) -> None:
    """Refuse a source that is missing, unreadable, not a warden state file, in use by another
    connection (a running gateway), or holding rule-journal entries of a release before bytes."""
    if not source.is_file():
        raise StateCopyError(f"{source}: no such file")
    try:
        db = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, timeout=0)  # a wrong file stays untouched
    except sqlite3.Error as exc:
        raise StateCopyError(f"{source}: cannot be opened: {exc}") from exc
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        journal_text = "rule_journal" in tables and db.execute(
            "SELECT EXISTS (SELECT 1 FROM rule_journal WHERE typeof(entry) = 'text')").fetchone()[0]
    except sqlite3.Error as exc:  # "file is not a database", a permission refused
        raise StateCopyError(f"{source}: not readable as a SQLite database: {exc}") from exc
    finally:
        db.close()
    missing = [name for name in _SIGNATURE if name not in tables]
    if missing:
        raise StateCopyError(f"{source}: not a warden state file (no {', '.join(missing)} table)")
    _refuse_in_use(source)
    if journal_text:  # such an entry is text JSON; in BYTEA it would replay as a bytes entry, wrongly
        raise StateCopyError(f"{source}: the rule journal holds entries of an earlier release; start the gateway "
                             "on it once and stop it cleanly (it snapshots its rules, which empties the journal)")


def _refuse_in_use(source: Path) -> None:
    """In WAL mode (the gateway's) every open connection holds a shared lock on the file, so
    taking it exclusively fails while any other connection, in any process, is open."""
    db = sqlite3.connect(source, isolation_level=None, timeout=0)
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise StateCopyError(f"{source}: in use by another process ({exc}); stop the gateway first") from exc
    finally:
        db.close()


def open_modules(state_db: str | Path, sites: SiteMigration, photo_dir: Path | None) -> None:
    """Open each state module on `state_db` as Gateway.__init__ does: its tables made, an old
    file migrated. `photo_dir`: the work orders' (only their rows are touched here)."""
    store = state_store.StateStore(state_db)
    try:
        store.read(lambda db: statistics.create_schema(db, sites.site))
        store.read(lambda db: report_schedule.create_schema(db, None if sites.scoped else sites.site))
    except ValueError as exc:  # statistics from before sites, and no site given
        raise NeedsSite(f"{state_db}: {exc}") from exc
    finally:
        store.close()
    workorders.WorkOrders(state_db, workorders.WorkOrderConfig(photo_dir=photo_dir), sites.site or "").close()
    notify.Outbox(state_db).close()


@contextmanager
def _connect(target: str, server: str) -> Iterator[psycopg.Connection[Any]]:
    try:
        conn = psycopg.connect(target, connect_timeout=10)
    except psycopg.Error as exc:
        raise StateCopyError(f"{server}: unreachable: {str(exc).strip()}") from exc
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def _holding_lease(lease: LeaseTarget | None) -> Iterator[None]:
    """Refuse if a gateway holds the lease; else hold it for the copy, so no standby starts meanwhile."""
    if lease is None:
        yield
        return
    server = _describe(lease.dsn)
    with _connect(lease.dsn, server) as conn:
        conn.autocommit = True
        taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (lease_key(lease.name),)).fetchone()
        if not (taken and taken[0]):
            raise StateCopyError(f"a gateway holds the lease {lease.name!r} on {server}; stop it (and its standbys) first")
        yield  # closing the session releases it


def _refuse_held_state(pg: psycopg.Connection[Any], server: str) -> None:
    held = _tables_with_rows(pg)
    pg.rollback()
    if held:
        raise TargetHoldsState(server, held)


def _tables_with_rows(pg: psycopg.Connection[Any]) -> list[str]:
    held = []
    for table in STATE_TABLES:
        if pg.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
            if pg.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))).fetchone()[0]:
                held.append(table)
    return held


def _copy_rows(reader: sqlite3.Connection, pg: psycopg.Connection[Any], server: str, replace: bool, batch_rows: int,
               progress: Callable[[TableCopied], None]) -> list[TableCopied]:
    """All tables in one PostgreSQL transaction, read from one SQLite snapshot."""
    copied: list[TableCopied] = []
    reader.execute("BEGIN")  # one snapshot of the file for every table
    try:
        with pg.transaction():
            pg.execute("SELECT pg_advisory_xact_lock(%s)", (engines.WRITE_LOCK_KEY,))  # as the store's writes
            held = _tables_with_rows(pg)
            if held and not replace:  # a gateway wrote since the first look
                raise TargetHoldsState(server, held)
            if held:
                pg.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, STATE_TABLES))))
            for table in STATE_TABLES:
                done = _copy_table(reader, pg, table, batch_rows)
                copied.append(done)
                progress(done)
    except psycopg.Error as exc:
        raise StateCopyError(f"{server}: the copy failed and was rolled back: {str(exc).strip()}") from exc
    finally:
        reader.execute("ROLLBACK")
    return copied


def _copy_table(reader: sqlite3.Connection, pg: psycopg.Connection[Any], table: str, batch_rows: int) -> TableCopied:
    """Stream one table's rows by COPY, `batch_rows` in memory at a time; check the count; set its identity."""
    columns = [row[1] for row in reader.execute(f"PRAGMA table_info({table})")]
    types = dict(pg.execute("SELECT column_name, data_type FROM information_schema.columns"
                            " WHERE table_schema = current_schema() AND table_name = %s", (table,)).fetchall())
    if set(columns) != set(types):
        raise StateCopyError(f"{table}: columns differ between the file ({', '.join(sorted(columns))}) and "
                             f"PostgreSQL ({', '.join(sorted(types))})")
    expected = reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    fix = [_converter(types[name]) for name in columns]
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    rows = reader.execute(f"SELECT {', '.join(columns)} FROM {table}")
    written = 0
    with pg.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), names)) as copy:
        while batch := rows.fetchmany(batch_rows):
            for row in batch:
                copy.write_row([f(value) for f, value in zip(fix, row)])
            written += len(batch)
    counted = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    if not expected == written == counted:
        raise StateCopyError(f"{table}: {expected} rows in the file, {written} read, {counted} in PostgreSQL")
    return TableCopied(table, counted, _reset_identity(reader, pg, table))


def _converter(pg_type: str) -> Callable[[Any], Any]:
    """SQLite keeps any value in any column; PostgreSQL's types are strict."""
    if pg_type == "bytea":
        return lambda value: value.encode() if isinstance(value, str) else value
    if pg_type == "text":
        return lambda value: no_nul(value) if isinstance(value, str) else value
    return lambda value: value


def _reset_identity(reader: sqlite3.Connection, pg: psycopg.Connection[Any], table: str) -> int | None:
    """Set the table's identity past its highest id, and past the highest SQLite ever gave
    (AUTOINCREMENT's `sqlite_sequence`: a deleted outbox row's id is not given again); the next id."""
    found = pg.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                       " AND table_name = %s AND is_identity = 'YES'", (table,)).fetchone()
    if found is None:
        return None
    column = found[0]
    highest = pg.execute(sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
        sql.Identifier(column), sql.Identifier(table))).fetchone()[0]
    if reader.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        given = reader.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        highest = max(highest, given[0] if given else 0)
    sequence = pg.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()[0]
    pg.execute("SELECT setval(%s, %s, %s)", (sequence, max(highest, 1), highest > 0))
    return int(highest) + 1


def _describe(dsn: str) -> str:
    """A PostgreSQL server and database for messages: never its password (gateway/lease.py where)."""
    try:
        parts = where(dsn)
    except psycopg.Error:
        return "the PostgreSQL URL"
    return f"PostgreSQL {parts.get('host', '')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"
