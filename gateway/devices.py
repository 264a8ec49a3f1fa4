"""What the gateway knows of each device: when it last spoke, what it sent, and the
health counters of its latest heartbeat. Kept in memory by the ingest worker (after each
committed batch) and read by the API; historians are for history, this is for "now".
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from warden.events import DeviceStatus, Event


@dataclass
class _Device:
    last_seen: datetime  # newest event time
    received_at: datetime  # when the gateway last got an event of it
    events: Counter[str] = field(default_factory=Counter)  # by kind, since the gateway started
    state: str | None = None  # latest status event: online, offline, heartbeat
    state_at: datetime | None = None
    counters: dict[str, float] = field(default_factory=dict)  # of the latest status event


class DeviceRegistry:
    """Thread-safe: the worker writes, API threads read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], _Device] = {}  # by (site, device): two sites may share a device id

    def observe(self, events: Iterable[Event], now: datetime | None = None) -> None:
        received = now or datetime.now(timezone.utc)
        with self._lock:
            for event in events:
                device = self._devices.get((event.site, event.device))
                if device is None:
                    device = self._devices[(event.site, event.device)] = _Device(event.event_time, received)
                device.last_seen = max(device.last_seen, event.event_time)
                device.received_at = received
                device.events[event.kind] += 1
                if isinstance(event, DeviceStatus) and (device.state_at is None or event.event_time >= device.state_at):
                    device.state, device.state_at, device.counters = event.state.value, event.event_time, dict(event.counters)

    def snapshot(self, site: str | None = None) -> dict[str, dict[str, Any]]:
        """JSON-ready copy: device id -> last_seen, received_at, events, state, counters;
        `site`: that site's devices only (a gateway of several sites, issue 21)."""
        with self._lock:
            return {
                device_id: {
                    "last_seen": d.last_seen.isoformat(),
                    "received_at": d.received_at.isoformat(),
                    "events": dict(d.events),
                    "state": d.state,
                    "state_at": d.state_at.isoformat() if d.state_at else None,
                    "counters": dict(d.counters),
                }
                for (device_site, device_id), d in self._devices.items()
                if site is None or device_site == site
            }
