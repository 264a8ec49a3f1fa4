"""An accelerated clock that can stand still.

A simulated night runs at thousands of times real time, so a second of real work (a
broker restarting, the pipeline catching up at the end of the night) would be hours of
simulated time. The night player pauses this clock around such work; the agent and
gateway share it, so their timers (heartbeats, Modbus polls, wand spool scans) stand
still too instead of firing hours of slots at once. Implements warden.clock.Clock.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

#: How often a wait re-checks its `stop` event while the clock is paused (real seconds).
_PAUSED_POLL_SECONDS = 0.05


class PausableClock:
    """Runs from `start` at `speed` times real time once `run()` is called; `pause()` and
    `resume()` stop and restart it without a jump."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulated clock needs a timezone-aware start")
        if speed <= 0:
            raise ValueError("the simulated clock speed must be positive")
        self.speed = speed
        self._base = start.astimezone(timezone.utc)  # simulated time when it last started running
        self._t0: float | None = None  # monotonic time it last started running; None: standing still
        self._changed = threading.Condition()

    @property
    def running(self) -> bool:
        with self._changed:
            return self._t0 is not None

    def run(self) -> None:
        """Start (or resume) the clock."""
        with self._changed:
            if self._t0 is None:
                self._t0 = time.monotonic()
                self._changed.notify_all()

    resume = run

    def pause(self) -> datetime:
        """Stop the clock where it is; return that time."""
        with self._changed:
            self._base = self._now_locked()
            self._t0 = None
            self._changed.notify_all()
            return self._base

    def now(self) -> datetime:
        with self._changed:
            return self._now_locked()

    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)

    def sleep_until(self, when: datetime) -> None:
        self.wait(threading.Event(), (when - self.now()).total_seconds())

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait `seconds` of simulated time (not counting pauses) or until `stop` is set."""
        with self._changed:
            until = self._now_locked() + timedelta(seconds=max(0.0, seconds))
        while not stop.is_set():
            with self._changed:
                if self._t0 is None:
                    self._changed.wait(_PAUSED_POLL_SECONDS)  # `stop` cannot notify us
                    continue
                remaining = (until - self._now_locked()).total_seconds()
            if remaining <= 0:
                return False
            stop.wait(remaining / self.speed)
        return True

    def _now_locked(self) -> datetime:
        if self._t0 is None:
            return self._base
        return self._base + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)
