"""An accelerated clock that can stand still.

A simulated night runs at thousands of times real time, so a second of real work (a
broker restarting, the pipeline catching up at the end of the night) would be hours of
simulated time. The night player pauses this clock around such work; the agent and
gateway share it, so their timers (heartbeats, Modbus polls, wand spool scans) stand
still too instead of firing hours of slots at once. Implements warden.clock.Clock.

In one process they share the object. Separate processes (`warden agent --sim-clock`,
`warden gateway --sim-clock`, the fault suite) share it through a small file the clock
publishes on every change and warden.clock.FileClock reads: then it runs on the wall
clock (time.time()), the one time base every process on the machine agrees on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from warden.clock import SIM_CLOCK_FORMAT, SIM_CLOCK_VERSION

log = logging.getLogger(__name__)

#: How often a wait re-checks its `stop` event while the clock is paused (real seconds).
_PAUSED_POLL_SECONDS = 0.05


class PausableClock:
    """Runs from `start` at `speed` times real time once `run()` is called; `pause()` and
    `resume()` stop and restart it without a jump, `jump()` sets it anywhere.

    With `publish`, every change is written to that file (atomically) for other
    processes' warden.clock.FileClock."""

    def __init__(self, start: datetime, speed: float = 1.0, *, publish: Path | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulated clock needs a timezone-aware start")
        if speed <= 0:
            raise ValueError("the simulated clock speed must be positive")
        self.speed = speed
        self.publish = publish
        self._base = start.astimezone(timezone.utc)  # simulated time when it last started running
        self._t0: float | None = None  # real time it last started running; None: standing still
        self._changed = threading.Condition()
        self._published_ns = 0
        with self._changed:
            self._publish_locked()

    @property
    def running(self) -> bool:
        with self._changed:
            return self._t0 is not None

    def run(self) -> None:
        """Start (or resume) the clock."""
        with self._changed:
            if self._t0 is None:
                self._t0 = self._real()
                self._changed_locked()

    resume = run

    def pause(self) -> datetime:
        """Stop the clock where it is; return that time."""
        with self._changed:
            self._base = self._now_locked()
            self._t0 = None
            self._changed_locked()
            return self._base

    def jump(self, to: datetime) -> None:
        """Set the clock to `to`, running or not (the end of a drill jumps past the night
        so a gateway's lateness-delayed tick lands on the night's end)."""
        if to.tzinfo is None:
            raise ValueError("the simulated clock needs a timezone-aware time")
        with self._changed:
            self._base = to.astimezone(timezone.utc)
            if self._t0 is not None:
                self._t0 = self._real()
            self._changed_locked()

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

    def _real(self) -> float:
        """Monotonic in one process; the wall clock when other processes read the file."""
        return time.time() if self.publish is not None else time.monotonic()

    def _now_locked(self) -> datetime:
        if self._t0 is None:
            return self._base
        return self._base + timedelta(seconds=(self._real() - self._t0) * self.speed)

    def _changed_locked(self) -> None:
        self._publish_locked()
        self._changed.notify_all()

    def _publish_locked(self) -> None:
        """Write the state (tmp file + rename: a reader never sees half of it)."""
        if self.publish is None:
            return
        state = {
            "format": SIM_CLOCK_FORMAT,
            "version": SIM_CLOCK_VERSION,
            "time": self._base.isoformat(),
            "speed": self.speed,
            "running_since": self._t0,
        }
        staging = self.publish.with_name(f".{self.publish.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps(state) + "\n")
        # A distinct mtime for every version: readers look for a change by (inode, mtime,
        # size), and the kernel's coarse timestamps and reused inodes could repeat all three.
        self._published_ns = max(time.time_ns(), self._published_ns + 1)
        os.utime(staging, ns=(self._published_ns, self._published_ns))
        os.replace(staging, self.publish)
        log.debug("simulated clock published", extra={"file": str(self.publish), **state})
