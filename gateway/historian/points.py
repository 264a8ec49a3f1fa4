"""The one mapping from a warden event to a time-series point (docs/storage.md).

Both historians store exactly these points, so a dashboard query means the same
thing on SQLite and on InfluxDB. Tags are what you group and filter by and must stay
few (every distinct tag set is a new series in InfluxDB); anything with many distinct
values (card numbers, guard ids, tag ids, event ids) is a field, never a tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from warden.config import DeviceLocation, SiteConfig
from warden.events import DeviceStatus, DoorEvent, Event, PatrolTap, Reading

#: building/room tag of a device the site file does not list.
UNKNOWN = "unknown"

FieldValue = float | int | str | bool

_RESERVED_STATUS_NAMES = frozenset({"site", "building", "room", "device", "state", "count"})

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class Point(NamedTuple):
    """One stored sample: what InfluxDB calls a point, and one row in SQLite.
    (A named tuple: built for every event on the ingest path, and cheaper than a dataclass.)"""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time: datetime  # timezone-aware UTC
    event_id: str  # identity of the source event; storage metadata, not a tag or field


class SeriesUnavailable(RuntimeError):
    """A historian cannot answer a series query (an InfluxDB-compatible server without
    Flux); the message says why, and the API answers 501 with it."""


def to_epoch_ns(when: datetime) -> int:
    """Exact integer nanoseconds (datetimes carry microseconds; no float rounding)."""
    return (when - _EPOCH) // _MICROSECOND * 1000


def from_epoch_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def event_point(event: Event, location: DeviceLocation | None) -> Point:
    """Map one event; `location` gives the building/room tags ("unknown" if None)."""
    measurement, extra_tags, fields = point_parts(event)
    building, room = place(location)
    tags = {"site": event.site, "building": building, "room": room, "device": event.device, **extra_tags}
    return Point(measurement, tags, fields, event.event_time, event.id)


#: The site, or sites (issue 21), whose devices a historian places in buildings and rooms.
Sites = SiteConfig | Sequence[SiteConfig]


def event_points(events: Iterable[Event], site: Sites) -> list[Point]:
    """Map events of `site`; devices of another site are not looked up in this one."""
    return [event_point(event, location) for event, location in located(events, site)]


def located(events: Iterable[Event], site: Sites) -> Iterable[tuple[Event, DeviceLocation | None]]:
    """Each event with its device's place in its site (None: unknown, or a site not served)."""
    sites = {site.id: site} if isinstance(site, SiteConfig) else {s.id: s for s in site}
    locations: dict[tuple[str, str], DeviceLocation | None] = {}
    for event in events:
        key = (event.site, event.device)
        if key not in locations:
            served = sites.get(event.site)
            locations[key] = None if served is None else served.locate(event.device)
        yield event, locations[key]


def place(location: DeviceLocation | None) -> tuple[str, str]:
    """The building and room tags."""
    return (location.building, location.room) if location else (UNKNOWN, UNKNOWN)


def point_parts(event: Event) -> tuple[str, dict[str, str], dict[str, FieldValue]]:
    """Measurement, the tags besides site/building/room/device, and the fields."""
    if isinstance(event, Reading):
        tags = {"unit": event.unit}
        # InfluxDB keys a point by measurement, tags and time: two readings of one device,
        # quantity and unit at one time must differ in channel (import vs export energy),
        # or the last overwrites the first. Agents guarantee it (warden.config.MqttJsonDevice
        # refuses fields that would collide; Modbus registers are always channels).
        if event.channel is not None:
            tags["channel"] = event.channel
        return event.quantity.value, tags, {"value": float(event.value)}
    if isinstance(event, DoorEvent):
        fields: dict[str, FieldValue] = {"count": 1}
        if event.card:
            fields["card"] = event.card
        return "door", {"action": event.action.value, "door": event.door}, fields
    if isinstance(event, PatrolTap):
        fields = {"count": 1, "tag_id": event.tag}
        if event.guard:
            fields["guard"] = event.guard
        return "patrol_tap", {"source": event.source.value, "reader": event.reader}, fields
    if isinstance(event, DeviceStatus):
        # A counter named like a tag or "count" is renamed: InfluxDB 3 refuses such clashes.
        # (The schema already refuses non-finite counters, which InfluxDB could not store.)
        counters = {(f"counter_{k}" if k in _RESERVED_STATUS_NAMES else k): float(v) for k, v in event.counters.items()}
        return "device_status", {"state": event.state.value}, {**counters, "count": 1}
    raise TypeError(f"not a warden event: {type(event).__name__}")
