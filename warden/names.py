"""Display names beside ids: what people read ("科学实验室 (A-204)") versus what topics,
APIs and integrators use ("A-204").

Ids stay ASCII identifiers; a building, room, device (Room.device_names), door
(DoorOverride.name), checkpoint or route may also have a name in any script. Messages and
screens show `label()`: the name with the id in brackets, or the bare id when no name was
given, so a site without names reads as before.

The one owner of display names: the labels below, and the lookup by id that messages,
reports and the API use (`site_names`, `name_table`; warden.i18n re-exports them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

#: warden.config's SiteConfig and PatrolRoute, read by attribute and not imported, not even
#: for typing: warden.config imports warden.i18n, which re-exports this module's lookup.
SiteConfig = Any
PatrolRoute = Any


Names = Callable[[str, str], str]  # (kind, id) -> display name


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


# --------------------------------------------------------------------------- lookup by id


def display_name(obj: Any) -> str:
    """What people read for a building, room, device, door, checkpoint or route: its
    `name` when it has one (any Unicode), else its id. The one place names are read, so
    models that gain a `name` field later are shown by it without other changes."""
    return str(getattr(obj, "name", "") or getattr(obj, "id", "") or getattr(obj, "tag", "") or obj)


def site_names(site: Any, rules: Any = None) -> Names:
    """A lookup of display names: the site's buildings, rooms and the devices a room names
    (`device_names`), and, given the rules' settings, doors (`rules.doors.doors`), patrol
    routes and their checkpoints (`rules.patrol.routes`)."""
    table: dict[str, str] = {}
    for building in getattr(site, "buildings", []) or []:
        table.setdefault(str(building.id), display_name(building))
        for room in getattr(building, "rooms", []) or []:
            table.setdefault(str(room.id), display_name(room))
            for device, name in (getattr(room, "device_names", None) or {}).items():
                table.setdefault(str(device), name or str(device))
    doors = getattr(getattr(rules, "doors", None), "doors", None) or {}
    for door, settings in doors.items():
        table.setdefault(str(door), getattr(settings, "name", "") or str(door))
    for route in getattr(getattr(rules, "patrol", None), "routes", None) or []:
        table.setdefault(str(route.id), display_name(route))
        for checkpoint in route.checkpoints:
            table.setdefault(str(checkpoint.tag), getattr(checkpoint, "name", "") or str(checkpoint.tag))

    def lookup(kind: str, value: str) -> str:
        return table.get(value, value)

    return lookup


def name_table(site: Any) -> dict[str, str]:
    """Ids with a display name different from the id, as JSON-ready data (for a report or a page)."""
    lookup = site_names(site)
    table: dict[str, str] = {}
    for building in getattr(site, "buildings", []) or []:
        for item in (building, *(getattr(building, "rooms", []) or [])):
            name = lookup("", str(item.id))
            if name != str(item.id):
                table[str(item.id)] = name
    return table
