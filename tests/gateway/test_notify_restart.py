"""No page twice across a PostgreSQL restart: the outbox on a real PostgreSQL, a real HTTP
receiver shaped as a group bot (it cannot drop a repeat), and the database stopped at the
exact moment between a send and its mark: the receiver holds its answer (`hold`) until the
test has stopped the server. Then the next holder of the partition delivers what is left,
on the same machine (its receipts journal) or on another one (the first machine's journal
replayed by its next process, or the claim's wait run out)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.bots import BotSink
from gateway.config import WebhookSinkConfig
from gateway.notify import NotifyMetrics, Outbox, QueuedSink, Receipts, WebhookSink, receipts_file, replay_receipts_meanwhile
from gateway.store import AlertChange
from simulators.postgres import PostgresServer
from tests.gateway.test_notify import change  # noqa: F401  (the fixture: one real alert's opening)
from tests.support.gateway_config import local_gateway_config
from tests.support.receivers import WebhookReceiver
from tests.support.wait import wait_for
from warden.config import BrokerConfig

BOT = "/bot"
HOOK = "/hook"
SINK = "duty-group"
MARK_FAILED = "notification outbox failed; retrying"


class Holder:
    """One gateway process's delivery of one sink: its outbox connection, its machine's receipts, its metrics."""

    def __init__(self, sink: BotSink | WebhookSink, config: WebhookSinkConfig, dsn: str, machine: Path,
                 unconfirmed_wait: float = 3600.0) -> None:
        self.outbox = Outbox(dsn)
        self.receipts = Receipts(machine / "notify-receipts.log")
        self.registry = CollectorRegistry()
        self.queued = QueuedSink(sink, config, NotifyMetrics(self.registry), self.outbox, self.receipts, unconfirmed_wait)

    def count(self, name: str) -> float:
        return self.registry.get_sample_value(f"warden_gateway_notifications_{name}_total", {"sink": SINK}) or 0.0

    def stop(self) -> None:
        self.queued.stop(drain_seconds=0)
        self.outbox.close()

    def drain(self, what: str) -> tuple[float, float]:
        """Start, wait until the outbox is empty, stop: (sent, sent again after a cut-short attempt)."""
        self.queued.start()
        wait_for(lambda: self.outbox.pending() == 0, timeout=10, what=what)
        self.stop()
        return self.count("sent"), self.count("unconfirmed")

    def claim_and_die(self, change: AlertChange) -> str:
        """Put `change`, claim it as an attempt would, and go (killed before any answer): its key."""
        self.queued.send(change)
        row = self.outbox.head(SINK)
        assert row is not None
        self.outbox.claim([row.id], self.receipts.id)
        self.outbox.close()
        return row.key


def bot_config(receiver: WebhookReceiver) -> WebhookSinkConfig:
    return WebhookSinkConfig(type="webhook", url=receiver.url(BOT), preset="wecom", backoff_seconds=0.01)


def bot(receiver: WebhookReceiver, dsn: str, machine: Path, unconfirmed_wait: float = 3600.0) -> Holder:
    """A WeCom group bot: its message carries no key a receiver could drop a repeat by."""
    config = bot_config(receiver)
    return Holder(BotSink(SINK, config), config, dsn, machine, unconfirmed_wait)


@pytest.fixture
def stopped_between_send_and_mark(
    caplog: pytest.LogCaptureFixture, change: AlertChange, receiver: WebhookReceiver,  # noqa: F811
    private_postgres: PostgresServer, tmp_path: Path,
) -> Iterator[None]:
    """Machine a's gateway sends `change` to the bot; the bot has it, and before it answers
    PostgreSQL is stopped; a's mark fails; a is stopped; PostgreSQL is started again."""
    caplog.set_level(logging.INFO, "gateway.notify")
    first = bot(receiver, private_postgres.dsn, tmp_path / "a")
    receiver.hold.clear()
    first.queued.send(change)
    first.queued.start()
    receiver.wait_for(1, BOT)  # the bot has the page: the group sees it
    private_postgres.stop()
    receiver.hold.set()  # only now the 200
    wait_for(lambda: any(r.message == MARK_FAILED for r in caplog.records), timeout=10, what="the mark failing")
    first.stop()
    private_postgres.start()
    yield


def test_a_page_sent_as_postgresql_stops_is_not_sent_again_by_the_restarted_gateway(
    stopped_between_send_and_mark: None, receiver: WebhookReceiver, private_postgres: PostgresServer, tmp_path: Path,
) -> None:
    again = bot(receiver, private_postgres.dsn, tmp_path / "a")  # machine a's next process
    counts = again.drain("the outbox emptied")
    # One change put, delivered once before the stop: 1 message at the bot, 0 sent again.
    assert len(receiver.received(BOT)) == 1
    assert counts == (0, 0)


