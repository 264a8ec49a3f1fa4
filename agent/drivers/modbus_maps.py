"""Register maps of real Modbus meters, shipped so a device is configured by model name.

`registers: sdm120` in an agent's device config expands to the map below. Each entry is
written exactly as a user would write it under `registers:` (docs/agent.md), so a preset
can be copied into a config file and edited. Sources: the manufacturers' protocol sheets.
"""

from __future__ import annotations

from typing import Any

#: Eastron SDM120 (single-phase DIN-rail meter, RS-485): input registers (function 04),
#: each value an IEEE-754 float32 in two registers, high word first.
SDM120: list[dict[str, Any]] = [
    {"name": "voltage", "address": 0x0000, "quantity": "voltage", "unit": "V"},
    {"name": "current", "address": 0x0006, "quantity": "current", "unit": "A"},
    {"name": "active_power", "address": 0x000C, "quantity": "power", "unit": "W"},
    {"name": "apparent_power", "address": 0x0012, "quantity": "apparent_power", "unit": "VA"},
    {"name": "reactive_power", "address": 0x0018, "quantity": "reactive_power", "unit": "var"},
    {"name": "power_factor", "address": 0x001E, "quantity": "power_factor", "unit": "1"},
    {"name": "frequency", "address": 0x0046, "quantity": "frequency", "unit": "Hz"},
    {"name": "import_energy", "address": 0x0048, "quantity": "energy", "unit": "kWh", "cumulative": True},
    {"name": "export_energy", "address": 0x004A, "quantity": "energy", "unit": "kWh", "cumulative": True},
    {"name": "total_energy", "address": 0x0156, "quantity": "energy", "unit": "kWh", "cumulative": True},
]

_COMMON = {"function": "input", "data_type": "float32", "word_order": "big"}

PRESETS: dict[str, list[dict[str, Any]]] = {
    "sdm120": [{**_COMMON, **entry} for entry in SDM120],
}


def preset(name: str) -> list[dict[str, Any]]:
    """A fresh copy of a preset's register list; KeyError if there is no such preset."""
    return [dict(entry) for entry in PRESETS[name]]
