"""An edge agent's configuration: its identity, brokers, outbox and devices.

The device models belong to their drivers (agent/drivers/<driver>.py); the `devices`
list accepts every registered driver's model, told apart by the `driver` key
(agent/drivers/registry.py), so adding a driver edits nothing here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from agent.drivers.registry import drivers
from warden.config import BrokerConfig, ConfigPath, StrictModel, require_unique, tagged_union
from warden.events import Identifier

#: Any registered driver's device model, chosen by the device's `driver` key.
DeviceConfig = tagged_union("driver", [spec.model for spec in drivers().values()])


class AgentConfig(StrictModel):
    id: Identifier
    site: Identifier
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    device_broker: BrokerConfig | None = Field(
        default=None, description="Broker MQTT-native devices publish to; default: the uplink broker"
    )
    buffer_path: ConfigPath = Path("data/agent-outbox.db")
    buffer_max_events: int = Field(
        default=1_000_000, ge=100, description="Outbox cap; past it the oldest readings are shed (docs/agent.md)"
    )
    heartbeat_seconds: float = Field(default=30, gt=0)
    ack_timeout_seconds: float | None = Field(
        default=30, gt=0, description="Resend what the gateway has not confirmed after this long (agent/uplink.py); "
        "null: delete on the broker's PUBACK, benchmarks only"
    )
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_devices(self) -> AgentConfig:
        require_unique((d.id for d in self.devices), "devices")
        return self

    @model_validator(mode="after")
    def _device_broker_own_account(self) -> AgentConfig:
        """Client ids are usernames (deploy/mosquitto.conf): two connections with one account
        to one broker would throw each other off, over and over."""
        d, b = self.device_broker, self.broker
        if d is not None and d.username and (d.host, d.port, d.username) == (b.host, b.port, b.username):
            raise ValueError("device_broker.username: the uplink's account on the same broker; "
                             "leave device_broker out (the uplink then serves devices) or give it its own account")
        return self

    @model_validator(mode="after")
    def _one_bus_per_port(self) -> AgentConfig:
        """Devices on one serial port share the line: only bus devices (a `bus_address`,
        e.g. Modbus meters) may, with the same speed and framing and distinct addresses."""
        first: dict[str, Any] = {}
        for device in self.devices:
            port = getattr(device, "port", None)
            if port is None:
                continue
            other = first.setdefault(port, device)
            if other is device:
                continue
            if not (hasattr(other, "bus_address") and hasattr(device, "bus_address")) or other.driver != device.driver:
                raise ValueError(f"devices: {other.id} and {device.id} cannot share port {port}")
            if other.bus_address == device.bus_address:
                raise ValueError(f"devices: {other.id} and {device.id} share port {port} and unit_id {device.bus_address}")
            if other.line_settings != device.line_settings:
                raise ValueError(
                    f"devices: {other.id} and {device.id} share port {port} but differ in "
                    "baudrate, bytesize, parity, stopbits, timeout_seconds or retries"
                )
        return self
