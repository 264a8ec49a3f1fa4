"""How the agent reads each simulated device: the driver and its settings, exactly as a
site would write them in agent.yaml. The live night (simulators/night.py) writes these
into the agent config it hands out; the replay (simulators/replay.py) builds the same
drivers in-process, so both read the devices through the same code.

Also the gateway's side: the site file and gateway config for a scenario's night, as the
demo, `warden simulate --gateway-config-out` and the fault suite write them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agent.config import AgentConfig
from simulators.ac_meter import POWER_FIELDS, SDM120_INCLUDE
from simulators.cold_room import TEMPERATURE_FIELDS
from simulators.scenario import (
    DeviceSpec,
    DoorControllerSpec,
    PatrolReaderSpec,
    PowerMeterSpec,
    Scenario,
    TemperatureSensorSpec,
    WandDockSpec,
    WaterMeterSpec,
    WetSensorSpec,
)
from simulators.timeline import Night
from simulators.water_meter import WATER_FIELDS
from simulators.wet_sensor import WET_FIELDS
from warden.config import BrokerConfig

#: Real seconds the agent waits for a simulated Modbus answer. At thousands of times real
#: time every real second is an hour of the night, so the simulated bus must fail fast.
MODBUS_TIMEOUT_SECONDS = 0.25
#: The simulated RS-485 line's speed, both ends: the fastest at which Modbus RTU still times
#: frames by the character (above it the spec fixes the gaps). pymodbus paces a read by the
#: character time, so a poll of the four SDM120 registers takes 37 ms of real time at 9600
#: baud (12 simulated minutes at 20 000x), about 21 ms at 19200.
MODBUS_BAUDRATE = 19200
#: How often a serial driver reopens a lost port, real seconds.
RECONNECT_SECONDS = 0.2


def device_config(night: Night, spec: DeviceSpec, *, port: str = "", spool_dir: Path | None = None) -> dict[str, Any]:
    """The agent's `devices:` entry for one simulated device."""
    device = spec.device
    if isinstance(spec, PowerMeterSpec) and spec.transport == "modbus":
        return {
            "driver": "modbus_rtu", "id": device, "port": port, "unit_id": spec.unit_id,
            "registers": "sdm120", "include": SDM120_INCLUDE, "poll_seconds": spec.poll_seconds,
            "timeout_seconds": MODBUS_TIMEOUT_SECONDS, "baudrate": MODBUS_BAUDRATE,
        }
    fields = {PowerMeterSpec: POWER_FIELDS, WaterMeterSpec: WATER_FIELDS, WetSensorSpec: WET_FIELDS,
              TemperatureSensorSpec: TEMPERATURE_FIELDS}
    if isinstance(spec, (PowerMeterSpec, WaterMeterSpec, WetSensorSpec, TemperatureSensorSpec)):
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


def gateway_document(
    scenario: Scenario,
    broker: BrokerConfig,
    *,
    historian: dict[str, Any],
    state_db: str = "data/state.db",
    api_port: int = 0,
    site_file: str = "site.yaml",
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """gateway.yaml for the scenario's site and rules; `rules` overrides top-level rule keys
    (the fault suite's allowed_lateness_seconds). Relative paths are the file's folder's."""
    return {
        "site_file": site_file,
        "broker": broker.model_dump(mode="json", exclude_none=True),
        "historian": historian,
        "state_db": state_db,
        "api": {"host": "127.0.0.1", "port": api_port},
        "rules": {**scenario.rules.model_dump(mode="json"), **(rules or {})},
    }


def write_gateway_config(path: Path, scenario: Scenario, broker: BrokerConfig, **options: Any) -> Path:
    """Write gateway.yaml (gateway_document's `options`) and the site file beside it."""
    document = gateway_document(scenario, broker, **options)
    write_yaml(path.parent / document["site_file"], scenario.site.model_dump(mode="json"))
    return write_yaml(path, document)


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
