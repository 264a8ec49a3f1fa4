"""Bounded bad input at the gateway's door (issue 17, holes 5 and 6, and the bad_topic
count), against a real Mosquitto: times outside the sane window are refused with a reason,
a topic that names no agent is `bad_topic`, and dead letters stay within their bounds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.service import Gateway
from gateway.store import DEAD_LETTER_KEEP_BYTES
from tests.gateway.test_gateway import EVENING, SITE, Publisher, power
from tests.support.gateway_config import local_gateway_config
from warden.clock import ManualClock
from warden.config import BrokerConfig
from warden.events import DoorEvent, Reading, stable_event_id


@pytest.fixture
def publisher(broker_config: BrokerConfig) -> Iterator[Publisher]:
    pub = Publisher(broker_config)
    yield pub
    pub.close()


def _started(config: GatewayConfig) -> Gateway:
    gateway = Gateway(config, SITE, ManualClock(EVENING + timedelta(hours=1)))
    gateway.start()
    assert gateway.subscribed.wait(10), "gateway did not subscribe"
    return gateway


def _reading_at(at: datetime, device: str = "ac-a204") -> Reading:
    return Reading(id=stable_event_id("riverside", device, "power_w", at.isoformat()), site="riverside", device=device,
                   event_time=at, quantity="power", value=5.0, unit="W")


def test_far_past_times_are_refused_as_bad_time_and_break_no_rule(broker_config: BrokerConfig, tmp_path: Path, publisher: Publisher) -> None:
    gateway = _started(local_gateway_config(broker_config, tmp_path))
    year_one = datetime(1, 1, 1, tzinfo=timezone.utc)
    door = DoorEvent(id=stable_event_id("riverside", "door-1", "forced", "year-1"), site="riverside", device="door-1",
                     event_time=year_one, action="forced", door="gate")
    try:
        # One batch: a year-1 reading, a 1999 reading, a year-1 door event and a good reading.
        publisher.events(_reading_at(year_one), _reading_at(datetime(1999, 12, 31, 23, 59, tzinfo=timezone.utc)), door, power(0, 10))
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) >= 1
                                  and gateway.counts().get("rejected", 0) >= 3, timeout=10)
    finally:
        gateway.stop()
    counts = gateway.counts()
    # 4 events: 3 stamped before 2000-01-01 are refused one by one, the good one is kept.
    assert counts.get("rejected_bad_time") == 3, counts
    assert counts.get("events_stored_reading") == 1 and counts.get("rule_errors", 0) == 0, counts
    letters = gateway.store.dead_letters()
    assert sorted(row["code"] for row in letters) == ["bad_time"] * 3
    assert all("is before 2000-01-01" in row["reason"] for row in letters)


def test_a_topic_with_a_space_is_a_bad_topic(broker_config: BrokerConfig, tmp_path: Path, publisher: Publisher) -> None:
    gateway = _started(local_gateway_config(broker_config, tmp_path))
    try:
        # the gateway subscribes to its own site's topics only; the agent part holds the space
        publisher.raw(b'{"anything": 1}', topic="warden/v1/riverside/agent a/events")
        assert gateway.wait_until(lambda: gateway.counts().get("rejected", 0) >= 1, timeout=10)
    finally:
        gateway.stop()
    counts = gateway.counts()
    assert counts.get("rejected_bad_topic") == 1 and "rejected_site_mismatch" not in counts, counts


def test_dead_letters_are_bounded_by_bytes_oldest_pruned_and_counted(broker_config: BrokerConfig, tmp_path: Path, publisher: Publisher) -> None:
    max_bytes = 1024 * 1024
    gateway = _started(local_gateway_config(broker_config, tmp_path, dead_letters={"max_count": 1000, "max_bytes": max_bytes}))
    flood = 60
    try:
        for i in range(flood):  # 300 KiB each: over the 256 KiB payload limit, so too_large
            publisher.raw(b"%06d" % i + b"x" * (300 * 1024 - 6))
        assert gateway.wait_until(lambda: gateway.counts().get("rejected_too_large", 0) >= flood, timeout=60)
    finally:
        gateway.stop()
    # Each keeps its first 64 KiB; 1 MiB holds 1024 / 64 = 16 of them, the newest 16.
    kept = max_bytes // DEAD_LETTER_KEEP_BYTES
    assert kept == 16
    rows = gateway.store.dead_letters(limit=1000)
    assert len(rows) == kept
    assert sum(len(row["payload"]) for row in rows) == kept * 64 * 1024
    assert sorted(int(row["payload"][:6]) for row in rows) == list(range(flood - kept, flood))  # oldest went first
    assert gateway.counts().get("dead_letters_pruned") == flood - kept  # 60 - 16 = 44


def test_dead_letters_are_bounded_by_count(broker_config: BrokerConfig, tmp_path: Path, publisher: Publisher) -> None:
    gateway = _started(local_gateway_config(broker_config, tmp_path, dead_letters={"max_count": 10}))
    try:
        for i in range(30):
            publisher.raw(b"not json %d" % i)
        assert gateway.wait_until(lambda: gateway.counts().get("rejected_not_json", 0) >= 30, timeout=20)
    finally:
        gateway.stop()
    rows = gateway.store.dead_letters(limit=1000)
    assert sorted(row["payload"] for row in rows) == sorted(b"not json %d" % i for i in range(20, 30))
    assert gateway.counts().get("dead_letters_pruned") == 20  # 30 refused - 10 kept
