"""Waiting for the broker's PUBACKs without failing when the broker goes away.

paho marks a message published while the client was disconnected with an error code that
it never clears, so `MQTTMessageInfo.is_published()` and `wait_for_publish()` raise
("Message publish failed") even after paho resent the message on reconnect and the broker
acknowledged it. This tracks acknowledgements by message id through `on_publish` instead,
so a simulation whose broker is killed waits for it and goes on, as the agent does
(issue 17, item 12).
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

#: While waiting for a broker that is gone, a line is logged this often.
WAITING_LOG_SECONDS = 30.0


class PubackTracker:
    """The QoS 1 messages sent and not yet acknowledged, by message id."""

    def __init__(self, client: mqtt.Client) -> None:
        self._client = client
        self._changed = threading.Condition()
        self._unacked: set[int] = set()
        self._early: set[int] = set()  # acknowledged before publish() returned its id
        client.on_publish = self._on_publish

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1; paho keeps it, and resends it after a reconnect. The lock is
        never held while paho runs: paho calls on_publish holding its own lock."""
        mid = self._client.publish(topic, payload, qos=1).mid
        with self._changed:
            if mid in self._early:
                self._early.discard(mid)
            else:
                self._unacked.add(mid)

    def wait_all(self, connected: threading.Event) -> None:
        """Block until every message so far is acknowledged, however long the broker is away."""
        started = last_log = time.monotonic()
        with self._changed:
            while self._unacked:
                self._changed.wait(1.0)
                now = time.monotonic()
                if self._unacked and not connected.is_set() and now - last_log >= WAITING_LOG_SECONDS:
                    last_log = now
                    log.warning("broker unreachable; waiting for it to acknowledge what was published",
                                extra={"unacknowledged": len(self._unacked), "waited_s": round(now - started)})

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, properties: object) -> None:
        with self._changed:
            if mid in self._unacked:
                self._unacked.discard(mid)
                self._changed.notify_all()
            else:
                self._early.add(mid)
