"""How the agent reads each simulated device: the driver and its settings, exactly as a
site would write them in agent.yaml. The live night (simulators/night.py) writes these
into the agent config it hands out; the replay (simulators/replay.py) builds the same
drivers in-process, so both read the devices through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulators.ac_meter import POWER_FIELDS, SDM120_INCLUDE
from simulators.scenario import (
    DeviceSpec,
    DoorControllerSpec,
    PatrolReaderSpec,
    PowerMeterSpec,
    WandDockSpec,
    WaterMeterSpec,
    WetSensorSpec,
)
from simulators.timeline import Night
from simulators.water_meter import WATER_FIELDS
from simulators.wet_sensor import WET_FIELDS
from warden.config import AgentConfig, BrokerConfig

#: Real seconds the agent waits for a simulated Modbus answer. At thousands of times real
#: time every real second is an hour of the night, so the simulated bus must fail fast.
MODBUS_TIMEOUT_SECONDS = 0.25
#: How often a serial driver reopens a lost port, real seconds.
RECONNECT_SECONDS = 0.2


def device_config(night: Night, spec: DeviceSpec, *, port: str = "", spool_dir: Path | None = None) -> dict[str, Any]:
    """The agent's `devices:` entry for one simulated device."""
    device = spec.device
    if isinstance(spec, PowerMeterSpec) and spec.transport == "modbus":
        return {
            "driver": "modbus_rtu", "id": device, "port": port, "unit_id": spec.unit_id,
            "registers": "sdm120", "include": SDM120_INCLUDE, "poll_seconds": spec.poll_seconds,
            "timeout_seconds": MODBUS_TIMEOUT_SECONDS,
        }
    fields = {PowerMeterSpec: POWER_FIELDS, WaterMeterSpec: WATER_FIELDS, WetSensorSpec: WET_FIELDS}
    if isinstance(spec, (PowerMeterSpec, WaterMeterSpec, WetSensorSpec)):
        return {"driver": "mqtt_json", "id": device, "topic": night.topics[device], "fields": fields[type(spec)]}
    if isinstance(spec, DoorControllerSpec) and spec.transport == "mqtt":
        return {"driver": "mqtt_door", "id": device, "topic": night.topics[device], "doors": list(spec.doors)}
    if isinstance(spec, DoorControllerSpec):
        return {"driver": "door_line", "id": device, "port": port, "reconnect_seconds": RECONNECT_SECONDS}
    if isinstance(spec, PatrolReaderSpec):
        return {"driver": "patrol_line", "id": device, "port": port, "reconnect_seconds": RECONNECT_SECONDS}
    assert isinstance(spec, WandDockSpec)
    return {"driver": "patrol_wand", "id": device, "spool_dir": str(spool_dir), "poll_seconds": spec.poll_seconds}


def needs_port(spec: DeviceSpec) -> bool:
    """Devices on a serial line (or a Modbus bus): the simulator opens a link for them."""
    if isinstance(spec, PatrolReaderSpec):
        return True
    if isinstance(spec, DoorControllerSpec):
        return spec.transport == "line"
    return isinstance(spec, PowerMeterSpec) and spec.transport == "modbus"


def agent_config(
    night: Night,
    *,
    broker: BrokerConfig,
    buffer_path: Path,
    ports: dict[str, str],
    spool_root: Path,
) -> AgentConfig:
    """The whole agent config that reads exactly the scenario's devices."""
    scenario = night.scenario
    devices = [
        device_config(night, spec, port=ports.get(spec.device, ""), spool_dir=spool_root / spec.device)
        for spec in scenario.devices
    ]
    return AgentConfig.model_validate({
        "id": scenario.agent,
        "site": scenario.site.id,
        "broker": broker.model_dump(),
        "buffer_path": str(buffer_path),
        "heartbeat_seconds": scenario.agent_heartbeat_seconds,
        "devices": devices,
    })
