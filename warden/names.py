"""Display names beside ids: what people read ("科学实验室 (A-204)") versus what topics,
APIs and integrators use ("A-204").

Ids stay ASCII identifiers; a building, room, device (Room.device_names), door
(DoorOverride.name), checkpoint or route may also have a name in any script. Messages and
screens show `label()`: the name with the id in brackets, or the bare id when no name was
given, so a site without names reads as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # names are read from the config's models; the kernel imports none here at run time
    from warden.config import PatrolRoute, SiteConfig


class Named(Protocol):
    """Anything with a display name, e.g. a door's settings (rules/doors.py: DoorOverride)."""

    name: str


def label(name: str, ident: str) -> str:
    """'name (id)' when a name is given and differs from the id, else the id."""
    name = name.strip()
    return f"{name} ({ident})" if name and name != ident else ident


def name_or_id(name: str, ident: str) -> str:
    """The name alone where space is short (a board's chip), else the id."""
    return name.strip() or ident


def building_name(site: SiteConfig, building_id: str) -> str:
    return next((b.name for b in site.buildings if b.id == building_id), "")


def room_name(site: SiteConfig, room_id: str, building_id: str | None = None) -> str:
    """The room's name; `building_id` picks one when two buildings reuse a room id."""
    for building in site.buildings:
        if building_id is not None and building.id != building_id:
            continue
        for room in building.rooms:
            if room.id == room_id:
                return room.name
    return ""


def device_name(site: SiteConfig, device_id: str) -> str:
    """A device's name from its room's `device_names`."""
    for building in site.buildings:
        for room in building.rooms:
            if device_id in room.device_names:
                return room.device_names[device_id]
    return ""


def room_label(site: SiteConfig, room_id: str, building_id: str | None = None) -> str:
    return label(room_name(site, room_id, building_id), room_id)


def device_label(site: SiteConfig, device_id: str) -> str:
    """'空调 (ac-a204)' and, when its room has a name, where it is: '空调 (ac-a204) in 科学实验室'."""
    place = site.locate(device_id)
    where = room_name(site, place.room, place.building) if place else ""
    return label(device_name(site, device_id), device_id) + (f" in {where}" if where else "")


def door_label(doors: Mapping[str, Named], door_id: str) -> str:
    override = doors.get(door_id)
    return label(override.name if override else "", door_id)


def route_label(route: PatrolRoute) -> str:
    return label(route.name, route.id)


def checkpoint_name(route: PatrolRoute, tag: str) -> str:
    return next((c.name for c in route.checkpoints if c.tag == tag), "")


def checkpoint_label(route: PatrolRoute, tag: str) -> str:
    return label(checkpoint_name(route, tag), tag)
