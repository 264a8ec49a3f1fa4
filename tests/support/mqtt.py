"""A test-side MQTT subscriber that collects what arrives, to wait on it instead of sleeping."""

from __future__ import annotations

import queue
import threading
import uuid

import paho.mqtt.client as mqtt

from warden.config import BrokerConfig
from warden.events import Event, decode_events
from warden.mqtt import make_client


class Collector:
    """Subscribes to `topic` with QoS 1; `persistent` keeps its session across broker restarts."""

    def __init__(self, broker: BrokerConfig, topic: str, *, persistent: bool = False) -> None:
        self.topic = topic
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = make_client(broker, f"test-collector-{uuid.uuid4().hex[:8]}", persistent_session=persistent)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = lambda c, u, message: self.messages.put(message)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError(f"could not subscribe to {topic}")

    def events(self, count: int, timeout: float = 10.0) -> list[Event]:
        """The next `count` events (batches unpacked), or AssertionError after `timeout`."""
        events: list[Event] = []
        while len(events) < count:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"got {len(events)} of {count} events on {self.topic}") from None
            events.extend(decode_events(message.payload))
        return events

    def message(self, timeout: float = 10.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(broker: BrokerConfig, timeout: float = 10.0) -> list[str]:
    """Delete every retained message on the broker, so one test's agent status does not
    reach the next test's gateway. Returns the topics cleared.

    Mosquitto delivers retained messages on subscribe, before it handles anything the
    subscriber publishes afterwards, so a marker published after the SUBACK arrives last.
    """
    marker = f"test/marker/{uuid.uuid4().hex}"
    retained: list[str] = []
    seen_marker = threading.Event()
    subscribed = threading.Event()
    client = make_client(broker, f"test-cleaner-{uuid.uuid4().hex[:8]}")

    def on_message(c: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == marker:
            seen_marker.set()
        elif message.retain and message.payload:
            retained.append(message.topic)

    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("#", qos=1)
        if not subscribed.wait(timeout):
            raise TimeoutError("could not subscribe to clear retained messages")
        client.publish(marker, b"x", qos=1)
        if not seen_marker.wait(timeout):
            raise TimeoutError("marker never came back while clearing retained messages")
        for topic in retained:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return retained
