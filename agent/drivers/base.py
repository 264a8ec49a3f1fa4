"""What every driver shares: how it hands events on, and the counters it keeps."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol, TypeVar

from warden.clock import Clock
from warden.events import Event

T = TypeVar("T")

#: Drivers hand each normalised event to this callable (the agent's outbox).
Emit = Callable[[Event], None]


@dataclass
class DriverCounters:
    """Health of one device as its driver sees it; published with the agent's heartbeat."""

    events: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by reason, e.g. "bad_checksum"
    last_seen: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_event(self, at: datetime) -> None:
        with self._lock:
            self.events += 1
            self.last_seen = at

    def count_error(self, reason: str) -> None:
        with self._lock:
            self.errors[reason] += 1

    def snapshot(self) -> dict[str, float]:
        """Flat numbers for a heartbeat: events, error_<reason>, and last_seen as Unix seconds."""
        with self._lock:
            flat: dict[str, float] = {"events": self.events}
            if self.last_seen is not None:
                flat["last_seen"] = round(self.last_seen.timestamp(), 3)
            flat.update({f"error_{reason}": n for reason, n in self.errors.items()})
            return flat


class Driver(Protocol):
    device_id: str
    counters: DriverCounters

    def run(self, stop: threading.Event) -> None:
        """Read the device until `stop` is set; never raise on bad device input."""
        ...


class DriverHost(Protocol):
    """What the agent offers a driver it builds (agent/runner.py: Agent)."""

    @property
    def site(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    def emit(self, event: Event) -> None:
        """Hand an event to the outbox; blocks while the disk is behind (own-thread drivers)."""
        ...

    def serial_line(self, make: Callable[[Emit], Driver], port: str) -> Driver:
        """A line-reading driver: read by the agent's shared serial hub when `port` can be
        selected (`make` gets a non-blocking emit), else run on a thread of its own."""
        ...

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """One object per agent that drivers share, e.g. the Modbus bus of each port."""
        ...
