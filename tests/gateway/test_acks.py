"""The gateway's end-to-end acknowledgement (issue 17, item 8), real Mosquitto and a real
in-process gateway: once a batch is committed, each sending agent gets, retained on its
own ack topic, the ids of its events the batch took in (stored, duplicate, or refused
one by one), and never an id that state.db does not hold yet."""

from __future__ import annotations

import queue
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt

from gateway.service import Gateway
from tests.support.gateway_config import local_gateway_config
from tests.support.mqtt import Collector
from warden import topics
from warden.acks import decode_ack
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Reading, encode_events, stable_event_id
from warden.mqtt import make_client

EVENING = datetime(2026, 11, 17, 18, 0, tzinfo=timezone.utc)
SITE = SiteConfig.model_validate({
    "id": "riverside", "timezone": "Europe/Berlin",
    "buildings": [{"id": "A", "rooms": [{"id": "A-204", "devices": ["ac-a204"]}]}],
})  # fmt: skip


def power(minute: int, *, at: datetime = EVENING) -> Reading:
    when = at + timedelta(minutes=minute)
    return Reading(id=stable_event_id("acks", when.isoformat()), site="riverside", device="ac-a204",
                   event_time=when, quantity="power", value=minute, unit="W")  # fmt: skip


class AckWatcher:
    """Records each ack with the ids state.db held when it arrived."""

    def __init__(self, broker: BrokerConfig, topic: str, state_db: Path) -> None:
        self.state_db = state_db
        self.acks: queue.Queue[tuple[list[str], set[str], bool]] = queue.Queue()
        self.collector = Collector(broker, topic)
        self.collector.client.on_message = self._on_message

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        ids = decode_ack(message.payload)
        db = sqlite3.connect(self.state_db, timeout=10)
        try:
            held = {i for (i,) in db.execute("SELECT id FROM seen_events")}
        finally:
            db.close()
        self.acks.put((ids, held, message.retain))

    def next(self) -> tuple[list[str], set[str], bool]:
        return self.acks.get(timeout=10)


def test_each_agent_gets_the_ids_of_its_events_after_they_are_committed(broker_config: BrokerConfig, tmp_path: Path) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    events_topic, ack_topic = topics.events_topic("riverside", agent), topics.ack_topic("riverside", agent)
    config = local_gateway_config(broker_config, tmp_path)
    gateway = Gateway(config, SITE, ManualClock(EVENING + timedelta(hours=12)))
    gateway.start()
    assert gateway.subscribed.wait(10)
    watcher = AckWatcher(broker_config, ack_topic, tmp_path / "state.db")
    other = Collector(broker_config, topics.ack_topic("riverside", "someone-else"))
    sender = make_client(broker_config, f"test-{agent}")
    sender.connect(broker_config.host, broker_config.port)
    sender.loop_start()
    try:
        first, second = power(0), power(5)
        sender.publish(events_topic, encode_events([first, second]), qos=1).wait_for_publish(5)
        ids, held, _ = watcher.next()
        assert ids == [first.id, second.id]
        assert set(ids) <= held  # committed before it was acknowledged

        # A resend (a duplicate) is acknowledged again; an event stamped in year 1 is
        # refused one by one (kept as a dead letter) and acknowledged, or it would come back for ever.
        ancient = power(0, at=datetime(1, 1, 1, tzinfo=timezone.utc))
        sender.publish(events_topic, encode_events([first, ancient]), qos=1).wait_for_publish(5)
        ids, held, _ = watcher.next()
        assert sorted(ids) == sorted([first.id, ancient.id])
        assert first.id in held and ancient.id not in held  # refused: not stored as seen
        assert gateway.counts().get("events_stored_reading") == 2  # first and second only
    finally:
        sender.disconnect()
        sender.loop_stop()
        watcher.collector.close()
        gateway.stop()
    assert other.messages.empty()  # nothing for another agent's topic
    other.close()

    late = AckWatcher(broker_config, ack_topic, tmp_path / "state.db")  # a restarted agent subscribing
    try:
        ids, _, retained = late.next()
        assert retained and sorted(ids) == sorted([first.id, ancient.id])  # the latest ack, kept by the broker
    finally:
        late.collector.close()


def test_refused_payloads_are_acknowledged_by_the_ids_they_name_and_garbage_never_raises() -> None:
    from gateway.acks import DeliveryAcks
    from gateway.store import DeadLetter

    acks = DeliveryAcks(None)  # type: ignore[arg-type]  # collect() does not publish
    topic = topics.events_topic("riverside", "agent-a")
    batch = encode_events([power(0), power(5)])  # e.g. refused whole for a site mismatch
    letters = [
        DeadLetter(topic, batch, "site mismatch", "site_mismatch"),
        DeadLetter(topic, b"[" * 100_000, "not json", "not_json"),  # past json's recursion limit
        DeadLetter(topic, b"\xff\xfe", "not utf-8", "not_utf8"),
        DeadLetter("warden/v1/riverside//events", batch, "bad topic", "bad_topic"),  # names no agent
    ]
    assert acks.collect([], letters) == {topics.ack_topic("riverside", "agent-a"): [power(0).id, power(5).id]}


def test_a_large_ack_goes_in_chunks_of_which_only_the_last_is_retained() -> None:
    """A catch-up batch can hold tens of thousands of one agent's events: the broker keeps
    one retained message per agent, so it must stay small."""
    from gateway.acks import ACK_CHUNK_IDS, DeliveryAcks

    sent: list[tuple[str, list[str], bool]] = []

    class Recorder:  # the one paho call DeliveryAcks makes
        def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
            sent.append((topic, decode_ack(payload), retain))

    acks = DeliveryAcks(Recorder())  # type: ignore[arg-type]
    topic = topics.ack_topic("riverside", "agent-a")
    ids = [f"id-{n}" for n in range(2 * ACK_CHUNK_IDS + 5)]
    acks.publish({topic: ids})
    # 2 005 ids in chunks of 1 000: 1 000, 1 000 and 5; the last one retained.
    assert [(len(chunk), retain) for _, chunk, retain in sent] == [(1000, False), (1000, False), (5, True)]
    assert [i for _, chunk, _ in sent for i in chunk] == ids
