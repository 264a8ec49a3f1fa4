"""Moves events from the outbox to the uplink broker, in order, in batches, and deletes
them once the gateway confirmed it took them in (end-to-end acknowledgement).

A broker's PUBACK only says the broker has the message: a broker killed without its
persistence, replaced by a fresh one, or holding no session for a gateway that has not
started yet loses it. So a row stays in the outbox until its event id comes back on the
agent's retained ack topic (warden/acks.py, sent by gateway/acks.py after the gateway's
commit). What is not confirmed is sent again: at once after every reconnect, and when no
confirmation came for `ack_timeout` seconds (doubling while nothing is confirmed, up to
`MAX_TIMEOUT_FACTOR` times). The gateway drops the copies by event id and confirms them
again. Memory stays bounded: at most `ack_window` events are sent and unconfirmed; the
rest wait on disk, within the outbox's own limits (agent/outbox.py).

With `ack_timeout` None, rows are deleted on the broker's PUBACK, as before issue 17
(for benchmarks measuring what the acknowledgement costs, and brokers with no gateway).
paho re-sends unacknowledged QoS 1 messages itself after a reconnect.

Batches are encoded by `warden.events.encode_events`, the one owner of the wire format.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import paho.mqtt.client as mqtt

from agent.outbox import Outbox, QueuedEvent
from warden.acks import decode_ack
from warden.events import Event, InvalidPayload, decode_events, encode_events

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Waiting for a confirmation doubles after each timeout without one, up to this factor.
MAX_TIMEOUT_FACTOR = 8


class UplinkPublisher:
    def __init__(
        self,
        client: mqtt.Client,
        outbox: Outbox,
        *,
        batch_events: int = 200,
        batch_bytes: int = 128 * 1024,
        window: int = 20,
        ack_timeout: float | None = 30.0,
        ack_window: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`window`: messages the broker has not acknowledged yet; `ack_window`: events
        sent that the gateway has not confirmed yet."""
        self.client = client
        self.outbox = outbox
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.window = window
        self.ack_timeout = ack_timeout
        self.ack_window = ack_window
        self._monotonic = monotonic
        self.published_events = 0  # deleted from the outbox: confirmed (or PUBACKed, with acks off)
        self.resends = 0  # times everything unconfirmed was sent again (reconnects and timeouts)
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._confirms: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._inflight: dict[int, list[int]] = {}
        self._early_acks: set[int] = set()
        self._last_seq = 0
        self._unconfirmed: dict[str, list[int]] = {}  # event id -> outbox seqs sent and not confirmed
        self._deadline: float | None = None  # monotonic time by which a confirmation is due
        self._timeouts = 0  # consecutive timeouts without a confirmation
        self._rewind = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle_lock = threading.Lock()  # makes "check empty, then set idle" atomic against notify()

    @property
    def end_to_end(self) -> bool:
        return self.ack_timeout is not None

    # Called from paho's network thread: only hand over, never touch our state.
    def on_publish(self, mid: int) -> None:
        self._acks.put(mid)
        self._wake.set()

    def on_ack(self, payload: bytes) -> None:
        """A message on the agent's ack topic (paho's network thread)."""
        ids = decode_ack(payload)
        if ids:
            self._confirms.put(ids)
            self._wake.set()

    def reconnected(self) -> None:
        """A new connection: whatever the last one carried may be gone with the broker."""
        if self.end_to_end:
            self._rewind.set()
        self.notify()

    def notify(self) -> None:
        """Something was queued; publish it soon."""
        with self._idle_lock:
            self._idle.clear()
        self._wake.set()

    def run(self, stop: threading.Event, connected: threading.Event) -> None:
        while not stop.is_set():
            self._drain_acks()
            self._drain_confirms()
            self._check_timeout()
            if self._rewind.is_set():
                self._rewind.clear()
                self._resend_unconfirmed("reconnected")
            if connected.is_set() and self._may_send() and self._publish_next_batch():
                continue
            with self._idle_lock:
                if not self._inflight and not self._unconfirmed and len(self.outbox) == 0:
                    self._idle.set()
            self._wake.wait(self._sleep())
            self._wake.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Block until the outbox is empty and nothing is in flight (e.g. before shutdown)."""
        return self._idle.wait(timeout)

    # ------------------------------------------------------------------ acknowledgements

    def _drain_acks(self) -> None:
        """The broker's PUBACKs: they free the window; with acks off they also delete,
        everything acknowledged so far in one transaction (one disk sync)."""
        settled: list[int] = []
        for mid in _drained(self._acks):
            if mid in self._inflight:
                settled += self._inflight.pop(mid)
            else:
                self._early_acks.add(mid)
        if not self.end_to_end:
            self._settle(settled)

    def _drain_confirms(self) -> None:
        """The gateway's confirmations: delete what they name, in one transaction."""
        seqs: list[int] = []
        for ids in _drained(self._confirms):
            for event_id in ids:
                seqs += self._unconfirmed.pop(event_id, ())
        if seqs:
            self._settle(seqs)
            self._timeouts = 0
            self._deadline = self._monotonic() + self.ack_timeout if self._unconfirmed and self.ack_timeout else None

    def _settle(self, seqs: list[int]) -> None:
        if seqs:
            self.outbox.remove(seqs)
            self.published_events += len(seqs)

    def _check_timeout(self) -> None:
        if self._deadline is not None and self._monotonic() >= self._deadline:
            self._timeouts += 1
            self._resend_unconfirmed("no confirmation from the gateway")

    def _resend_unconfirmed(self, why: str) -> None:
        """Start again from the oldest row: everything not confirmed goes out again."""
        self._deadline = None
        if not self._unconfirmed:  # everything sent was confirmed (and deleted): nothing to resend
            self._last_seq = 0
            return
        self.resends += 1
        log.warning("sending unconfirmed events again", extra={"why": why, "unconfirmed": len(self._unconfirmed), "queued": len(self.outbox)})
        # Forget what was sent: rows shed from the outbox meanwhile must not be awaited for
        # ever, and a confirmation that comes in before the resend only costs another copy.
        self._unconfirmed.clear()
        self._last_seq = 0

    def _may_send(self) -> bool:
        if len(self._inflight) >= self.window:
            return False
        return not self.end_to_end or len(self._unconfirmed) < self.ack_window

    def _sleep(self) -> float:
        if self._deadline is None:
            return 0.5
        return max(0.0, min(0.5, self._deadline - self._monotonic()))

    # ------------------------------------------------------------------ publishing

    def _publish_next_batch(self) -> bool:
        rows = self._take_batch(self.outbox.peek(self._last_seq, self.batch_events))
        if not rows:
            return False
        payload = self._payload(rows)
        if payload is None:
            return True  # unusable rows removed; try the next
        info = self.client.publish(rows[0].topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("publish refused by client", extra={"rc": int(info.rc), "topic": rows[0].topic})
            return False
        self._last_seq = rows[-1].seq
        if self.end_to_end:
            self._await_confirmation(rows)
        self._inflight[info.mid] = [row.seq for row in rows]
        if info.mid in self._early_acks:
            self._early_acks.discard(info.mid)
            seqs = self._inflight.pop(info.mid)
            if not self.end_to_end:
                self._settle(seqs)
        return True

    def _await_confirmation(self, rows: list[QueuedEvent]) -> None:
        for row in rows:
            seqs = self._unconfirmed.setdefault(row.event_id, [])
            if row.seq not in seqs:
                seqs.append(row.seq)
        if self._deadline is None and self.ack_timeout is not None:
            factor = min(2**self._timeouts, MAX_TIMEOUT_FACTOR)
            self._deadline = self._monotonic() + self.ack_timeout * factor

    def _payload(self, rows: list[QueuedEvent]) -> bytes | None:
        """The batch as `encode_events` writes it. A row that no longer parses (written
        by another version) is dropped with an error: no gateway would accept it."""
        events: list[Event] = []
        bad: list[int] = []
        for row in rows:
            try:
                events += decode_events(row.body.encode())
            except InvalidPayload as exc:
                log.error("dropping an outbox row that is not a valid event", extra={"seq": row.seq, "reason": exc.reason})
                bad.append(row.seq)
        if bad:
            self.outbox.remove(bad)
            return None
        return encode_events(events)

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


def _drained(waiting: queue.Queue[T]) -> Iterator[T]:
    """What `waiting` holds now, taken without blocking."""
    while True:
        try:
            yield waiting.get_nowait()
        except queue.Empty:
            return
