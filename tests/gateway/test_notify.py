"""Notifications: the sinks against real receivers (HTTP server, aiosmtpd, Mosquitto),
retries, a receiver that hangs, routing, secrets kept out of the logs, and the outbox:
at least once across receiver outages and restarts, never twice for one change,
expiry and the bound on disk (issue 17, item 9)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway import db as engines
from gateway.config import SmtpSinkConfig, WebhookSinkConfig
from gateway.notify import Notifier, NotifyMetrics, Outbox, QueuedSink, Route, SmtpSink, WebhookSink, safe_target
from gateway.store import Alert, AlertChange, StateStore
from rules.alerts import AlertSignal, AlertState, Severity, SignalAction
from simulators.broker import free_port
from tests.gateway.alerting import (
    ALERTS_TOPIC,
    START,
    changes_on_topic,
    door,
    gateway_config,
    publish,
    start_gateway,
    wait_for_alert,
    webhook,
)
from tests.support.mqtt import Collector
from tests.support.receivers import SmtpReceiver, WebhookReceiver, self_signed_certificate
from tests.support.state_db import state_db  # noqa: F401  (the fixture: once per engine)
from tests.support.wait import wait_for
from warden.clock import ManualClock
from warden.events import DoorAction

SECRET_PATH = "/hooks/T0KEN-in-the-path"
SECRET_HEADER = "Bearer s3cret-header-token"
SECRET_PASSWORD = "s3cret-smtp-password"


@pytest.fixture
def change(tmp_path: Path) -> AlertChange:
    """A real alert, as the store hands it to the notifier."""
    store = StateStore(tmp_path / "state.db", ManualClock(START))
    signal = AlertSignal(
        "riverside", "water_burst", "meter-7", SignalAction.RAISE, START, Severity.WARNING,
        "Meter meter-7: 95 L/min for 6 min", {"l_per_min": 95.0, "litres": 570.0},
    )
    [opened] = store.commit_batch([], [signal], {})
    store.close()
    return opened


def counts(registry: CollectorRegistry) -> dict[str, float]:
    return {s.name + "|" + s.labels["sink"]: s.value for f in registry.collect() for s in f.samples if s.name.endswith("_total")}


@pytest.fixture
def outbox(state_db: str | Path) -> Iterator[Outbox]:
    """On SQLite and on PostgreSQL (tests/support/state_db.py)."""
    box = Outbox(state_db)
    yield box
    box.close()


def queued(sink: Any, config: Any, outbox: Outbox) -> tuple[QueuedSink, CollectorRegistry]:
    """A started QueuedSink on `outbox`, with its own metrics."""
    registry = CollectorRegistry()
    dispatcher = QueuedSink(sink, config, NotifyMetrics(registry), outbox)
    dispatcher.start()
    return dispatcher, registry


# --------------------------------------------------------------------------- webhook


def test_webhook_retries_a_500_then_delivers_once(receiver: WebhookReceiver, change: AlertChange, outbox: Outbox) -> None:
    receiver.respond("/ops", 500, 503)
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/ops"), headers={"Authorization": SECRET_HEADER}))
    dispatcher, registry = queued(WebhookSink("ops", config), config, outbox)
    dispatcher.send(change)
    posts = receiver.wait_for(3, "/ops")
    dispatcher.stop()

    assert [p.status for p in posts] == [500, 503, 200]
    assert len({p.headers["X-Warden-Delivery"] for p in posts}) == 1  # a receiver can drop a repeat
    assert {p.headers["Idempotency-Key"] for p in posts} == {p.json()["idempotency_key"] for p in posts} == {posts[0].headers["X-Warden-Delivery"]}
    assert posts[-1].headers["Authorization"] == SECRET_HEADER
    assert posts[-1].headers["Content-Type"] == "application/json"
    body = posts[-1].json()
    assert (body["change"], body["alert"]["rule"], body["alert"]["subject"]) == ("opened", "water_burst", "meter-7")
    assert body["alert"]["details"] == {"l_per_min": 95.0, "litres": 570.0}
    assert counts(registry) == {
        "warden_gateway_notifications_sent_total|ops": 1,
        "warden_gateway_notification_retries_total|ops": 2,
    }


def test_webhook_gives_up_at_once_on_a_4xx_and_after_retries_when_unreachable(
    receiver: WebhookReceiver, change: AlertChange, caplog: pytest.LogCaptureFixture, outbox: Outbox
) -> None:
    receiver.respond(SECRET_PATH, 404)
    refused = WebhookSinkConfig.model_validate(webhook(receiver.url(SECRET_PATH), headers={"Authorization": SECRET_HEADER}))
    unreachable = WebhookSinkConfig.model_validate(webhook(f"http://127.0.0.1:{free_port()}{SECRET_PATH}", retries=2, headers={"Authorization": SECRET_HEADER}))
    caplog.set_level(logging.DEBUG, logger="gateway.notify")
    first, registry_a = queued(WebhookSink("gone", refused), refused, outbox)
    second, registry_b = queued(WebhookSink("down", unreachable), unreachable, outbox)
    first.send(change)
    second.send(change)
    first.stop()
    second.stop()

    assert len(receiver.received(SECRET_PATH)) == 1  # a 404 is final: no retry
    assert counts(registry_a) == {"warden_gateway_notifications_failed_total|gone": 1}
    assert counts(registry_b) == {
        "warden_gateway_notifications_failed_total|down": 1,
        "warden_gateway_notification_retries_total|down": 2,
    }
    failures = [r for r in caplog.records if r.getMessage() == "notification failed"]
    assert sorted(r.error for r in failures) == ["ConnectError", "HTTP 404"]  # type: ignore[attr-defined]
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "T0KEN" not in logged and "s3cret" not in logged


def test_a_hung_receiver_never_blocks_the_sender(receiver: WebhookReceiver, change: AlertChange, outbox: Outbox) -> None:
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/slow"), queue_size=1, timeout_seconds=30))
    dispatcher, registry = queued(WebhookSink("slow", config), config, outbox)
    receiver.hold.clear()  # every request waits until released
    try:
        dispatcher.send(change)
        receiver.wait_for(1, "/slow")  # the dispatcher thread is stuck in that request
        began = time.monotonic()
        for _ in range(5):
            dispatcher.send(change)  # the newest waits (queue_size 1), the four before it are dropped
        assert time.monotonic() - began < 0.5
        assert outbox.pending("slow") == 2  # on disk: the one in flight + queue_size 1
    finally:
        receiver.hold.set()
    dispatcher.stop()
    # Issue 17: a change sent after stop is no longer dropped: it waits on disk for the
    # next start (the old assertion counted it as a fifth drop).
    dispatcher.send(change)
    assert outbox.pending("slow") == 1
    assert counts(registry) == {
        "warden_gateway_notifications_sent_total|slow": 2,  # the first and the newest of the five
        "warden_gateway_notifications_dropped_total|slow": 4,  # 5 sent while stuck - 1 kept
    }


def test_safe_target_keeps_secrets_out() -> None:
    assert safe_target("https://user:pw@hooks.example.org:8443/services/T0KEN?key=abc") == "https://hooks.example.org:8443"


# --------------------------------------------------------------------------- mail


def smtp_config(receiver: SmtpReceiver, **extra: Any) -> SmtpSinkConfig:
    return SmtpSinkConfig.model_validate(
        {"type": "smtp", "host": "127.0.0.1", "port": receiver.port, "sender": "warden@school.example",
         "to": ["caretaker@school.example", "head@school.example"], "backoff_seconds": 0.01, **extra}
    )


def test_mail_carries_subject_and_body(change: AlertChange, outbox: Outbox) -> None:
    server = SmtpReceiver()
    try:
        config = smtp_config(server)
        dispatcher, registry = queued(SmtpSink("mail", config), config, outbox)
        escalated = AlertChange("escalated", replace(change.alert, severity="critical", escalation_level=1),
                                "not acknowledged within 10 min: escalated to level 1")
        dispatcher.send(escalated)
        [mail] = server.wait_for(1)
        dispatcher.stop()
    finally:
        server.close()
    assert mail.subject == "[warden] CRITICAL escalated: water_burst meter-7 (riverside)"
    assert (mail.sender, mail.recipients) == ("warden@school.example", ["caretaker@school.example", "head@school.example"])
    lines = mail.body.splitlines()
    assert lines[0] == "Meter meter-7: 95 L/min for 6 min"
    assert "Change:     escalated - not acknowledged within 10 min: escalated to level 1" in lines
    assert f"Alert:      #{change.alert.id} water_burst / meter-7 at riverside" in lines
    assert "State:      open, severity critical, escalation level 1" in lines
    assert "  litres: 570.0" in lines
    assert counts(registry) == {"warden_gateway_notifications_sent_total|mail": 1}


def test_mail_over_starttls_with_login(
    tmp_path: Path, change: AlertChange, caplog: pytest.LogCaptureFixture, outbox: Outbox
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = SmtpReceiver(tls=(cert, key), credentials=("warden", SECRET_PASSWORD))
    caplog.set_level(logging.DEBUG, logger="gateway.notify")
    try:
        good = smtp_config(server, tls="starttls", tls_ca_file=str(cert), username="warden", password=SECRET_PASSWORD)
        wrong = smtp_config(server, tls="starttls", tls_ca_file=str(cert), username="warden", password="not-" + SECRET_PASSWORD)
        plain = smtp_config(server)  # the server insists on STARTTLS
        dispatchers = [queued(SmtpSink(name, c), c, outbox) for name, c in (("good", good), ("wrong", wrong), ("plain", plain))]
        for dispatcher, _ in dispatchers:
            dispatcher.send(change)
        [mail] = server.wait_for(1)
        for dispatcher, _ in dispatchers:
            dispatcher.stop()
    finally:
        server.close()
    assert mail.login == "warden"
    assert mail.subject == "[warden] WARNING opened: water_burst meter-7 (riverside)"
    assert counts(dispatchers[0][1]) == {"warden_gateway_notifications_sent_total|good": 1}
    assert counts(dispatchers[1][1]) == {"warden_gateway_notifications_failed_total|wrong": 1}  # 535: final, no retry
    assert counts(dispatchers[2][1])["warden_gateway_notifications_failed_total|plain"] == 1
    assert len(server.mails) == 1
    assert SECRET_PASSWORD not in caplog.text + " ".join(str(r.__dict__) for r in caplog.records)


def test_mail_over_implicit_tls_retries_a_temporary_refusal(tmp_path: Path, change: AlertChange, outbox: Outbox) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = SmtpReceiver(tls=(cert, key), implicit_tls=True, replies=("451 4.3.0 try again later",))
    try:
        config = smtp_config(server, tls="implicit", tls_ca_file=str(cert))
        dispatcher, registry = queued(SmtpSink("mail", config), config, outbox)
        dispatcher.send(change)
        server.wait_for(1)
        dispatcher.stop()
    finally:
        server.close()
    assert counts(registry) == {
        "warden_gateway_notifications_sent_total|mail": 1,
        "warden_gateway_notification_retries_total|mail": 1,
    }


# --------------------------------------------------------------------------- routing


def alert(**fields: Any) -> Alert:
    base: dict[str, Any] = dict(
        id=1, site="riverside", rule="door_held_open", subject="gate", state=AlertState.OPEN, severity="warning",
        message="", details={}, count=1, opened_at="", updated_at="", resolved_at=None, acknowledged_by=None,
        acknowledged_at=None, note=None,
    )
    return Alert(**{**base, **fields})


@pytest.mark.parametrize(
    ("route", "change", "accepted"),
    [
        (Route(), AlertChange("updated", alert()), True),
        (Route(min_level=1), AlertChange("opened", alert()), False),
        (Route(min_level=1), AlertChange("escalated", alert(escalation_level=1)), True),
        (Route(min_level=1), AlertChange("resolved", alert(escalation_level=2)), True),
        (Route(min_severity=Severity.CRITICAL), AlertChange("opened", alert()), False),
        (Route(min_severity=Severity.CRITICAL), AlertChange("escalated", alert(severity="critical")), True),
        (Route(rules=frozenset({"door_forced"})), AlertChange("opened", alert()), False),
        (Route(rules=frozenset({"door_forced"})), AlertChange("opened", alert(rule="door_forced")), True),
        (Route(changes=frozenset({"opened"})), AlertChange("updated", alert()), False),
    ],
)
def test_routes(route: Route, change: AlertChange, accepted: bool) -> None:
    assert route.accepts(change) is accepted


def test_gateway_routes_changes_to_mqtt_webhook_and_mail(broker_config, tmp_path: Path, receiver: WebhookReceiver) -> None:
    """MQTT gets every change; the security webhook only forced doors; mail only critical
    alerts. None of these sinks is in an escalation level, so each hears of every level."""
    mail = SmtpReceiver()
    alerts = {
        "sinks": {
            "security": webhook(receiver.url("/security"), rules=["door_forced"]),
            "mail": {"type": "smtp", "host": "127.0.0.1", "port": mail.port, "sender": "warden@school.example",
                     "to": ["security@school.example"], "min_severity": "critical"},
        }
    }
    gateway = start_gateway(gateway_config(broker_config, tmp_path, alerts), ManualClock(START))
    collector = Collector(broker_config, ALERTS_TOPIC)
    try:
        publish(broker_config, door(START, DoorAction.FORCED, "door-back"), door(START, DoorAction.HELD_OPEN, "gate-main"))
        messages = [collector.message(), collector.message()]
        held = wait_for_alert(gateway, "door_held_open")
        gateway.acknowledge(held, by="sam", note="closing it")
        acknowledged = json.loads(collector.message().payload)
    finally:
        collector.close()
        gateway.stop()  # drains the queues: what was routed has been delivered
        mail.close()
    assert sorted(changes_on_topic(messages)) == [("opened", "door_forced"), ("opened", "door_held_open")]
    assert (acknowledged["change"], acknowledged["note"]) == ("acknowledged", "acknowledged by sam: closing it")
    assert acknowledged["alert"]["acknowledged_by"] == "sam"
    assert acknowledged["alert"]["acknowledged_at"] == START.isoformat()  # the gateway's clock, not the wall clock
    assert [(p.json()["change"], p.json()["alert"]["rule"]) for p in receiver.received("/security")] == [("opened", "door_forced")]
    assert [m.subject for m in mail.mails] == ["[warden] CRITICAL opened: door_forced door-back (riverside)"]
    counted = gateway.counts()
    assert (counted["notifications_sent_security"], counted["notifications_sent_mail"]) == (1, 1)


# --------------------------------------------------------------------------- outbox (issue 17, item 9)


@pytest.fixture
def store(state_db: str | Path) -> Iterator[StateStore]:
    """On SQLite and on PostgreSQL (tests/support/state_db.py): the outbox is beside the alerts."""
    state = StateStore(state_db, ManualClock(START))
    yield state
    state.close()


class Durable:
    """A notifier as the gateway runs it: attached to the store, whose transactions write
    the outbox rows; one webhook or mail sink; its own metrics. `now` is the wall clock."""

    def __init__(self, store: StateStore, sink: WebhookSink | SmtpSink, config: Any, now: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.outbox = Outbox(store.path, now)
        self.queued = QueuedSink(sink, config, NotifyMetrics(self.registry), self.outbox)
        self.notifier = Notifier([(Route.from_config(config), self.queued)], self.outbox)
        self.notifier.attach(store)

    def counts(self) -> dict[str, float]:
        return {key.split("|")[0].removeprefix("warden_gateway_").removesuffix("_total"): value for key, value in counts(self.registry).items()}

    def wait_for(self, counter: str, at_least: float) -> None:
        wait_for(lambda: self.counts().get(counter, 0) >= at_least, what=f"{counter} >= {at_least}")

    def stop(self) -> None:
        """Stop at once: what is not delivered stays in the outbox."""
        self.notifier.stop(drain_seconds=0)
        assert not self.queued._thread.is_alive()


def raise_signal(subject: str = "meter-7") -> AlertSignal:
    return AlertSignal(
        "riverside", "water_burst", subject, SignalAction.RAISE, START, Severity.WARNING,
        f"Meter {subject}: 95 L/min for 6 min", {"l_per_min": 95.0},
    )


def lifecycle(store: StateStore, notifier: Notifier) -> int:
    """Open, acknowledge and resolve one alert, announcing each change as the gateway does."""
    [opened] = store.commit_batch([], [raise_signal()], {})
    changes = [opened, store.acknowledge(opened.alert.id, "sam"), store.resolve(opened.alert.id, "sam", "valve closed")]
    for change in changes:
        notifier.notify(change)
    return opened.alert.id


def by_key(posts: list[Any]) -> dict[str, list[tuple[int, str]]]:
    """(status, change) of the posts, per idempotency key."""
    keys: dict[str, list[tuple[int, str]]] = {}
    for post in posts:
        assert post.headers["Idempotency-Key"] == post.json()["idempotency_key"]
        keys.setdefault(post.headers["Idempotency-Key"], []).append((post.status, post.json()["change"]))
    return keys


def test_a_webhook_down_for_a_while_then_up_gets_each_change_exactly_once(store: StateStore, receiver: WebhookReceiver) -> None:
    receiver.respond("/ops", 503, 503, 503, 503)  # down for the first four attempts
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/ops")))
    durable = Durable(store, WebhookSink("ops", config), config)
    durable.notifier.start()
    try:
        lifecycle(store, durable.notifier)
        # Oldest first: "opened" takes the four 503s and then a 200; the other two follow.
        posts = receiver.wait_for(4 + 3, "/ops")
        durable.wait_for("notifications_sent", 3)
    finally:
        durable.stop()
    assert [(p.status, p.json()["change"]) for p in posts] == [(503, "opened")] * 4 + [(200, "opened"), (200, "acknowledged"), (200, "resolved")]
    delivered = by_key(posts)
    assert len(delivered) == 3  # one key per change, the same on every retry of it
    assert all([status for status, _ in attempts].count(200) == 1 for attempts in delivered.values())
    assert durable.counts() == {"notifications_sent": 3, "notification_retries": 4}  # 3 changes; 4 refused attempts
    assert durable.outbox.pending() == 0


def test_a_notifier_restarted_mid_retry_delivers_what_was_pending_once(store: StateStore, receiver: WebhookReceiver) -> None:
    receiver.respond("/ops", *[503] * 1000)  # down until further notice
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/ops")))
    first = Durable(store, WebhookSink("ops", config), config)
    first.notifier.start()
    try:
        lifecycle(store, first.notifier)
        first.wait_for("notification_retries", 2)  # mid-retry
    finally:
        first.stop()
    before = receiver.received("/ops")
    assert {p.json()["change"] for p in before} == {"opened"}  # oldest first: the rest waited behind it
    assert first.outbox.pending() == 3

    receiver.respond("/ops")  # the receiver is back
    second = Durable(store, WebhookSink("ops", config), config)
    second.notifier.start()
    try:
        posts = receiver.wait_for(len(before) + 3, "/ops")
        second.wait_for("notifications_sent", 3)
    finally:
        second.stop()
    after = posts[len(before):]
    assert [(p.status, p.json()["change"]) for p in after] == [(200, "opened"), (200, "acknowledged"), (200, "resolved")]
    assert after[0].headers["Idempotency-Key"] == before[0].headers["Idempotency-Key"]  # the same change, the same key
    assert len(by_key(posts)) == 3
    assert second.counts() == {"notifications_sent": 3}
    assert second.outbox.pending() == 0  # a third start has nothing to send again


def test_a_change_committed_just_before_a_crash_is_still_notified(store: StateStore, receiver: WebhookReceiver) -> None:
    """The row is written by the alert's own transaction: a gateway killed between the
    commit and handing the change to the sinks (nothing started, nothing notified) loses
    nothing."""
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/ops")))
    crashed = Durable(store, WebhookSink("ops", config), config)
    store.commit_batch([], [raise_signal()], {})  # committed; the process dies here
    del crashed
    restarted = Durable(store, WebhookSink("ops", config), config)
    restarted.notifier.start()
    try:
        [post] = receiver.wait_for(1, "/ops")
    finally:
        restarted.stop()
    assert (post.status, post.json()["change"], post.json()["alert"]["subject"]) == (200, "opened", "meter-7")


def test_a_notification_past_expire_hours_is_counted_and_not_sent(store: StateStore, receiver: WebhookReceiver) -> None:
    wall = [1_800_000_000.0]  # the outbox's wall clock, moved by hand
    down = WebhookSinkConfig.model_validate(webhook(f"http://127.0.0.1:{free_port()}/ops"))  # nothing listens
    first = Durable(store, WebhookSink("ops", down), down, now=lambda: wall[0])
    first.notifier.start()
    try:
        [opened] = store.commit_batch([], [raise_signal()], {})
        first.notifier.notify(opened)
        first.wait_for("notification_retries", 1)
    finally:
        first.stop()

    wall[0] += 24 * 3600 + 1  # expire_hours defaults to 24: a day and a second later
    up = WebhookSinkConfig.model_validate(webhook(receiver.url("/ops")))
    second = Durable(store, WebhookSink("ops", up), up, now=lambda: wall[0])
    second.notifier.start()
    try:
        second.notifier.notify(store.acknowledge(opened.alert.id, "sam"))  # a fresh change goes through
        [post] = receiver.wait_for(1, "/ops")
        second.wait_for("notifications_expired", 1)
    finally:
        second.stop()
    assert post.json()["change"] == "acknowledged"  # the expired "opened" never reached it
    assert second.counts() == {"notifications_expired": 1, "notifications_sent": 1}
    assert second.outbox.pending() == 0


def test_the_outbox_is_bounded_on_disk_and_counts_what_it_drops(store: StateStore, receiver: WebhookReceiver) -> None:
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/ops"), queue_size=2))
    durable = Durable(store, WebhookSink("ops", config), config)
    store.commit_batch([], [raise_signal(f"meter-{n}") for n in range(1, 6)], {})  # five alerts open in one batch
    assert durable.outbox.pending() == 3  # the oldest (next to deliver) + queue_size 2
    durable.notifier.start()
    try:
        posts = receiver.wait_for(3, "/ops")
        durable.wait_for("notifications_dropped", 2)
    finally:
        durable.stop()
    assert [p.json()["alert"]["subject"] for p in posts] == ["meter-1", "meter-4", "meter-5"]  # the oldest waiting went
    assert durable.counts() == {"notifications_sent": 3, "notifications_dropped": 2}  # 5 - 1 oldest - 2 kept


def test_drops_are_counted_with_their_transaction(store: StateStore, change: AlertChange) -> None:
    """A batch whose commit fails is retried: what its rolled-back transaction pruned was
    not pruned, and is not counted."""
    outbox = Outbox(store.path)
    db = engines.connect(store.path)  # a connection of its own, in autocommit: the transaction is this test's
    try:
        outbox.put("ops", [change, change], keep=1)  # oldest + 1 waiting: nothing dropped
        db.execute("BEGIN IMMEDIATE")
        outbox.add(db, "ops", [change, change], keep=1)  # would drop 2 of the 3 waiting
        db.execute("ROLLBACK")
        assert (outbox.pending("ops"), outbox.take_drops("ops")) == (2, 0)
        outbox.put("ops", [change, change], keep=1)  # committed: 4 rows, the oldest + 1 kept
        assert (outbox.pending("ops"), outbox.take_drops("ops"), outbox.take_drops("ops")) == (2, 2, 0)
    finally:
        db.close()
        outbox.close()


def test_mail_left_pending_by_a_stop_is_sent_once_after_the_restart(store: StateStore) -> None:
    server = SmtpReceiver(replies=("451 4.3.0 try again later",) * 2)
    try:
        config = smtp_config(server)
        first = Durable(store, SmtpSink("mail", config), config)
        first.notifier.start()
        try:
            [opened] = store.commit_batch([], [raise_signal()], {})
            first.notifier.notify(opened)
            first.wait_for("notification_retries", 1)
        finally:
            first.stop()
        head = first.outbox.head("mail")
        assert head is not None
        second = Durable(store, SmtpSink("mail", config), config)
        second.notifier.start()
        try:
            [mail] = server.wait_for(1)
            second.wait_for("notifications_sent", 1)
        finally:
            second.stop()
    finally:
        server.close()
    assert mail.subject == "[warden] WARNING opened: water_burst meter-7 (riverside)"
    assert mail.message["Message-ID"] == f"<{head.key}@warden>"  # the same on every attempt
    assert len(server.mails) == 1
    assert second.outbox.pending() == 0


def test_a_gateway_restarted_with_a_notification_pending_delivers_it_once(broker_config, tmp_path: Path, receiver: WebhookReceiver) -> None:
    """The whole gateway: the receiver refuses the first attempt and the next is 30 s
    away when the gateway stops; the next start sends it at once, and only once."""
    receiver.respond("/ops", 503)
    alerts = {"sinks": {"ops": webhook(receiver.url("/ops"), backoff_seconds=30)}}
    config = gateway_config(broker_config, tmp_path, alerts)
    gateway = start_gateway(config, ManualClock(START))
    try:
        publish(broker_config, door(START, DoorAction.HELD_OPEN))
        receiver.wait_for(1, "/ops")
        wait_for(lambda: gateway.counts().get("notification_retries_ops", 0) == 1, what="the retry scheduled")
    finally:
        gateway.stop()  # the retry is due after the 5 s drain: it stays in the outbox
    assert Outbox(config.state_db).pending("ops") == 1

    gateway = start_gateway(config, ManualClock(START))
    try:
        posts = receiver.wait_for(2, "/ops")
        wait_for(lambda: gateway.counts().get("notifications_sent_ops", 0) == 1, what="the delivery counted")
    finally:
        gateway.stop()
    assert [(p.status, p.json()["change"]) for p in posts] == [(503, "opened"), (200, "opened")]
    assert len(by_key(posts)) == 1
    assert Outbox(config.state_db).pending("ops") == 0
    assert len(gateway.store.alerts()) == 1  # the restart raised nothing new
