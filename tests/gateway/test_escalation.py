"""Escalation: deadlines on the gateway's clock, once per level, across restarts; the
24-hour response promise; escalation raises who is told, never the severity; config and
migration."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import EscalationConfig, GatewayConfig
from gateway.escalation import EscalationPolicy
from gateway.store import StateStore
from rules import ac_after_hours, cold_room, deadman, doors, patrol, water
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.config import ALERT_RULES
from tests.gateway.alerting import (
    ALERTS_TOPIC,
    START,
    checked,
    door,
    gateway_config,
    history_actions,
    minutes,
    publish,
    start_gateway,
    wait_for_alert,
    webhook,
)
from tests.support.mqtt import Collector
from tests.support.receivers import WebhookReceiver
from warden.clock import ManualClock
from warden.config import ConfigError, load_config
from warden.events import DoorAction


def ladder(receiver: WebhookReceiver, **escalation: object) -> dict[str, object]:
    """Three levels, one webhook each: /desk (first responders), /manager, /director."""
    return {
        "escalation": {"rules": {"door_held_open": 5}, "levels": [["desk"], ["manager"], ["director"]], **escalation},
        "sinks": {name: webhook(receiver.url(f"/{name}")) for name in ("desk", "manager", "director")},
    }


# --------------------------------------------------------------------------- through the gateway


def test_unacknowledged_alert_escalates_once_at_its_deadline(broker_config, tmp_path: Path, receiver: WebhookReceiver) -> None:
    clock = ManualClock(START)
    gateway = start_gateway(gateway_config(broker_config, tmp_path, ladder(receiver)), clock)
    collector = Collector(broker_config, ALERTS_TOPIC)
    try:
        publish(broker_config, door(START, DoorAction.HELD_OPEN))
        assert receiver.wait_for(1, "/desk")[0].json()["change"] == "opened"

        clock.advance(minutes(5) - timedelta(seconds=1))
        checked(gateway, clock)
        [alert] = gateway.store.alerts_live()
        assert (alert.escalation_level, alert.severity, alert.escalated_at) == (0, "warning", None)

        clock.advance(timedelta(seconds=1))  # exactly the deadline
        checked(gateway, clock)
        [alert] = gateway.store.alerts_live()
        assert (alert.escalation_level, alert.severity) == (1, "warning")  # who is told, not how bad (issue 16)
        assert alert.escalated_at == (START + minutes(5)).isoformat()
        [post] = receiver.wait_for(1, "/manager")
        assert post.json()["change"] == "escalated"
        assert post.json()["note"] == "not acknowledged within 5 min: escalated to level 1"
        assert post.json()["alert"]["escalation_level"] == 1

        clock.advance(minutes(5) - timedelta(seconds=1))  # many checks, none at the next deadline
        checked(gateway, clock)
        assert history_actions(gateway, alert.id) == ["opened", "escalated"]
        messages = [collector.message(), collector.message()]
    finally:
        collector.close()
        gateway.stop()  # drains the notification queues
    assert [json.loads(m.payload)["change"] for m in messages] == ["opened", "escalated"]
    assert [p.json()["change"] for p in receiver.received("/desk")] == ["opened", "escalated"]
    assert len(receiver.received("/manager")) == 1  # not told about the opening: level 1 came later
    assert receiver.received("/director") == []
    assert gateway.counts()["alert_changes_door_held_open_escalated"] == 1


def test_acknowledged_in_time_does_not_escalate_but_the_24h_promise_does(
    broker_config, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    clock = ManualClock(START)
    gateway = start_gateway(gateway_config(broker_config, tmp_path, ladder(receiver)), clock)
    try:
        publish(broker_config, door(START, DoorAction.HELD_OPEN))
        alert_id = wait_for_alert(gateway)
        clock.advance(minutes(4))
        gateway.acknowledge(alert_id, by="sam", note="on my way")
        acknowledged = START + minutes(4)

        clock.advance(timedelta(hours=1))  # far past the 5-minute acknowledgement deadline
        checked(gateway, clock)
        assert gateway.store.alert(alert_id).escalation_level == 0  # type: ignore[union-attr]

        clock.advance(acknowledged + timedelta(hours=24, seconds=-1) - clock.now())
        checked(gateway, clock)
        assert gateway.store.alert(alert_id).escalation_level == 0  # type: ignore[union-attr]

        clock.advance(timedelta(seconds=1))  # 24 h after the acknowledgement, still not resolved
        checked(gateway, clock)
        alert = gateway.store.alert(alert_id)
        assert alert is not None
        assert (alert.state, alert.escalation_level, alert.severity) == ("acknowledged", 1, "warning")
        assert alert.escalated_at == (acknowledged + timedelta(hours=24)).isoformat()
        [post] = receiver.wait_for(1, "/manager")
        assert post.json()["note"] == "not resolved within 24 h of acknowledgement: escalated to level 1"
        assert gateway.store.alert_history(alert_id)[-1]["details"] == {"level": 1, "reason": "not_resolved"}
    finally:
        gateway.stop()


def test_escalation_state_survives_restarts_and_never_fires_twice(
    broker_config, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    clock = ManualClock(START)
    config = gateway_config(broker_config, tmp_path, ladder(receiver))
    first = start_gateway(config, clock)
    publish(broker_config, door(START, DoorAction.HELD_OPEN))
    alert_id = wait_for_alert(first)
    first.stop()

    clock.advance(minutes(6))  # the deadline passes while the gateway is down
    second = start_gateway(config, clock)
    checked(second, clock)
    second.stop()
    alert = second.store.alert(alert_id)
    assert alert is not None and (alert.escalation_level, alert.escalated_at) == (1, (START + minutes(6)).isoformat())
    second.store.close()

    third = start_gateway(config, clock)  # same instant: level 1 is done, nothing to repeat
    try:
        checked(third, clock)
        clock.advance(minutes(5) - timedelta(seconds=1))
        checked(third, clock)
        assert history_actions(third, alert_id) == ["opened", "escalated"]
        clock.advance(timedelta(seconds=1))  # level 1 had its 5 minutes too
        checked(third, clock)
        assert third.store.alert(alert_id).escalation_level == 2  # type: ignore[union-attr]
        receiver.wait_for(1, "/director")
    finally:
        third.stop()
    assert history_actions(third, alert_id) == ["opened", "escalated", "escalated"]
    assert [p.json()["alert"]["escalation_level"] for p in receiver.received("/manager")] == [1, 2]
    assert len(receiver.received("/director")) == 1


# --------------------------------------------------------------------------- store and policy


def signal(action: SignalAction, severity: Severity, at_offset: timedelta = timedelta(0), rule: str = "water_burst") -> AlertSignal:
    return AlertSignal("riverside", rule, "meter-1", action, START + at_offset, severity, f"{action} {severity}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[StateStore]:
    state = StateStore(tmp_path / "state.db", clock)
    yield state
    state.close()


def escalate(store: StateStore, clock: ManualClock, config: EscalationConfig) -> list[str]:
    changes = store.escalate(EscalationPolicy(config).decider(clock.now()), at=clock.now())
    return [f"{c.alert.escalation_level}:{c.alert.severity}" for c in changes]


def test_escalation_raises_who_is_told_never_the_severity(store: StateStore, clock: ManualClock) -> None:
    """Issue 16: this test used to pin info -> warning -> critical on each escalation. An
    info alert left unacknowledged climbs the whole ladder (levels 1 and 2, one per
    10 min) and is still info."""
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.INFO)], {})
    steps = []
    for _ in range(3):
        clock.advance(minutes(10))
        steps += escalate(store, clock, EscalationConfig(ack_minutes=10))
    assert steps == ["1:info", "2:info"]
    [entry] = [h for h in store.alert_history(store.alerts_live()[0].id) if h["details"] == {"level": 2, "reason": "not_acknowledged"}]
    assert entry["action"] == "escalated"


def test_a_live_alerts_severity_is_the_rules_latest_judgement(store: StateStore, clock: ManualClock) -> None:
    """A round paged critical as "not started" that turns out started late is a warning:
    escalation moved who is told (level 1), the rule says how bad it is."""
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.CRITICAL)], {})
    clock.advance(minutes(10))
    assert escalate(store, clock, EscalationConfig(ack_minutes=10)) == ["1:critical"]

    store.commit_batch([], [signal(SignalAction.UPDATE, Severity.WARNING, minutes(11))], {})
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.INFO, minutes(12))], {})
    [alert] = store.alerts_live()
    assert (alert.severity, alert.escalation_level, alert.message, alert.count) == ("info", 1, "raise info", 2)


def test_a_rule_may_still_raise_the_severity(store: StateStore) -> None:
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.INFO)], {})
    store.commit_batch([], [signal(SignalAction.UPDATE, Severity.CRITICAL, minutes(1))], {})
    assert store.alerts_live()[0].severity == "critical"


def test_the_level_stops_at_the_top(store: StateStore, clock: ManualClock) -> None:
    config = EscalationConfig(ack_minutes=10)  # default ladder: three levels, 0..2
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.CRITICAL)], {})
    steps = []
    for _ in range(4):
        clock.advance(minutes(10))
        steps += escalate(store, clock, config)
    assert steps == ["1:critical", "2:critical"]


def test_deadline_counts_from_when_the_gateway_raised_it_not_from_event_time(store: StateStore, clock: ManualClock) -> None:
    """Late data (a wand uploaded hours later) opens an alert in the past; people only
    learn of it now, so they get the full deadline from now."""
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.WARNING, -timedelta(hours=3))], {})
    config = EscalationConfig(ack_minutes=60)
    clock.advance(minutes(59))
    assert escalate(store, clock, config) == []
    clock.advance(minutes(1))
    assert escalate(store, clock, config) == ["1:warning"]


@pytest.mark.parametrize(
    ("rules", "rule", "escalates_after"),
    [
        ({"door_forced": 5}, "door_forced", 5),
        ({"door_forced": 5}, "water_burst", 60),  # the default
        ({"water_burst": {"ack_minutes": 15}}, "water_burst", 15),
        ({"water_burst": None}, "water_burst", None),  # never
        ({"water_burst": {"ack_minutes": None}}, "water_burst", None),
    ],
)
def test_per_rule_deadlines(store: StateStore, clock: ManualClock, rules: dict, rule: str, escalates_after: int | None) -> None:
    config = EscalationConfig.model_validate({"rules": rules})
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.WARNING, rule=rule)], {})
    fired_at = None
    for minute in range(1, 121):
        clock.advance(minutes(1))
        if escalate(store, clock, config):
            fired_at = minute
            break
    assert fired_at == escalates_after


def test_disabled_escalation_never_fires(store: StateStore, clock: ManualClock) -> None:
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.WARNING)], {})
    clock.advance(timedelta(days=3))
    assert escalate(store, clock, EscalationConfig(enabled=False)) == []


def test_resolved_alerts_do_not_escalate(store: StateStore, clock: ManualClock) -> None:
    store.commit_batch([], [signal(SignalAction.RAISE, Severity.WARNING)], {})
    store.commit_batch([], [signal(SignalAction.RESOLVE, Severity.WARNING, minutes(1))], {})
    clock.advance(timedelta(days=3))
    assert escalate(store, clock, EscalationConfig()) == []


# The release before escalation: the alerts table without its three new columns.
_OLD_ALERTS = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL, rule TEXT NOT NULL, subject TEXT NOT NULL,
    state TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL,
    details TEXT NOT NULL, count INTEGER NOT NULL,
    opened_at TEXT NOT NULL, updated_at TEXT NOT NULL, resolved_at TEXT,
    acknowledged_by TEXT, acknowledged_at TEXT, note TEXT);
INSERT INTO alerts (site, rule, subject, state, severity, message, details, count, opened_at, updated_at)
    VALUES ('riverside', 'water_wet', 'wet-1', 'open', 'warning', 'wet', '{}', 1, '2026-11-17T20:00:00+00:00', '2026-11-17T20:00:00+00:00');
"""


