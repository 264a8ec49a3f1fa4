"""MQTT-native devices: a device publishes JSON on a topic; declared fields become readings.

Example payload of a simulated AC meter: {"ts": "2026-11-17T18:00:00Z", "power_w": 812.5,
"energy_kwh": 1234.56}, with `fields: {power_w: {quantity: power, unit: W}, ...}`.
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import ValidationError

from agent.drivers.mqtt_device import MqttDeviceDriver, PayloadError, device_time, parse_object
from warden.config import MqttJsonDevice
from warden.events import Event, Reading, stable_event_id

__all__ = ["MqttJsonDriver", "PayloadError"]


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
