"""Reconnect delays with exponential backoff and jitter, applied to a paho client.

paho doubles its reconnect delay on its own but without jitter, so every agent of a site
that lost the same broker retries in lock step and hits it together when it returns.
`JitteredBackoff` draws each delay at random from the upper half of the exponential
window ("equal jitter": it keeps growing but no two agents stay in step) and hands it to
paho before paho waits, through the public `reconnect_delay_set`: setting min = max makes
paho's next wait exactly that delay.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Protocol

log = logging.getLogger(__name__)


class _Reconnecting(Protocol):
    def reconnect_delay_set(self, min_delay: int = 1, max_delay: int = 120) -> None: ...


class JitteredBackoff:
    """Delay n (from 0) is uniform in [w/2, w] with w = min(max_delay, min_delay * 2**n)."""

    def __init__(self, min_delay: float, max_delay: float, rng: random.Random | None = None) -> None:
        if not 0 < min_delay <= max_delay:
            raise ValueError("need 0 < min_delay <= max_delay")
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.failures = 0
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    def next_delay(self) -> float:
        with self._lock:
            window = min(self.max_delay, self.min_delay * 2 ** min(self.failures, 62))
            self.failures += 1
            return self._rng.uniform(window / 2, window)

    def reset(self) -> None:
        """Connected: the next outage starts again from the shortest delay."""
        with self._lock:
            self.failures = 0

    def apply(self, client: _Reconnecting) -> float:
        """Draw the next delay and make it paho's next wait; call on disconnect and connect failure."""
        delay = self.next_delay()
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
        log.debug("next reconnect attempt scheduled", extra={"delay_seconds": round(delay, 3), "failures": self.failures})
        return delay
