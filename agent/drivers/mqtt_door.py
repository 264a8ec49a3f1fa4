"""Door-access controllers that publish JSON on MQTT (docs/protocols/door-mqtt.md).

A controller reports what its doors do (card granted or denied, opened, closed, held
open, forced) and a periodic heartbeat. `mqtt_json` maps numeric fields to readings and
cannot say "door gate-main was forced", hence this driver. Example payloads:

    {"ts": "2026-11-17T19:12:00Z", "seq": 118, "door": "gate-main", "event": "granted", "card": "0042"}
    {"ts": "2026-11-17T19:15:00Z", "seq": 119, "event": "heartbeat"}
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationError

from agent.drivers.base import Driver, DriverHost, Emit
from agent.drivers.mqtt_device import MqttDeviceDriver, PayloadError, device_time, parse_object
from agent.drivers.registry import DriverSpec
from warden.clock import Clock
from warden.config import StrictModel
from warden.events import DeviceState, DeviceStatus, DoorAction, DoorEvent, Event, Identifier, stable_event_id

HEARTBEAT = "heartbeat"
_ACTIONS = {action.value: action for action in DoorAction}
_CARD = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class MqttDoorDevice(StrictModel):
    """A door-access controller publishing JSON door events and heartbeats on an MQTT topic
    (docs/protocols/door-mqtt.md)."""

    driver: Literal["mqtt_door"]
    id: Identifier
    topic: str
    time_field: str = "ts"
    doors: list[Identifier] | None = Field(
        default=None, description="Doors the controller serves; events for other doors are refused. None: any"
    )


class MqttDoorDriver(MqttDeviceDriver):
    """Stateless mapping from controller payloads to door events; the agent owns the MQTT client."""

    kind = "door controller"
    config: MqttDoorDevice

    def __init__(self, config: MqttDoorDevice, site: str, emit: Emit, clock: Clock) -> None:
        super().__init__(config, site, emit, clock)
        self._doors = None if config.doors is None else frozenset(config.doors)

    def events(self, payload: bytes, received: datetime) -> list[Event]:
        return [self.event(payload, received)]

    def event(self, payload: bytes, received: datetime) -> Event:
        """The door event or heartbeat a payload stands for, or PayloadError naming the fault."""
        document = parse_object(payload)
        event_time = device_time(document.get(self.config.time_field), received)
        seq = document.get("seq", "")
        if seq != "" and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise PayloadError("bad_field", f"seq must be a non-negative integer, got {seq!r}")
        kind = document.get("event")
        if kind == HEARTBEAT:
            return self._heartbeat(seq, event_time, received)
        if not isinstance(kind, str) or kind not in _ACTIONS:
            raise PayloadError("bad_event", f"event must be one of {sorted([*_ACTIONS, HEARTBEAT])}, got {kind!r}")
        door, card = document.get("door"), document.get("card")
        if not isinstance(door, str):
            raise PayloadError("bad_field", f"door must be a string, got {door!r}")
        if self._doors is not None and door not in self._doors:
            raise PayloadError("unknown_door", f"{door!r} is not one of {sorted(self._doors)}")
        if card is not None and (not isinstance(card, str) or not _CARD.fullmatch(card)):
            raise PayloadError("bad_field", f"card must be 1-64 characters of [A-Za-z0-9_.:-], got {card!r}")
        try:
            return DoorEvent(
                id=stable_event_id(self.site, self.device_id, "door", seq, door, kind, event_time.isoformat()),
                site=self.site,
                device=self.device_id,
                event_time=event_time,
                receive_time=received,
                action=_ACTIONS[kind],
                door=door,
                card=card,
            )
        except ValidationError as exc:
            raise PayloadError("bad_field", exc.errors(include_url=False)[0]["msg"]) from None

    def _heartbeat(self, seq: object, event_time: datetime, received: datetime) -> DeviceStatus:
        return DeviceStatus(
            id=stable_event_id(self.site, self.device_id, "heartbeat", seq, event_time.isoformat()),
            site=self.site,
            device=self.device_id,
            event_time=event_time,
            receive_time=received,
            state=DeviceState.HEARTBEAT,
            counters=self.counters.snapshot(),
        )


def _build(device: MqttDoorDevice, host: DriverHost) -> Driver:
    return MqttDoorDriver(device, host.site, host.emit, host.clock)


DRIVER = DriverSpec(model=MqttDoorDevice, build=_build)
