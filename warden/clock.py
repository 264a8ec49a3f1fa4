"""Clocks: the wall clock in production, an accelerated one for simulated nights (or
another process's, read from the file it publishes), and a hand-moved one for tests.
Every component takes a Clock instead of calling datetime.now(), so a 12-hour night can
run in seconds and a test never sleeps."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

#: The file a simulated clock publishes (simulators/clock.py) and FileClock reads.
SIM_CLOCK_FORMAT = "warden.sim-clock"
SIM_CLOCK_VERSION = 1


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


@dataclass(frozen=True)
class _ClockState:
    base: datetime  # simulated time when it last started running, or where it stands
    speed: float
    running_since: float | None  # wall-clock time (time.time()) it started running; None: paused

    def at(self, wall: float) -> datetime:
        if self.running_since is None:
            return self.base
        return self.base + timedelta(seconds=(wall - self.running_since) * self.speed)


class FileClock:
    """Another process's simulated clock, read from the file it publishes
    (simulators.clock.PausableClock with `publish`): how `warden agent --sim-clock` and
    `warden gateway --sim-clock` share one accelerated, pausable night with the simulator.
    For simulated nights and drills only, never production.

    The file is re-read when it changes (checked at most every `check_seconds`), so a
    pause or a jump reaches every reader within milliseconds; waits poll it too, since a
    file cannot notify. Raises ValueError if the file is missing or not a clock file.
    """

    def __init__(self, path: Path, *, check_seconds: float = 0.005, poll_seconds: float = 0.05) -> None:
        self.path = path
        self._check_seconds = check_seconds
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._unreadable = False  # warned once, until it reads again
        self._state = self._read()

    def now(self) -> datetime:
        return self._current().at(time.time())

    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait `seconds` of simulated time (pauses do not count) or until `stop` is set."""
        until = self.now() + timedelta(seconds=max(0.0, seconds))
        while not stop.is_set():
            state = self._current()
            if state.running_since is None:
                stop.wait(self._poll_seconds)
                continue
            remaining = (until - state.at(time.time())).total_seconds()
            if remaining <= 0:
                return False
            stop.wait(min(remaining / state.speed, self._poll_seconds))  # a pause may come meanwhile
        return True

    def _current(self) -> _ClockState:
        with self._lock:
            if time.monotonic() - self._checked >= self._check_seconds:
                try:
                    self._state = self._read()
                    self._unreadable = False
                except (OSError, ValueError) as exc:  # keep the last state; the writer may be gone
                    if not self._unreadable:
                        log.warning("simulated clock file unreadable; keeping its last state", extra={"file": str(self.path), "error": str(exc)})
                    self._unreadable = True
            return self._state

    def _read(self) -> _ClockState:
        """The state in the file, re-parsed only if the file was replaced since."""
        self._checked = time.monotonic()
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise ValueError(f"{self.path}: no simulated clock file there") from None
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return self._state
        try:
            document = json.loads(self.path.read_text())
            if document.get("format") != SIM_CLOCK_FORMAT or document.get("version") != SIM_CLOCK_VERSION:
                raise ValueError(f"not a {SIM_CLOCK_FORMAT} file, version {SIM_CLOCK_VERSION}")
            base = datetime.fromisoformat(document["time"])
            if base.tzinfo is None:
                raise ValueError("time: needs a timezone")
            speed = float(document["speed"])
            since = document["running_since"]
            state = _ClockState(base.astimezone(timezone.utc), speed, None if since is None else float(since))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path}: not a simulated clock file ({exc!r})") from None
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        if speed <= 0:
            raise ValueError(f"{self.path}: speed must be positive")
        self._stamp = stamp
        return state
