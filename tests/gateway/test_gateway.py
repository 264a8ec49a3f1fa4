"""The gateway against a real Mosquitto: validation, dead letters, duplicates, the AC
rule through to a stored alert served over real HTTP, and restarts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from gateway.api import ApiServer, create_app
from gateway.config import GatewayConfig
from gateway.historian.sqlite import SqliteHistorian
from gateway.service import Gateway
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Event, Reading, encode_events, stable_event_id
from warden.mqtt import make_client

# Tuesday 2026-11-17, 19:00 in Berlin: after the school day.
EVENING = datetime(2026, 11, 17, 18, 0, tzinfo=timezone.utc)
EVENTS = topics.events_topic("riverside", "agent-a")

SITE = SiteConfig.model_validate(
    {
        "id": "riverside",
        "timezone": "Europe/Berlin",
        "tariff": {"energy_per_kwh": 0.30, "currency": "EUR"},
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "A", "rooms": [{"id": "A-204", "schedule": "school-day", "devices": ["ac-a204"]}]}],
    }
)


def power(minute: int, watts: float, device: str = "ac-a204", site: str = "riverside") -> Reading:
    at = EVENING + timedelta(minutes=minute)
    return Reading(
        id=stable_event_id(site, device, "power_w", at.isoformat()),
        site=site, device=device, event_time=at, quantity="power", value=watts, unit="W",
    )


class Publisher:
    def __init__(self, broker: BrokerConfig) -> None:
        self.client = make_client(broker, "test-agent")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def raw(self, payload: bytes, topic: str = EVENTS) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def events(self, *events: Event) -> None:
        self.raw(encode_events(list(events)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway_config(broker_config: BrokerConfig, tmp_path: Path) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "id": f"gw-{tmp_path.name}"[:60],  # own persistent session per test
            "site_file": str(tmp_path / "site.yaml"),
            "broker": broker_config.model_dump(),
            "historian": {"type": "sqlite", "path": str(tmp_path / "history.db")},
            "state_db": str(tmp_path / "state.db"),
            "rules": {"ac_after_hours": {"standby_watts": 60, "grace_minutes": 15}},
        }
    )


def start_gateway(config: GatewayConfig) -> Gateway:
    gateway = Gateway(config, SITE, ManualClock(EVENING + timedelta(hours=12)))
    gateway.start()
    assert gateway.subscribed.wait(10), "gateway did not subscribe"
    return gateway


@pytest.fixture
def publisher(broker_config: BrokerConfig) -> Iterator[Publisher]:
    pub = Publisher(broker_config)
    yield pub
    pub.close()


def test_bad_messages_go_to_dead_letters_and_good_ones_are_stored_once(
    gateway_config: GatewayConfig, publisher: Publisher
) -> None:
    gateway = start_gateway(gateway_config)
    try:
        publisher.events(power(0, 10))
        publisher.raw(b"\xff\xfe not json")
        publisher.raw(b'{"v":1,"kind":"reading","id":"12345678","site":"riverside"}')
        publisher.events(power(1, 10, site="elsewhere"))
        publisher.events(power(0, 10))  # a replay of the first
        publisher.events(power(2, 10), power(2, 10))  # the same event twice in one batch
        # Matches the subscription warden/v1/+/+/events (MQTT allows an empty level), so it
        # reaches the gateway, which names no agent in it: refused as bad_topic.
        publisher.raw(encode_events([power(3, 10)]), topic="warden/v1/riverside//events")
        settled = lambda: gateway.counts().get("rejected", 0) >= 4 and gateway.counts().get("duplicates", 0) >= 2  # noqa: E731
        assert gateway.wait_until(lambda: settled() and gateway.counts().get("events_stored_reading", 0) >= 2, timeout=10)
    finally:
        gateway.stop()

    assert gateway.counts().get("events_stored_reading", 0) == 2
    assert gateway.counts().get("duplicates", 0) == 2
    reasons = [row["reason"] for row in gateway.store.dead_letters()]
    assert len(reasons) == 4
    assert gateway.counts().get("rejected_bad_topic") == 1, gateway.counts()
    assert any("'warden/v1/riverside//events' is not warden/v1/<site>/<agent>/<channel>" in r for r in reasons)
    assert any(r.startswith("not UTF-8") for r in reasons)
    assert any("reading.device: Field required" in r for r in reasons)
    assert any("'elsewhere' does not match topic site 'riverside'" in r for r in reasons)
    history = SqliteHistorian(gateway_config.historian.path, SITE)  # type: ignore[union-attr]
    assert [p.fields["value"] for p in history.series("ac-a204")] == [10, 10]


def test_ac_left_on_raises_one_alert_served_by_the_api(gateway_config: GatewayConfig, publisher: Publisher) -> None:
    gateway = start_gateway(gateway_config)
    api = ApiServer(create_app(gateway), "127.0.0.1", 0)
    api.start()
    try:
        for minute in range(0, 31, 5):  # 1200 W from 19:00 to 19:30 local
            publisher.events(power(minute, 1200))
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 7, timeout=10)

        alerts = httpx.get(f"{api.url}/api/alerts", params={"state": "open", "rule": "ac_after_hours"}).raise_for_status().json()
        assert len(alerts) == 1
        alert = alerts[0]
        assert (alert["rule"], alert["subject"], alert["state"]) == ("ac_after_hours", "A-204", "open")
        assert alert["opened_at"].startswith("2026-11-17T18:15:00")
        assert alert["details"]["wasted_kwh"] == pytest.approx(0.6)  # 1.2 kW for 30 min
        detail = httpx.get(f"{api.url}/api/alerts/{alert['id']}").raise_for_status().json()
        assert [step["action"] for step in detail["history"]] == ["opened"]
        assert httpx.get(f"{api.url}/api/alerts/99999").status_code == 404
    finally:
        api.stop()
        gateway.stop()


def test_rule_state_and_alerts_survive_a_restart(gateway_config: GatewayConfig, publisher: Publisher) -> None:
    gateway = start_gateway(gateway_config)
    publisher.events(*[power(m, 1000) for m in range(0, 11, 5)])  # 10 min: inside the grace period
    assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 3, timeout=10)
    gateway.stop()

    publisher.events(power(15, 1000))  # while the gateway is down: held by the broker
    restarted = start_gateway(gateway_config)
    try:
        publisher.events(power(20, 1000))
        assert restarted.wait_until(lambda: restarted.counts().get("events_stored_reading", 0) == 2, timeout=10)
        [alert] = restarted.store.alerts(rule="ac_after_hours")
        # The grace timer went on from 19:00 across the restart: raised at 19:15, not 19:30.
        assert alert.opened_at.startswith("2026-11-17T18:15:00")
        assert alert.details["since"].startswith("2026-11-17T18:00:00")
        assert alert.details["wasted_kwh"] == pytest.approx(1000 * 20 / 60 / 1000)
    finally:
        restarted.stop()


def test_between_snapshots_the_rules_are_journalled_and_rebuilt_exactly(
    gateway_config: GatewayConfig, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first batch's snapshot every batch is journalled; the snapshot with the
    journal replayed onto it is the live rule state, duplicates and ticks included."""
    monkeypatch.setattr("gateway.service.SNAPSHOT_SECONDS", 3600.0)
    gateway = start_gateway(gateway_config)
    try:
        publisher.events(power(0, 1000))
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 1, timeout=10)
        publisher.events(*[power(m, 1000) for m in range(5, 21, 5)])  # raises at 19:15
        publisher.events(power(10, 1000), power(25, 1000))  # one duplicate, one fresh
        assert gateway.wait_until(lambda: gateway.events_stored == 6, timeout=10)
        gateway.tick(EVENING + timedelta(minutes=30))
        assert gateway.wait_until(lambda: gateway.last_tick == EVENING + timedelta(minutes=30), timeout=10)
        journal = gateway.store.rule_journal()
        rebuilt = gateway._committed_rules().snapshot()
        live = gateway.engine.snapshot()
    finally:
        gateway.stop()
    entries = [json.loads(entry.partition(b"\n")[0]) for entry in journal]  # headers; batches may merge messages
    assert [m[2] for e in entries for m in e["messages"]] == [None, [1]]  # the duplicate is not replayed
    assert [e["tick"] for e in entries if e["tick"]] == [(EVENING + timedelta(minutes=30)).isoformat()]
    assert json.loads(json.dumps(rebuilt)) == json.loads(json.dumps(live))
    assert live["ac_after_hours"]["episodes"], "the episode is open in the live rules"


