"""An escalation in the API's alert history reads in the reader's language (issue 19): the
history keeps the English note; GET /api/alerts/{id} words it from its message id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import EscalationConfig
from gateway.escalation import EscalationPolicy
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.api.conftest import EVENING, Running
from tests.api.test_dashboard_views_browser import ZH_SITE
from tests.api.test_phone_browser import start_named
from warden.config import BrokerConfig


@pytest.fixture
def zh(broker_config: BrokerConfig, tmp_path: Path) -> Iterator[Running]:
    yield from start_named(broker_config, tmp_path, ZH_SITE, None)


def test_an_escalation_step_reads_in_chinese(zh: Running) -> None:
    store, now = zh.gateway.store, zh.gateway.clock.now()  # EVENING + 12 h
    [opened] = store.commit_batch([], [AlertSignal("riverside", "water_burst", "ac-a204", SignalAction.RAISE, EVENING,
                                                   Severity.WARNING, "burst")], {})  # fmt: skip
    # Raised (gateway clock) at `now`; 15 min later it is past ack_minutes=15: level 1.
    store.escalate(EscalationPolicy(EscalationConfig(ack_minutes=15)).decider(now + timedelta(minutes=15)), at=now)
    detail = zh.client("manager").get(f"/api/alerts/{opened.alert.id}").json()
    [step] = [h for h in detail["history"] if h["action"] == "escalated"]
    assert step["message"] == "not acknowledged within 15 min: escalated to level 1"  # kept as it was written
    assert step["text"] == "15 分钟内未确认：已升级到第 1 级"
