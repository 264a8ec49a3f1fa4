"""Moves events from the outbox to the uplink broker, in order, in batches.

An outbox row is deleted only when the broker's PUBACK for the message that carried it
arrives. paho re-sends unacknowledged QoS 1 messages itself after a reconnect, so rows
stay "in flight" across reconnects; after an agent restart everything still in the
outbox is sent again, and the gateway drops what it had already seen by event id.
"""

from __future__ import annotations

import logging
import queue
import threading

import paho.mqtt.client as mqtt

from agent.outbox import Outbox, QueuedEvent

log = logging.getLogger(__name__)


class UplinkPublisher:
    def __init__(
        self,
        client: mqtt.Client,
        outbox: Outbox,
        *,
        batch_events: int = 200,
        batch_bytes: int = 128 * 1024,
        window: int = 20,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.window = window
        self.published_events = 0
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, list[int]] = {}
        self._early_acks: set[int] = set()
        self._last_seq = 0
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle_lock = threading.Lock()  # makes "check empty, then set idle" atomic against notify()

    # Called from paho's network thread: only hand the mid over, never touch our state.
    def on_publish(self, mid: int) -> None:
        self._acks.put(mid)
        self._wake.set()

    def notify(self) -> None:
        """Something was queued; publish it soon."""
        with self._idle_lock:
            self._idle.clear()
        self._wake.set()

    def run(self, stop: threading.Event, connected: threading.Event) -> None:
        while not stop.is_set():
            self._drain_acks()
            if connected.is_set() and len(self._inflight) < self.window and self._publish_next_batch():
                continue
            with self._idle_lock:
                if not self._inflight and len(self.outbox) == 0:
                    self._idle.set()
            self._wake.wait(0.5)
            self._wake.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Block until the outbox is empty and nothing is in flight (e.g. before shutdown)."""
        return self._idle.wait(timeout)

    def _drain_acks(self) -> None:
        """Delete everything acknowledged so far in one transaction (one disk sync)."""
        settled: list[int] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            if mid in self._inflight:
                settled += self._inflight.pop(mid)
            else:
                self._early_acks.add(mid)
        self._settle(settled)

    def _settle(self, seqs: list[int]) -> None:
        if seqs:
            self.outbox.remove(seqs)
            self.published_events += len(seqs)

    def _publish_next_batch(self) -> bool:
        rows = self._take_batch(self.outbox.peek(self._last_seq, self.batch_events))
        if not rows:
            return False
        info = self.client.publish(rows[0].topic, _batch_payload(rows), qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("publish refused by client", extra={"rc": int(info.rc), "topic": rows[0].topic})
            return False
        self._last_seq = rows[-1].seq
        self._inflight[info.mid] = [row.seq for row in rows]
        if info.mid in self._early_acks:
            self._early_acks.discard(info.mid)
            self._settle(self._inflight.pop(info.mid))
        return True

    def _take_batch(self, rows: list[QueuedEvent]) -> list[QueuedEvent]:
        """The leading rows that share a topic and fit in one message."""
        batch: list[QueuedEvent] = []
        size = 0
        for row in rows:
            if batch and (row.topic != batch[0].topic or size + len(row.body) > self.batch_bytes):
                break
            batch.append(row)
            size += len(row.body) + 1
        return batch


def _batch_payload(rows: list[QueuedEvent]) -> bytes:
    """Rows hold validated event JSON already; join them without re-serialising."""
    if len(rows) == 1:
        return rows[0].body.encode()
    return ('{"v":1,"events":[' + ",".join(row.body for row in rows) + "]}").encode()
