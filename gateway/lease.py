"""A partition's lease (issue 21): a standby gateway waits for it, the holder serves.

The lease is a PostgreSQL session-level advisory lock (`pg_try_advisory_lock` on a stable
64-bit key from the lease's name) held on a dedicated connection: the server releases it
the moment the holder's session ends (the process killed, the server restarted, the
session terminated), with no expiry to tune and no clock to trust. TCP keepalives and
`tcp_user_timeout` bound how long a dead network can hide a dead session; every
`check_seconds` the holder asks the server whether it still holds the lock.

Fencing. The holder learns its lease is gone within `check_seconds` plus the connection's
timeout (`notice_seconds`). Then it must neither commit another batch nor send another
notification, so `fence_and_exit` ends the process at once with `os._exit(3)`: no final
snapshot, no flushed outbox, no acknowledgement of what the worker holds (the broker
redelivers it to the new holder; event ids make a copy harmless). A commit under way is a
SQLite or PostgreSQL transaction: all of it or none. Hooking into Gateway.stop() instead
would snapshot the rules and drain the notifier after the lease is gone, which is exactly
what must not happen; the process exit needs no change to gateway/service.py. Exit code
3 tells systemd (Restart=always) to start it again: as a standby.

The new holder waits `notice_seconds` after taking the lock before it loads the rule
state and takes the MQTT session, so a holder that lost its session but is still alive
has stopped by then. The DSN's password is never logged (only host, port, database, user).
A transaction-pooling PgBouncer would drop the session's lock: use a direct connection.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from typing import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gateway.config import GatewayConfig, LeaseConfig

log = logging.getLogger(__name__)

#: The exit code of a gateway that lost its lease (docs/gateway.md; systemd restarts it).
LEASE_LOST_EXIT = 3

#: Whether this session holds the advisory lock on a key (pg_locks splits the bigint key).
_HOLDS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
    " AND classid = ((%(key)s >> 32) & 4294967295)::oid AND objid = (%(key)s & 4294967295)::oid AND objsubid = 1"
)


def lease_key(name: str) -> int:
    """The advisory lock key of a lease: the first 8 bytes of SHA-256, as a signed bigint,
    the same in every process and release (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"warden-lease:{name}".encode()).digest()[:8], "big", signed=True)


def lease_name(config: GatewayConfig) -> str:
    """The lease's name: as configured, else the gateway's id (one lease per partition)."""
    assert config.lease is not None
    return config.lease.name or config.id


def where(dsn: str) -> dict[str, str]:
    """The server a DSN names, for the log: never its password."""
    parts = conninfo_to_dict(dsn)
    return {k: str(parts[k]) for k in ("host", "port", "dbname", "user") if parts.get(k)}


def fence_and_exit() -> None:
    """The lease is gone: stop everything at once (see the module docstring)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(LEASE_LOST_EXIT)


class Lease:
    """Take with acquire(); while held, a watcher thread checks the session every
    `check_seconds` and calls `on_lost` (once, from that thread) when it is gone."""

    def __init__(self, config: LeaseConfig, name: str, on_lost: Callable[[], None]) -> None:
        self.config = config
        self.name = name
        self.key = lease_key(name)
        self.on_lost = on_lost
        self.server = where(config.dsn)
        #: How long after its session ends the holder may still not know (one check's wait and timeout).
        self.notice_seconds = config.check_seconds + self._timeout_seconds
        self.held = threading.Event()
        self.lost = threading.Event()
        self._closing = threading.Event()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def _timeout_seconds(self) -> float:
        """How long one check (or connect) may take before the session counts as dead."""
        return max(1.0, 2 * self.config.check_seconds)

    # ------------------------------------------------------------------ taking it

    def acquire(self, stop: threading.Event, grace: bool = True) -> bool:
        """Wait until the lease is held (True) or `stop` is set (False). While PostgreSQL
        is unreachable, keep trying, logging once per outage. `grace`: then wait
        `notice_seconds`, so a former holder that is still alive has stopped."""
        waiting = unreachable = False
        while not stop.is_set():
            try:
                taken = self._try_lock()
            except psycopg.Error as exc:
                self._drop_connection()
                if not unreachable:
                    log.warning("PostgreSQL unreachable; the lease is tried again, quietly until it answers",
                                extra={"lease": self.name, **self.server, "error": str(exc).strip()})  # fmt: skip
                    unreachable = True
                    continue  # once more at once: a blip need not cost a whole check interval
                stop.wait(self.config.check_seconds)
                continue
            if unreachable:
                log.info("PostgreSQL reachable again", extra={"lease": self.name, **self.server})
                unreachable = False
            if taken:
                break
            if not waiting:
                log.info(f"standby: waiting for the lease of {self.name}", extra={"lease": self.name, **self.server})
                waiting = True
            stop.wait(self.config.check_seconds)
        else:
            self._drop_connection()
            return False
        self.held.set()
        self._watcher = threading.Thread(target=self._watch, name="gateway-lease", daemon=True)
        self._watcher.start()
        log.info("lease taken", extra={"lease": self.name, **self.server, "key": self.key,
                                       "starting_in_s": self.notice_seconds if grace else 0})  # fmt: skip
        if grace:
            stop.wait(self.notice_seconds)  # the watcher fences us meanwhile if the lease goes
        return not stop.is_set()

    def _try_lock(self) -> bool:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        return bool(row and row[0])

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A dedicated session: autocommit (no transaction holds anything but the lock), and
        keepalives and a user timeout on both ends, so a silent network ends the session
        within the timeout for the server (freeing the lock) and for us (we learn of it)."""
        timeout = self._timeout_seconds
        probes, user_ms = math.ceil(timeout), int(timeout * 1000)
        server = (f"-c tcp_keepalives_idle=1 -c tcp_keepalives_interval=1 -c tcp_keepalives_count={probes}"
                  f" -c tcp_user_timeout={user_ms}")  # fmt: skip
        return psycopg.connect(
            self.config.dsn, autocommit=True, connect_timeout=max(2, probes),  # libpq's least is 2 s
            keepalives=1, keepalives_idle=1, keepalives_interval=1, keepalives_count=probes, tcp_user_timeout=user_ms,
            options=server, application_name=f"warden lease {self.name}"[:63],
        )  # fmt: skip

    # ------------------------------------------------------------------ holding it

    def _watch(self) -> None:
        while not self._closing.wait(self.config.check_seconds):
            try:
                assert self._conn is not None
                row = self._conn.execute(_HOLDS, {"key": self.key}).fetchone()
                if row and row[0]:
                    continue
                reason = "the session no longer holds the lock"
            except psycopg.Error as exc:
                reason = str(exc).strip() or type(exc).__name__
            if self._closing.is_set():
                return  # our own release closed the connection
            self.held.clear()
            self.lost.set()
            log.error("lease lost: stopping at once, without committing or notifying anything more",
                      extra={"lease": self.name, **self.server, "reason": reason})  # fmt: skip
            self.on_lost()
            return

    def release(self) -> None:
        """Give the lease up (a clean stop): closing the session releases the lock."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self._timeout_seconds + self.config.check_seconds)
        self._drop_connection()
        if self.held.is_set():
            self.held.clear()
            log.info("lease released", extra={"lease": self.name, **self.server})

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass  # already broken: closing it is all that was left
            self._conn = None
