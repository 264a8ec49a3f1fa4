"""The device drivers an agent can run, found by name: each driver registers itself.

A driver is one module in this package (or in another distribution, through the
`warden.drivers` entry point group) that defines its device config model, a StrictModel
whose `driver` field is a one-value Literal, and a module-level ``DRIVER = DriverSpec(...)``
saying how to build the driver for a configured device. Nothing central lists drivers:
agent/config.py builds the `devices` union from what is found here (docs/agent.md,
"Writing a driver"). Heavy libraries are imported by the driver when it is built, so
an agent pays only for the drivers its devices use.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Callable, get_args

from agent.drivers.base import Driver, DriverHost
from warden.config import StrictModel

ENTRY_POINT_GROUP = "warden.drivers"


@dataclass(frozen=True)
class DriverSpec:
    """One driver: its device model and how the agent builds it for a device."""

    model: type[StrictModel]
    build: Callable[[Any, DriverHost], Driver]

    @property
    def name(self) -> str:
        """The device's `driver` value that selects this driver."""
        (name,) = get_args(self.model.model_fields["driver"].annotation)
        return str(name)


@cache
def drivers() -> dict[str, DriverSpec]:
    """Every driver by name: the modules of this package, then installed entry points."""
    import agent.drivers as package

    specs: list[DriverSpec] = []
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        spec = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "DRIVER", None)
        if spec is not None:
            specs.append(spec)
    specs.extend(entry.load() for entry in entry_points(group=ENTRY_POINT_GROUP))
    found: dict[str, DriverSpec] = {}
    for spec in specs:
        if spec.name in found:
            raise RuntimeError(f"two drivers are named {spec.name!r}: {found[spec.name].model} and {spec.model}")
        found[spec.name] = spec
    return found


def driver_for(device: StrictModel) -> DriverSpec:
    """The driver of a configured device (its model says which)."""
    return drivers()[device.driver]  # type: ignore[attr-defined]
