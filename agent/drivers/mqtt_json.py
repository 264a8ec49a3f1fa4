"""MQTT-native devices: a device publishes JSON on a topic; declared fields become readings.

Example payload of a simulated AC meter: {"ts": "2026-11-17T18:00:00Z", "power_w": 812.5,
"energy_kwh": 1234.56}, with `fields: {power_w: {quantity: power, unit: W}, ...}`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import datetime, timezone

from pydantic import ValidationError

from agent.drivers.base import DriverCounters, Emit
from warden.clock import Clock
from warden.config import MqttJsonDevice
from warden.events import Reading, stable_event_id

log = logging.getLogger(__name__)

MAX_DEVICE_PAYLOAD = 16 * 1024


class PayloadError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class MqttJsonDriver:
    """Stateless mapping from device payloads to readings; the agent owns the MQTT client."""

    def __init__(self, config: MqttJsonDevice, site: str, emit: Emit, clock: Clock) -> None:
        self.config = config
        self.device_id = config.id
        self.site = site
        self.emit = emit
        self.clock = clock
        self.counters = DriverCounters()

    @property
    def topic(self) -> str:
        return self.config.topic

    def run(self, stop: threading.Event) -> None:
        stop.wait()  # messages arrive through handle(), called by the agent's device client

    def handle(self, payload: bytes) -> None:
        """Map one device message; bad payloads are counted and logged, never raised."""
        now = self.clock.now()
        try:
            readings = self.readings(payload, now)
        except PayloadError as exc:
            self.counters.count_error(exc.reason)
            log.warning(
                "bad device payload",
                extra={"device": self.device_id, "topic": self.topic, "reason": str(exc), "bytes": repr(payload[:80])},
            )
            return
        for reading in readings:
            self.emit(reading)
        self.counters.count_event(now)

    def readings(self, payload: bytes, received: datetime) -> list[Reading]:
        document = _parse_object(payload)
        event_time = _event_time(document.get(self.config.time_field), received)
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
                    )
                )
            except ValidationError as exc:
                raise PayloadError("bad_field", f"{name}: {exc.errors(include_url=False)[0]['msg']}") from None
        if not readings:
            raise PayloadError("no_fields", f"none of {sorted(self.config.fields)} present")
        return readings


def _parse_object(payload: bytes) -> dict[str, object]:
    if len(payload) > MAX_DEVICE_PAYLOAD:
        raise PayloadError("too_large", f"{len(payload)} bytes")
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError("not_json", str(exc)) from None
    if not isinstance(document, dict):
        raise PayloadError("not_object", type(document).__name__)
    return document


def _event_time(value: object, received: datetime) -> datetime:
    """The device's own timestamp (ISO 8601 with zone, or epoch seconds); receive time if it sends none."""
    if value is None:
        return received
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PayloadError("bad_time", f"not an ISO 8601 timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            raise PayloadError("bad_time", f"timestamp without time zone: {value!r}")
        return parsed.astimezone(timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise PayloadError("bad_time", f"epoch seconds out of range: {value!r}") from None
    raise PayloadError("bad_time", f"unsupported timestamp {value!r}")
