"""What every MQTT-native device driver shares: the agent owns the MQTT client and hands
each message on the device's topic to `handle()`, which maps it to events; a payload that
cannot be used is counted and logged with the device, topic, reason and bytes, never raised.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from typing import Protocol

from agent.drivers.base import DriverCounters, Emit
from warden.clock import Clock
from warden.events import Event

log = logging.getLogger(__name__)

MAX_DEVICE_PAYLOAD = 16 * 1024


class _TopicConfig(Protocol):
    id: str
    topic: str


class PayloadError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class MqttDeviceDriver:
    """Base of drivers for devices that publish on MQTT; subclasses say how a payload maps."""

    kind = "device"  # how log lines name what sent a bad payload

    def __init__(self, config: _TopicConfig, site: str, emit: Emit, clock: Clock) -> None:
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

    def events(self, payload: bytes, received: datetime) -> list[Event]:
        """The events one payload stands for, or PayloadError naming the fault."""
        raise NotImplementedError

    def handle(self, payload: bytes, emit: Emit | None = None) -> None:
        """Hand the payload's events to `emit` (default: the driver's own, which stores
        each before returning), then count them; a bad payload is counted and logged.

        The agent passes an `emit` that only queues the events, so that it can
        acknowledge the MQTT message once they are all on disk."""
        now = self.clock.now()
        try:
            events = self.events(payload, now)
        except PayloadError as exc:
            self.counters.count_error(exc.reason)
            log.warning(
                f"bad {self.kind} payload",
                extra={"device": self.device_id, "topic": self.topic, "reason": str(exc), "bytes": repr(payload[:80])},
            )
            return
        for event in events:
            (emit or self.emit)(event)
        self.counters.count_event(now)


def parse_object(payload: bytes) -> dict[str, object]:
    if len(payload) > MAX_DEVICE_PAYLOAD:
        raise PayloadError("too_large", f"{len(payload)} bytes")
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError("not_json", str(exc)) from None
    if not isinstance(document, dict):
        raise PayloadError("not_object", type(document).__name__)
    return document


def device_time(value: object, received: datetime) -> datetime:
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
