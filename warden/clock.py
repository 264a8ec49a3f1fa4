"""Clocks: the wall clock in production, an accelerated one for simulated nights,
and a hand-moved one for tests. Every component takes a Clock instead of calling
datetime.now(), so a 12-hour night can run in seconds and a test never sleeps."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait `seconds` of this clock's time or until `stop` is set; True if it was set."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds))


class SimClock:
    """Runs from `start` at `speed` times real time (speed 3600: an hour a second).

    With `running=False` it stands still at `start` until `run()`, so a whole simulated
    campus can be set up before the night begins.
    """

    def __init__(self, start: datetime, speed: float = 1.0, running: bool = True) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock start must be timezone-aware")
        if speed <= 0:
            raise ValueError("SimClock speed must be positive")
        self.start = start.astimezone(timezone.utc)
        self.speed = speed
        self._t0: float | None = time.monotonic() if running else None

    def run(self) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()

    def now(self) -> datetime:
        if self._t0 is None:
            return self.start
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.speed)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds) / self.speed)

    def sleep_until(self, when: datetime) -> None:
        self.sleep((when - self.now()).total_seconds())


class ManualClock:
    """Moves only when a test calls advance(); sleep() advances it instead of waiting."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock start must be timezone-aware")
        self._now = start.astimezone(timezone.utc)
        self._moved = threading.Condition()

    def now(self) -> datetime:
        with self._moved:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._moved:
            self._now += delta
            self._moved.notify_all()
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=max(0.0, seconds)))

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Block until a test has advanced the clock by `seconds`, or `stop` is set."""
        with self._moved:
            until = self._now + timedelta(seconds=max(0.0, seconds))
            while self._now < until and not stop.is_set():
                self._moved.wait(timeout=0.05)  # re-check `stop`, which cannot notify us
        return stop.is_set()
