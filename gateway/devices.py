"""What the gateway knows of each device: when it last spoke, what it sent, and the
health counters of its latest heartbeat; and of each campus's bridge to the centre: its
state and its last cuts (a cut-off campus's devices are silent because of the link).
Kept in memory by the ingest worker (after each committed batch) and read by the API;
historians are for history, this is for "now".
"""

from __future__ import annotations

import threading
from collections import Counter, deque
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
    clock_ahead: int = 0  # events its clock stamped too far ahead of its agent (warden.events.clamp_device_clock)
    clock_ahead_s: float | None = None  # by how much, the latest of them


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
                if event.device_time is not None:
                    device.clock_ahead += 1
                    device.clock_ahead_s = (event.device_time - event.event_time).total_seconds()
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
                    "clock_ahead": {"events": d.clock_ahead, "seconds": d.clock_ahead_s},
                }
                for (device_site, device_id), d in self._devices.items()
                if site is None or device_site == site
            }


#: Cuts remembered per campus (a campus cut every night for weeks stays a few kilobytes).
CUTS_KEPT = 20
#: Cuts /api/health shows per campus, newest first.
CUTS_SHOWN = 5


@dataclass
class _Campus:
    up: bool
    heard_at: datetime | None  # when the gateway last heard its state; None: only restored
    cuts: deque[tuple[datetime, datetime | None]]  # (start, end), oldest first; end None while down


class CampusLinks:
    """Each bridged campus's link (by site id) as heard on the gateway's clock, and its last
    CUTS_KEPT cuts. A repeated state (the retained copy at each reconnect) is no new cut.
    Thread-safe: the worker writes, API threads read."""

    def __init__(self, kept: int = CUTS_KEPT) -> None:
        self._lock = threading.Lock()
        self._kept = kept
        self._campuses: dict[str, _Campus] = {}

    def restore(self, cuts: dict[str, tuple[datetime, datetime | None]]) -> None:
        """Each site's latest cut as the rules kept it across a restart (this memory is lost
        with the process; the rules' snapshot is not), so a cut begun before it keeps its start."""
        with self._lock:
            for site, (start, end) in cuts.items():
                self._campuses[site] = _Campus(end is not None, None, deque([(start, end)], maxlen=self._kept))

    def heard(self, site: str, up: bool, at: datetime) -> None:
        """The bridge of `site` said up or down at `at`: a cut starts or ends on a change."""
        with self._lock:
            campus = self._campuses.get(site)
            if campus is None:
                campus = self._campuses[site] = _Campus(True, None, deque(maxlen=self._kept))
            if campus.up and not up:
                campus.cuts.append((at, None))
            elif not campus.up and up and campus.cuts:
                campus.cuts[-1] = (campus.cuts[-1][0], at)
            campus.up, campus.heard_at = up, at

    def device_fields(self, site: str) -> dict[str, str | None]:
        """What GET /api/devices says of each device of `site`: `link` ("up", "down"; None: no
        bridge heard of) and `link_down_since`, so a cut-off campus's silence reads as the link's."""
        with self._lock:
            campus = self._campuses.get(site)
            if campus is None:
                return {"link": None, "link_down_since": None}
            since = campus.cuts[-1][0].isoformat() if not campus.up and campus.cuts else None
            return {"link": "up" if campus.up else "down", "link_down_since": since}

    def health(self, shown: int = CUTS_SHOWN) -> dict[str, dict[str, Any]]:
        """JSON-ready: site -> state, heard_at, and its last `shown` cuts, newest first, each
        with start, end (None while down) and minutes (None while down)."""
        with self._lock:
            return {site: {"state": "up" if c.up else "down",
                           "heard_at": c.heard_at.isoformat() if c.heard_at else None,
                           "cuts": [_cut_json(start, end) for start, end in reversed(list(c.cuts)[-shown:])]}
                    for site, c in self._campuses.items()}  # fmt: skip


def _cut_json(start: datetime, end: datetime | None) -> dict[str, Any]:
    minutes = round((end - start).total_seconds() / 60, 2) if end is not None else None
    return {"start": start.isoformat(), "end": end.isoformat() if end else None, "minutes": minutes}