def test_after_a_crash_the_journal_carries_the_timers_on(
    gateway_config: GatewayConfig, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No snapshot on the way down (as after kill -9): the next start replays the journal."""
    monkeypatch.setattr("gateway.service.SNAPSHOT_SECONDS", 3600.0)
    gateway = start_gateway(gateway_config)
    monkeypatch.setattr(gateway, "_snapshot_on_stop", lambda: None)
    publisher.events(power(0, 5))  # standby: the snapshot of the first batch has no episode
    assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 1, timeout=10)
    publisher.events(*[power(m, 1000) for m in range(5, 11, 5)])  # the AC goes on at 19:05
    assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 3, timeout=10)
    assert gateway.store.rule_journal(), "the second batch was journalled, not snapshotted"
    gateway.stop()
    restarted = start_gateway(gateway_config)
    try:
        publisher.events(power(20, 1000))
        assert restarted.wait_until(lambda: restarted.counts().get("events_stored_reading", 0) == 1, timeout=10)
        [alert] = restarted.store.alerts(rule="ac_after_hours")
    finally:
        restarted.stop()
    # Raised at 19:20 from a grace timer that started at 19:05, known only from the journal.
    assert alert.opened_at.startswith("2026-11-17T18:20:00")
    assert alert.details["since"].startswith("2026-11-17T18:05:00")


def test_an_event_stamped_in_the_future_is_refused_alone_and_its_batch_kept(
    gateway_config: GatewayConfig, publisher: Publisher
) -> None:
    """A device clock hours ahead spoils that device's event, not the agent's batch."""
    gateway = start_gateway(gateway_config)  # its clock: EVENING + 12 h
    ahead = power(16 * 60, 1000)  # EVENING + 16 h: more than an hour ahead
    try:
        publisher.events(power(0, 5), ahead, power(5, 5))
        assert gateway.wait_until(lambda: gateway.events_stored == 2, timeout=10)
        letters = gateway.store.dead_letters()
        replayed = gateway._committed_rules().snapshot()
        live = gateway.engine.snapshot()
    finally:
        gateway.stop()
    assert [(d["reason"].split(":")[0], ahead.id in d["payload"].decode()) for d in letters] == [(f"event {ahead.id}", True)]
    assert gateway.counts()["rejected_future_time"] == 1
    assert json.loads(json.dumps(replayed)) == json.loads(json.dumps(live))  # the journal holds what was accepted


def test_metrics_endpoint_counts_rejections_by_reason(gateway_config: GatewayConfig, publisher: Publisher) -> None:
    gateway = start_gateway(gateway_config)
    api = ApiServer(create_app(gateway), "127.0.0.1", 0)
    api.start()
    try:
        publisher.raw(b"[1, 2]")
        publisher.events(power(0, 5))
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 1, timeout=10)
        text = httpx.get(f"{api.url}/metrics").raise_for_status().text
    finally:
        api.stop()
        gateway.stop()
    assert 'warden_gateway_rejected_total{reason="not_object"} 1.0' in text
    assert 'warden_gateway_events_stored_total{kind="reading"} 1.0' in text
    assert "warden_gateway_historian_write_seconds_count" in text
    assert 'warden_gateway_historian{stat="points_written"}' in text


def test_a_failed_batch_is_retried_without_acknowledging_or_counting_twice(
    gateway_config: GatewayConfig, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state commit fails twice (a disk-full moment), after the rules saw the batch."""
    gateway = start_gateway(gateway_config)
    real_commit = gateway.store.commit_batch
    failures = iter([True, True])

    def flaky_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
        if args[0] and next(failures, False):
            raise OSError("database or disk is full")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(gateway.store, "commit_batch", flaky_commit)
    try:
        publisher.events(*[power(m, 1200) for m in range(0, 31, 5)])
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 7, timeout=20)
        [alert] = gateway.store.alerts(rule="ac_after_hours")
    finally:
        gateway.stop()
    assert gateway.counts()["batch_retries"] == 2
    # Same result as without the failures: the rules and the history were rewound before each retry.
    assert alert.details["wasted_kwh"] == pytest.approx(0.6)
    assert alert.opened_at.startswith("2026-11-17T18:15:00")
    assert alert.count == 1
    history = SqliteHistorian(gateway_config.historian.path, SITE)  # type: ignore[union-attr]
    assert [p.time for p in history.series("ac-a204")] == [power(m, 1200).event_time for m in range(0, 31, 5)]


def test_history_of_a_batch_never_committed_is_cut_off_at_start(gateway_config: GatewayConfig, publisher: Publisher) -> None:
    """A crash between the historian's write and the state commit leaves points the
    seen ids do not know; the broker redelivers their messages, so they must go."""
    gateway = start_gateway(gateway_config)
    try:
        publisher.events(*[power(m, 10) for m in range(3)])
        assert gateway.wait_until(lambda: gateway.events_stored == 3, timeout=10)
    finally:
        gateway.stop()
    crashed_batch = [power(m, 10) for m in range(3, 6)]
    history = SqliteHistorian(gateway_config.historian.path, SITE)  # type: ignore[union-attr]
    history.write(crashed_batch)  # written, then the gateway died before committing
    history.close()

    gateway = start_gateway(gateway_config)
    try:
        assert gateway.historian.count() == 3  # type: ignore[attr-defined]
        publisher.events(*crashed_batch)  # the redelivery
        assert gateway.wait_until(lambda: gateway.events_stored == 3, timeout=10)
        ids = [p.event_id for p in gateway.historian.series("ac-a204")]  # type: ignore[attr-defined]
    finally:
        gateway.stop()
    assert ids == [power(m, 10).id for m in range(6)]