def test_a_standby_on_another_machine_leaves_the_page_to_the_first_machines_receipt(
    stopped_between_send_and_mark: None, receiver: WebhookReceiver, private_postgres: PostgresServer, tmp_path: Path,
) -> None:
    standby = bot(receiver, private_postgres.dsn, tmp_path / "b")  # cannot read a's disk; waits an hour for a's word
    replay = replay_receipts_meanwhile(tmp_path / "a" / "notify-receipts.log", private_postgres.dsn, threading.Event())
    assert replay is not None  # a's next process, waiting for the lease, replays a's journal
    counts = standby.drain("a's receipt replayed")
    assert len(receiver.received(BOT)) == 1  # as above: sent once, by a
    assert counts == (0, 0)


def test_a_claim_no_receipt_settles_is_sent_after_the_wait_not_lost(
    change: AlertChange, receiver: WebhookReceiver, private_postgres: PostgresServer, tmp_path: Path,  # noqa: F811
) -> None:
    """Machine a claimed the page and died before it reached the bot (or while it did: nobody
    can tell); a never comes back. The standby sends it once `unconfirmed_wait` has run out."""
    bot(receiver, private_postgres.dsn, tmp_path / "a").claim_and_die(change)
    standby = bot(receiver, private_postgres.dsn, tmp_path / "b", unconfirmed_wait=0.5)
    counts = standby.drain("the page sent after the wait")
    # Nothing reached the bot before; one send after the wait: 1 message, counted as unconfirmed once.
    assert len(receiver.received(BOT)) == 1
    assert counts == (1, 1)


def test_a_webhook_that_drops_repeated_keys_does_not_wait_for_another_machines_claim(
    change: AlertChange, receiver: WebhookReceiver, private_postgres: PostgresServer, tmp_path: Path,  # noqa: F811
) -> None:
    """At least once, at once: a repeat costs its receiver nothing, a late page costs the duty."""
    config = WebhookSinkConfig(type="webhook", url=receiver.url(HOOK), backoff_seconds=0.01)
    key = Holder(WebhookSink(SINK, config), config, private_postgres.dsn, tmp_path / "a").claim_and_die(change)
    b = Holder(WebhookSink(SINK, config), config, private_postgres.dsn, tmp_path / "b")  # a bot would wait an hour
    counts = b.drain("the webhook's row gone")  # within 10 s, not an hour
    [post] = receiver.received(HOOK)
    assert post.headers["Idempotency-Key"] == key  # the key a's attempt used: the receiver drops a repeat
    assert counts == (1, 1)


def test_the_receipts_journal_keeps_its_identity_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "notify-receipts.log"
    first = Receipts(path)
    first.record(["a" * 32, "b" * 32])
    with path.open("ab") as journal:
        journal.write(b"c" * 20)  # killed in the middle of a write: no receipt
    again = Receipts(path)
    again.record(["d" * 32])
    assert again.id == first.id and again.pending()
    forgotten: list[list[str]] = []
    assert again.settle(lambda keys: forgotten.append(keys) or len(keys)) == 3
    assert forgotten == [["a" * 32, "b" * 32, "d" * 32]]  # the torn "ccc..." line is no key
    assert not again.pending()


def test_an_outbox_of_an_earlier_release_gains_the_claim_columns(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notification_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL,"
                     " key TEXT NOT NULL UNIQUE, change TEXT NOT NULL, created_at REAL NOT NULL,"
                     " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT);")
    db.close()
    outbox = Outbox(path)
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(notification_outbox)")}
    outbox.close()
    assert {"claimed_by", "claimed_at"} <= columns


def test_the_journal_lives_beside_the_gateways_local_files(tmp_path: Path) -> None:
    """A SQLite state: beside it; a PostgreSQL state: beside the historian's file; or where configured."""
    broker = BrokerConfig(host="127.0.0.1", port=1883)
    sqlite_state = local_gateway_config(broker, tmp_path)
    pg_state = local_gateway_config(broker, tmp_path, state_db="postgresql://warden@127.0.0.1:5432/warden",
                                    historian={"type": "sqlite", "path": str(tmp_path / "hist" / "history.db")})
    configured = local_gateway_config(broker, tmp_path, alerts={"receipts_file": str(tmp_path / "disk" / "r.log")})
    assert receipts_file(sqlite_state) == tmp_path / "notify-receipts.log"
    assert receipts_file(pg_state) == tmp_path / "hist" / "notify-receipts.log"
    assert receipts_file(configured) == tmp_path / "disk" / "r.log"
