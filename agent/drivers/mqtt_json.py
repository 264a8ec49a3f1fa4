"""MQTT-native devices: a device publishes JSON on a topic; declared fields become readings.

Example payload of a simulated AC meter: {"ts": "2026-11-17T18:00:00Z", "power_w": 812.5,
"energy_kwh": 1234.56}, with `fields: {power_w: {quantity: power, unit: W}, ...}`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from agent.drivers.base import Driver, DriverHost
from agent.drivers.mqtt_device import MqttDeviceDriver, PayloadError, device_time, parse_object
from agent.drivers.registry import DriverSpec
from warden.config import StrictModel
from warden.events import Event, Identifier, Quantity, Reading, stable_event_id

__all__ = ["FieldMapping", "MqttJsonDevice", "MqttJsonDriver", "PayloadError"]


class FieldMapping(StrictModel):
    quantity: Quantity
    unit: str
    cumulative: bool = False
    scale: float = 1.0
    channel: Identifier | None = Field(
        default=None, description="The readings' channel tag: needed when another field has the same quantity and unit"
    )


class MqttJsonDevice(StrictModel):
    """A device that publishes JSON on an MQTT topic; fields are mapped to readings."""

    driver: Literal["mqtt_json"]
    id: Identifier
    topic: str
    time_field: str = "ts"
    fields: dict[str, FieldMapping] = Field(min_length=1)

    @model_validator(mode="after")
    def _fields_apart(self) -> MqttJsonDevice:
        """Two fields with one quantity, unit and channel would be one time series: in
        InfluxDB the second reading of a message overwrites the first (issue 17). Refused
        rather than tagged behind the operator's back, so a field's series never changes
        because another field was added; the event ids do not involve the channel."""
        seen: dict[tuple[str, str, str | None], str] = {}
        for name, mapping in self.fields.items():
            other = seen.setdefault((mapping.quantity, mapping.unit, mapping.channel), name)
            if other != name:
                channel = f"channel {mapping.channel!r}" if mapping.channel else "no channel"
                raise ValueError(
                    f"fields.{name}: same quantity ({mapping.quantity}), unit ({mapping.unit}) and {channel} as fields.{other}, "
                    f"so their readings would overwrite each other in the historian; give fields.{name} a channel, e.g. channel: {name}"
                )
        return self


class MqttJsonDriver(MqttDeviceDriver):
    """Stateless mapping from device payloads to readings; the agent owns the MQTT client."""

    config: MqttJsonDevice

    def events(self, payload: bytes, received: datetime) -> list[Event]:
        return list(self.readings(payload, received))

    def readings(self, payload: bytes, received: datetime) -> list[Reading]:
        document = parse_object(payload)
        event_time = device_time(document.get(self.config.time_field), received)
        readings = []
        for name, mapping in self.config.fields.items():
            if name not in document:
                continue
            value = document[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PayloadError("bad_field", f"{name} must be a finite number, got {value!r}")
            try:
                readings.append(
                    Reading(
                        id=stable_event_id(self.site, self.device_id, name, event_time.isoformat()),
                        site=self.site,
                        device=self.device_id,
                        event_time=event_time,
                        receive_time=received,
                        quantity=mapping.quantity,
                        value=float(value) * mapping.scale,
                        unit=mapping.unit,
                        cumulative=mapping.cumulative,
                        channel=mapping.channel,  # not part of the id: ids stay as they were
                    )
                )
            except ValidationError as exc:
                raise PayloadError("bad_field", f"{name}: {exc.errors(include_url=False)[0]['msg']}") from None
        if not readings:
            raise PayloadError("no_fields", f"none of {sorted(self.config.fields)} present")
        return readings


def _build(device: MqttJsonDevice, host: DriverHost) -> Driver:
    return MqttJsonDriver(device, host.site, host.emit, host.clock)


DRIVER = DriverSpec(model=MqttJsonDevice, build=_build)
