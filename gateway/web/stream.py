"""Server-sent events of alert changes.

Alert changes are announced on the gateway's worker thread (rules) and on API threads
(a person acknowledging); SSE clients live on uvicorn's event loop. `publish` is the
bridge: it is called from any thread and hands each change to every subscriber's loop
with `call_soon_threadsafe`, never touching an asyncio queue from the wrong thread.

Each change gets an id `<boot>-<seq>`; the last few hundred are kept, so a browser
reconnecting with `Last-Event-ID` gets what it missed, or a `reset` event (refetch the
list) when that is no longer known. A client too slow to keep up is disconnected rather
than allowed to grow a queue without bound; its browser reconnects and catches up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

from gateway.store import AlertChange

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 3000


@dataclass(frozen=True)
class _Item:
    seq: int
    event: str  # SSE event name: alert, reset, bye
    data: str


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item | None] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    replay: list[_Item] = field(default_factory=list)

    def offer(self, item: _Item | None) -> None:
        """On the subscriber's loop. None ends the stream (shutdown, or too slow)."""
        if item is None:
            while not self.queue.empty():
                self.queue.get_nowait()
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("alert stream client too slow; disconnecting it")
            self.offer(None)


class AlertBroadcaster:
    def __init__(self, backlog: int = 500) -> None:
        self.boot = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._seq = 0
        self._recent: deque[_Item] = deque(maxlen=backlog)
        self._subscribers: set[_Subscriber] = set()
        self._closed = False

    def publish(self, change: AlertChange) -> None:
        """An AlertChange listener: safe to call from any thread."""
        data = json.dumps({"change": change.action, "alert": asdict(change.alert)}, default=str)
        with self._lock:
            self._seq += 1
            item = _Item(self._seq, "alert", data)
            self._recent.append(item)
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            _deliver(subscriber, item)

    def subscribe(self, last_event_id: str | None) -> _Subscriber:
        """On the event loop: a new subscriber, with what it missed since `last_event_id`."""
        subscriber = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                subscriber.queue.put_nowait(None)
            subscriber.replay = self._missed(last_event_id)
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every stream, so the server can shut down instead of waiting on them."""
        with self._lock:
            self._closed = True
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            _deliver(subscriber, None)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _missed(self, last_event_id: str | None) -> list[_Item]:
        if not last_event_id:
            return []
        boot, _, seq = last_event_id.partition("-")
        oldest = self._recent[0].seq if self._recent else self._seq + 1
        if boot != self.boot or not seq.isdigit() or int(seq) + 1 < oldest:
            return [_Item(self._seq, "reset", "{}")]  # the gap is unknown: refetch the list
        return [item for item in self._recent if item.seq > int(seq)]

    def id_of(self, item: _Item) -> str:
        return f"{self.boot}-{item.seq}"


def _deliver(subscriber: _Subscriber, item: _Item | None) -> None:
    try:
        subscriber.loop.call_soon_threadsafe(subscriber.offer, item)
    except RuntimeError:  # its loop is closed: the server stopped
        pass


async def sse_events(broadcaster: AlertBroadcaster, subscriber: _Subscriber) -> AsyncIterator[str]:
    """The text/event-stream body for one client."""
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        for item in subscriber.replay:
            yield _frame(broadcaster, item)
        while True:
            try:
                item = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"  # also how a vanished client is noticed
                continue
            if item is None:
                yield "event: bye\ndata: {}\n\n"
                return
            yield _frame(broadcaster, item)
    finally:
        broadcaster.unsubscribe(subscriber)


def _frame(broadcaster: AlertBroadcaster, item: _Item) -> str:
    return f"id: {broadcaster.id_of(item)}\nevent: {item.event}\ndata: {item.data}\n\n"
