"""Notifications: the sinks against real receivers (HTTP server, aiosmtpd, Mosquitto),
retries, a receiver that hangs, routing, and secrets kept out of the logs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.notify import NotifyMetrics, QueuedSink, Route, SmtpSink, WebhookSink, safe_target
from gateway.store import Alert, AlertChange, StateStore
from rules.alerts import AlertSignal, AlertState, Severity, SignalAction
from tests.gateway.alerting import (
    ALERTS_TOPIC, START, changes_on_topic, door, gateway_config, publish, start_gateway, wait_for_alert, webhook,
)
from tests.support.mqtt import Collector
from tests.support.receivers import SmtpReceiver, WebhookReceiver, self_signed_certificate
from warden.clock import ManualClock
from warden.config import SmtpSinkConfig, WebhookSinkConfig
from warden.events import DoorAction

SECRET_PATH = "/hooks/T0KEN-in-the-path"
SECRET_HEADER = "Bearer s3cret-header-token"
SECRET_PASSWORD = "s3cret-smtp-password"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


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


def queued(sink: Any, config: Any) -> tuple[QueuedSink, CollectorRegistry]:
    registry = CollectorRegistry()
    dispatcher = QueuedSink(sink, config, NotifyMetrics(registry))
    dispatcher.start()
    return dispatcher, registry


# --------------------------------------------------------------------------- webhook


def test_webhook_retries_a_500_then_delivers_once(receiver: WebhookReceiver, change: AlertChange) -> None:
    receiver.respond("/ops", 500, 503)
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/ops"), headers={"Authorization": SECRET_HEADER}))
    dispatcher, registry = queued(WebhookSink("ops", config), config)
    dispatcher.send(change)
    posts = receiver.wait_for(3, "/ops")
    dispatcher.stop()

    assert [p.status for p in posts] == [500, 503, 200]
    assert len({p.headers["X-Warden-Delivery"] for p in posts}) == 1  # a receiver can drop a repeat
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
    receiver: WebhookReceiver, change: AlertChange, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.respond(SECRET_PATH, 404)
    refused = WebhookSinkConfig.model_validate(webhook(receiver.url(SECRET_PATH), headers={"Authorization": SECRET_HEADER}))
    unreachable = WebhookSinkConfig.model_validate(webhook(f"http://127.0.0.1:9{SECRET_PATH}", retries=2, headers={"Authorization": SECRET_HEADER}))
    caplog.set_level(logging.DEBUG, logger="gateway.notify")
    first, registry_a = queued(WebhookSink("gone", refused), refused)
    second, registry_b = queued(WebhookSink("down", unreachable), unreachable)
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


def test_a_hung_receiver_never_blocks_the_sender(receiver: WebhookReceiver, change: AlertChange) -> None:
    config = WebhookSinkConfig.model_validate(webhook(receiver.url("/slow"), queue_size=1, timeout_seconds=30))
    dispatcher, registry = queued(WebhookSink("slow", config), config)
    receiver.hold.clear()  # every request waits until released
    try:
        dispatcher.send(change)
        receiver.wait_for(1, "/slow")  # the dispatcher thread is stuck in that request
        began = time.monotonic()
        for _ in range(5):
            dispatcher.send(change)  # one fits the queue, four are dropped
        assert time.monotonic() - began < 0.5
    finally:
        receiver.hold.set()
    dispatcher.stop()
    dispatcher.send(change)  # after stop: dropped and counted, not queued for nobody
    assert counts(registry) == {
        "warden_gateway_notifications_sent_total|slow": 2,
        "warden_gateway_notifications_dropped_total|slow": 5,
    }


def test_safe_target_keeps_secrets_out() -> None:
    assert safe_target("https://user:pw@hooks.example.org:8443/services/T0KEN?key=abc") == "https://hooks.example.org:8443"


# --------------------------------------------------------------------------- mail


def smtp_config(receiver: SmtpReceiver, **extra: Any) -> SmtpSinkConfig:
    return SmtpSinkConfig.model_validate(
        {"type": "smtp", "host": "127.0.0.1", "port": receiver.port, "sender": "warden@school.example",
         "to": ["caretaker@school.example", "head@school.example"], "backoff_seconds": 0.01, **extra}
    )


def test_mail_carries_subject_and_body(change: AlertChange) -> None:
    server = SmtpReceiver()
    try:
        config = smtp_config(server)
        dispatcher, registry = queued(SmtpSink("mail", config), config)
        escalated = AlertChange("escalated", replace(change.alert, severity="critical", escalation_level=1), "not acknowledged within 10 min: escalated to level 1")
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


def test_mail_over_starttls_with_login(tmp_path: Path, change: AlertChange, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = SmtpReceiver(tls=(cert, key), credentials=("warden", SECRET_PASSWORD))
    caplog.set_level(logging.DEBUG, logger="gateway.notify")
    try:
        good = smtp_config(server, tls="starttls", tls_ca_file=str(cert), username="warden", password=SECRET_PASSWORD)
        wrong = smtp_config(server, tls="starttls", tls_ca_file=str(cert), username="warden", password="not-" + SECRET_PASSWORD)
        plain = smtp_config(server)  # the server insists on STARTTLS
        dispatchers = [queued(SmtpSink(name, c), c) for name, c in (("good", good), ("wrong", wrong), ("plain", plain))]
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


def test_mail_over_implicit_tls_retries_a_temporary_refusal(tmp_path: Path, change: AlertChange) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = SmtpReceiver(tls=(cert, key), implicit_tls=True, replies=("451 4.3.0 try again later",))
    try:
        config = smtp_config(server, tls="implicit", tls_ca_file=str(cert))
        dispatcher, registry = queued(SmtpSink("mail", config), config)
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