def test_an_existing_database_gains_the_escalation_columns(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(_OLD_ALERTS)
    store = StateStore(path, clock)
    [alert] = store.alerts_live()
    assert (alert.escalation_level, alert.escalated_at, alert.raised_at) == (0, None, None)
    StateStore(path, clock).close()  # opening it again is a no-op

    clock.advance(minutes(59))  # an old row's deadline counts from opened_at (20:00 + 60 min)
    assert escalate(store, clock, EscalationConfig()) == ["1:warning"]
    store.close()


# --------------------------------------------------------------------------- configuration


def test_alert_rule_names_match_the_rules() -> None:
    emitted = {
        *ac_after_hours.AFTER_HOURS_RULES.values(), deadman.DEVICE, deadman.AGENT, deadman.LINK,
        doors.HELD_OPEN, doors.FORCED, doors.AFTER_HOURS, doors.DENIED,
        patrol.ROUND, patrol.CHECKPOINT, patrol.SILENCE, patrol.UPLOAD,
        water.NIGHT_FLOW, water.CONTINUOUS_FLOW, water.BURST, water.WET, *cold_room.RULE_NAMES,
    }
    assert ALERT_RULES == emitted


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ({"escalation": {"rules": {"door_force": 5}}}, "alerts.escalation.rules: unknown rule 'door_force' (known: ac_after_hours, "),
        ({"escalation": {"rules": {"door_forced": "soon"}}}, "alerts.escalation.rules.door_forced: expected minutes (a number), null or a mapping"),
        ({"escalation": {"ack_minutes": 0}}, "alerts.escalation.ack_minutes: expected greater than 0, got 0"),
        ({"escalation": {"levels": []}}, "alerts.escalation.levels: expected at least one level"),
        ({"escalation": {"levels": [["pager"]]}}, "alerts: escalation.levels[0]: unknown sink 'pager' (known: none defined)"),
        (
            {"escalation": {"levels": [["hook"], ["hook"]]}, "sinks": {"hook": {"type": "webhook", "url": "http://h/x"}}},
            "alerts: escalation.levels[1]: sink 'hook' is already in level 0",
        ),
        ({"sinks": {"hook": {"type": "webhook", "url": "ftp://h/x"}}}, "alerts.sinks.hook.url: expected an http:// or https:// URL"),
        ({"sinks": {"hook": {"type": "pager"}}}, "alerts.sinks.hook: type: expected one of 'webhook', 'smtp', got 'pager'"),
        (
            {"sinks": {"m": {"type": "smtp", "host": "mail", "sender": "w@x.org", "to": ["a@x.org"], "username": "u", "password": "p"}}},
            "alerts.sinks.m: password: would be sent in clear; set tls: starttls or implicit",
        ),
        ({"sinks": {"m": {"type": "smtp", "host": "mail", "sender": "w@x.org", "to": ["ops"]}}},
         "alerts.sinks.m.to: expected a mail address like warden@example.org, got 'ops'"),
        ({"sinks": {"hook": {"type": "webhook", "url": "http://h/x", "changes": ["opend"]}}}, "alerts.sinks.hook.changes[0]: expected 'opened', 'updated'"),
    ],
)
def test_configuration_errors_say_where_and_why(tmp_path: Path, alerts: dict, expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps({"site_file": "site.yaml", "alerts": alerts}))  # JSON is YAML
    with pytest.raises(ConfigError) as error:
        load_config(path, GatewayConfig)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_shipped_gateway_config_and_its_commented_alerts_example_load(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "config" / "gateway.yaml"
    assert load_config(shipped, GatewayConfig).alerts.escalation.deadlines("door_held_open") == (60.0, 24.0)

    text = shipped.read_text()
    example = text[text.index("# alerts:") :].splitlines()
    uncommented = tmp_path / "gateway.yaml"
    uncommented.write_text("site_file: site.yaml\n" + "\n".join(line.removeprefix("# ") for line in example))
    alerts = load_config(uncommented, GatewayConfig).alerts
    assert alerts.escalation.deadlines("door_forced") == (5.0, 24.0)
    assert alerts.escalation.deadlines("patrol_checkpoint") == (None, None)
    assert [alerts.sink_level(name) for name in ("maintenance", "manager", "director", "security-desk")] == [0, 1, 2, 0]
