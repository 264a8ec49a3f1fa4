"""Escalation texts in the site's language (issue 19): an escalation's note is a message id
with parameters (gateway/escalation.py), kept as such in the alert's history and in the
notification outbox, so a zh-CN site's mail says it in Chinese, and the API's alert
history does too; English reads as it always did."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import EscalationConfig
from gateway.escalation import EscalationPolicy
from gateway.notify import Outbox, SmtpSink
from gateway.store import AlertChange, StateStore
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.gateway.alerting import START
from tests.gateway.test_notify import queued, smtp_config
from tests.support.receivers import SmtpReceiver
from warden.clock import ManualClock
from warden.i18n import Message, say


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def escalated(tmp_path: Path, after: timedelta, config: EscalationConfig, acknowledge: bool = False) -> AlertChange:
    """A burst alert raised at START (acknowledged at once if asked), escalated by the real
    store and policy `after` later."""
    clock = ManualClock(START)
    store = StateStore(tmp_path / "state.db", clock)
    try:
        [opened] = store.commit_batch([], [AlertSignal("riverside", "water_burst", "meter-7", SignalAction.RAISE, START,
                                                       Severity.WARNING, "Meter meter-7: 95 L/min")], {})  # fmt: skip
        if acknowledge:
            store.acknowledge(opened.alert.id, "sam")
        clock.advance(after)
        [change] = store.escalate(EscalationPolicy(config).decider(clock.now()), at=clock.now())
    finally:
        store.close()
    return change


def test_an_unacknowledged_alert_s_escalation_mail_is_in_chinese(tmp_path: Path, outbox: Outbox) -> None:
    change = escalated(tmp_path, timedelta(minutes=10), EscalationConfig(ack_minutes=10))
    assert change.note == "not acknowledged within 10 min: escalated to level 1"  # English as before (logs, history)
    server = SmtpReceiver()
    try:
        config = smtp_config(server)
        dispatcher, _ = queued(SmtpSink("mail", config, "zh-CN"), config, outbox)  # through the outbox: the note as text
        dispatcher.send(change)
        [mail] = server.wait_for(1)
        dispatcher.stop()
    finally:
        server.close()
    [line] = [line for line in mail.body.splitlines() if line.startswith("变化")]
    assert line.endswith(" - 10 分钟内未确认：已升级到第 1 级"), line


def test_the_24_hour_promise_and_repair_request_deadlines_in_chinese(tmp_path: Path) -> None:
    change = escalated(tmp_path, timedelta(hours=24), EscalationConfig(ack_minutes=10, response_hours=24), acknowledge=True)
    assert say(change.note, "zh-CN") == "确认后 24 小时内未解决：已升级到第 1 级"
    taken = Message("not taken within {hours} h: escalated to level {level}", hours="2.5", level=2)
    assert say(taken, "zh-CN") == "2.5 小时内无人接单：已升级到第 2 级"


def test_the_history_keeps_the_escalation_as_a_message(tmp_path: Path) -> None:
    escalated(tmp_path, timedelta(minutes=10), EscalationConfig(ack_minutes=10))
    store = StateStore(tmp_path / "state.db")
    try:
        [step] = [s for s in store.alert_history(1) if s["action"] == "escalated"]
    finally:
        store.close()
    assert step["message_id"] == "not acknowledged within {minutes} min: escalated to level {level}"
    assert step["params"] == {"minutes": "10", "level": 1}


def test_english_reads_as_before(tmp_path: Path) -> None:
    change = escalated(tmp_path, timedelta(minutes=10), EscalationConfig(ack_minutes=10))
    assert say(change.note, "en") == "not acknowledged within 10 min: escalated to level 1"
