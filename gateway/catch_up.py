"""Whether the gateway has taken in what the broker queued for it while it was away.

After (re)connecting, the broker first delivers the backlog of the gateway's persistent
session. Time must not pass in the rules before that backlog is in: a gateway restarted
after half an hour would otherwise page silences and missed rounds whose data only sits
in its queue. Once subscribed, the gateway publishes a marker to its own sync topic; the
broker queues it behind the backlog, so when the marker comes back every message before
it has been received. Once the worker has processed as many messages, the gateway has
caught up and ticks resume. If no marker comes back within `timeout` real seconds (a
broker ACL without the sync topic, docs/security.md), it counts as caught up, with a
warning: better late ticks than none.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

log = logging.getLogger(__name__)


class CatchUp:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._received = 0  # messages handed to the worker, cumulative
        self._processed = 0  # of those, processed (stored or refused) and acknowledged
        self._target: int | None = None  # messages before the marker
        self._nonce = ""
        self._since = time.monotonic()
        self._done = False

    def connected(self) -> bytes:
        """A new session began: returns the marker to publish once subscribed."""
        with self._lock:
            self._nonce = secrets.token_hex(8)
            self._target, self._done, self._since = None, False, time.monotonic()
            return self._nonce.encode()

    def received(self) -> None:
        with self._lock:
            self._received += 1

    def marker(self, payload: bytes) -> None:
        """The marker came back: everything the broker held for us is received."""
        with self._lock:
            if payload.decode(errors="replace") == self._nonce and self._target is None:
                self._target = self._received

    def processed(self, messages: int) -> None:
        with self._lock:
            self._processed += messages

    def caught_up(self) -> bool:
        with self._lock:
            if self._done:
                return True
            if self._target is not None and self._processed >= self._target:
                self._done = True
                log.info("caught up with the broker's backlog", extra={"messages": self._target})
            elif time.monotonic() - self._since > self._timeout:
                self._done = True
                log.warning("no catch-up marker from the broker; ticking anyway (does the ACL allow the sync topic?)",
                            extra={"waited_s": self._timeout})  # fmt: skip
            return self._done
