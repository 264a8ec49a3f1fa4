"""End-to-end acknowledgement at the agent (issue 17, item 8), against a real Mosquitto:
outbox rows outlive the broker's PUBACK and go only when the gateway's ack names them;
what is not confirmed is sent again after a timeout and after a reconnect.

The gateway is played by a test client that publishes acks in the gateway's wire format
(warden/acks.py) on the agent's ack topic; tests/gateway/test_acks.py checks the real
gateway sends them, and the fault suite runs both together.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.outbox import Outbox
from agent.uplink import UplinkPublisher
from tests.support.mqtt import Collector
from tests.support.wait import wait_for
from warden import topics
from warden.acks import encode_ack
from warden.config import BrokerConfig
from warden.events import Reading, decode_events, encode_events, stable_event_id
from warden.mqtt import make_client

T0 = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc)
SITE = "riverside"


def reading(n: int) -> Reading:
    return Reading(id=stable_event_id("uplink-ack", n), site=SITE, device="m", event_time=T0, quantity="power", value=n, unit="W")


class Uplink:
    """An outbox, a paho client and the publisher, wired as agent/runner.py wires them."""

    def __init__(self, broker: BrokerConfig, tmp: Path, **options: object) -> None:
        self.agent = f"agent-{uuid.uuid4().hex[:8]}"
        self.events_topic = topics.events_topic(SITE, self.agent)
        self.ack_topic = topics.ack_topic(SITE, self.agent)
        self.outbox = Outbox(tmp / "outbox.db")
        self.pubacks = 0
        self.client = make_client(broker, f"test-{self.agent}", manual_ack=True)
        self.publisher = UplinkPublisher(self.client, self.outbox, **options)  # type: ignore[arg-type]
        self.outbox.on_commit = self.publisher.notify
        self.client.on_publish = self._on_publish
        self.client.message_callback_add(self.ack_topic, self._on_ack)
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe(self.ack_topic, qos=1), self.connected.set())
        self.stop = threading.Event()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self.publisher.run, args=(self.stop, self.connected), daemon=True)

    def start(self, *events: Reading) -> None:
        """Queue `events`, then start publishing: batches hold what was queued by then."""
        for event in events:
            self.outbox.put(self.events_topic, event)
        self.thread.start()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        self.pubacks += 1
        self.publisher.on_publish(mid)

    def _on_ack(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.publisher.on_ack(message.payload)
        client.ack(message.mid, message.qos)

    def queued_values(self) -> list[float]:
        return [Reading.model_validate_json(row.body).value for row in self.outbox.peek(0, 1000)]

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()


class Gateway:
    """Stands in for the gateway: confirms event ids, retained, as gateway/acks.py does."""

    def __init__(self, broker: BrokerConfig) -> None:
        self.client = make_client(broker, f"test-gateway-{uuid.uuid4().hex[:8]}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def confirm(self, topic: str, *events: Reading) -> None:
        self.client.publish(topic, encode_ack([e.id for e in events]), qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(broker_config: BrokerConfig) -> Iterator[Gateway]:
    stand_in = Gateway(broker_config)
    yield stand_in
    stand_in.close()


def test_rows_outlive_the_brokers_puback_and_go_when_the_gateway_names_them(
    broker_config: BrokerConfig, tmp_path: Path, gateway: Gateway
) -> None:
    uplink = Uplink(broker_config, tmp_path, ack_timeout=60.0, batch_events=5)
    collector = Collector(broker_config, uplink.events_topic)
    try:
        events = [reading(n) for n in range(5)]
        uplink.start(*events)
        message = collector.message()
        # One batch of the five, in the one wire format of batches (warden.events).
        assert message.payload == encode_events(events)
        wait_for(lambda: uplink.pubacks >= 1, what="the broker's PUBACK")

        gateway.confirm(uplink.ack_topic, *events[:3])
        # The publisher handles the PUBACK before the confirmation that came after it:
        # once 3 rows are gone, the PUBACK deleted nothing (before issue 17 it deleted all 5).
        wait_for(lambda: len(uplink.outbox) == 2, what="the three confirmed rows deleted")
        assert uplink.queued_values() == [3.0, 4.0]

        gateway.confirm(uplink.ack_topic, *events[3:])
        wait_for(lambda: len(uplink.outbox) == 0, what="the rest confirmed")
        assert uplink.publisher.published_events == 5 and uplink.publisher.resends == 0
        assert uplink.publisher.wait_idle(5)
    finally:
        collector.close()
        uplink.close()


def test_what_is_not_confirmed_is_sent_again_after_the_timeout(
    broker_config: BrokerConfig, tmp_path: Path, gateway: Gateway
) -> None:
    uplink = Uplink(broker_config, tmp_path, ack_timeout=0.3, batch_events=10)
    collector = Collector(broker_config, uplink.events_topic)
    try:
        events = [reading(n) for n in range(3)]
        uplink.start(*events)
        first = decode_events(collector.message().payload)
        again = decode_events(collector.message().payload)  # no gateway answered: a resend
        assert [e.id for e in again] == [e.id for e in first] == [e.id for e in events]
        assert uplink.publisher.resends >= 1

        gateway.confirm(uplink.ack_topic, *events)
        wait_for(lambda: len(uplink.outbox) == 0, what="the resent rows confirmed")
    finally:
        collector.close()
        uplink.close()


def test_a_reconnect_sends_everything_unconfirmed_again_but_not_what_was_confirmed(
    broker_config: BrokerConfig, tmp_path: Path, gateway: Gateway
) -> None:
    uplink = Uplink(broker_config, tmp_path, ack_timeout=60.0, batch_events=1)
    collector = Collector(broker_config, uplink.events_topic)
    try:
        events = [reading(n) for n in range(3)]
        uplink.start(*events)
        assert [decode_events(collector.message().payload)[0].id for _ in events] == [e.id for e in events]
        gateway.confirm(uplink.ack_topic, events[0])
        wait_for(lambda: len(uplink.outbox) == 2, what="event 0 confirmed")

        uplink.publisher.reconnected()  # as agent/runner.py calls it on every connect
        resent = [decode_events(collector.message().payload)[0].id for _ in range(2)]
        assert resent == [events[1].id, events[2].id]  # 0 was confirmed: not sent again
    finally:
        collector.close()
        uplink.close()


def test_at_most_ack_window_events_wait_unconfirmed(broker_config: BrokerConfig, tmp_path: Path, gateway: Gateway) -> None:
    uplink = Uplink(broker_config, tmp_path, ack_timeout=60.0, batch_events=2, ack_window=4)
    collector = Collector(broker_config, uplink.events_topic)
    try:
        events = [reading(n) for n in range(6)]
        uplink.start(*events)
        sent = [e.id for _ in range(2) for e in decode_events(collector.message().payload)]
        assert sent == [e.id for e in events[:4]]  # two messages of two: the window is full
        wait_for(lambda: uplink.pubacks >= 2, what="both PUBACKs")
        assert collector.messages.empty()  # with the window full and PUBACKs in, nothing else went out
        gateway.confirm(uplink.ack_topic, *events[:4])
        assert [e.id for e in decode_events(collector.message().payload)] == [events[4].id, events[5].id]
    finally:
        collector.close()
        uplink.close()


def test_with_acknowledgement_off_the_brokers_puback_deletes(broker_config: BrokerConfig, tmp_path: Path) -> None:
    """`ack_timeout_seconds: null`: the behaviour before issue 17, kept for benchmarks."""
    uplink = Uplink(broker_config, tmp_path, ack_timeout=None)
    try:
        uplink.start(reading(0))
        wait_for(lambda: len(uplink.outbox) == 0, what="the row deleted on the PUBACK")
    finally:
        uplink.close()


def test_a_zero_ack_timeout_is_refused_naming_the_key() -> None:
    from pydantic import ValidationError

    from agent.config import AgentConfig

    base = {"id": "a", "site": SITE, "devices": [{"driver": "patrol_line", "id": "r", "port": "/dev/null"}]}
    assert AgentConfig.model_validate(base).ack_timeout_seconds == 30  # the documented default (docs/agent.md)
    with pytest.raises(ValidationError, match="ack_timeout_seconds"):
        AgentConfig.model_validate({**base, "ack_timeout_seconds": 0})
