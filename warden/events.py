"""The one versioned event schema every part of warden speaks.

Agents build these events from device input, the gateway validates them from MQTT
payloads, rules consume them and simulators produce them. See docs/events.md.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

SCHEMA_VERSION = 1

#: Largest MQTT payload the gateway will parse; bigger ones are rejected unread.
MAX_PAYLOAD_BYTES = 256 * 1024
#: Most events one MQTT message may carry.
MAX_BATCH_EVENTS = 1000

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
EventId = Annotated[
    str, StringConstraints(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
]

_ID_NAMESPACE = uuid.UUID("6f0a3c55-2a8e-4a55-9d2a-5a1e0c7d3b10")


def stable_event_id(*parts: object) -> str:
    """Derive an event id from what identifies a device observation.

    The same observation read twice (a retry, a replayed buffer, a re-uploaded wand)
    gets the same id, so the gateway can drop the duplicate.
    """
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def utc(dt: datetime) -> datetime:
    """Normalise an aware datetime to UTC (naive datetimes are refused by the schema)."""
    return dt.astimezone(timezone.utc)


class Quantity(StrEnum):
    POWER = "power"
    ENERGY = "energy"
    FLOW = "flow"
    VOLUME = "volume"
    WET = "wet"
    TEMPERATURE = "temperature"
    # Electrical values of a sub-meter (e.g. the Eastron SDM120), kept apart from `power`
    # so a rule on active power never mistakes VA or var for W.
    VOLTAGE = "voltage"
    CURRENT = "current"
    APPARENT_POWER = "apparent_power"
    REACTIVE_POWER = "reactive_power"
    POWER_FACTOR = "power_factor"
    FREQUENCY = "frequency"


class DoorAction(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    OPENED = "opened"
    CLOSED = "closed"
    HELD_OPEN = "held_open"
    FORCED = "forced"


class TapSource(StrEnum):
    ONLINE = "online"  # streamed by a fixed reader as it happened
    WAND = "wand"  # stored by an offline wand and uploaded when docked


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    HEARTBEAT = "heartbeat"


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    v: Literal[1] = SCHEMA_VERSION
    id: EventId
    site: Identifier
    device: Identifier
    event_time: AwareDatetime = Field(description="When the device observed it (UTC).")
    receive_time: AwareDatetime | None = Field(
        default=None, description="When the agent read it from the device (UTC)."
    )
    device_time: AwareDatetime | None = Field(
        default=None, description="Set by the gateway: the device's own stamp, when its clock ran more than "
        "MAX_DEVICE_AHEAD ahead of receive_time; event_time is then receive_time (clamp_device_clock)."
    )

    @field_validator("event_time", "receive_time", "device_time")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        try:
            return None if value is None else utc(value)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past datetime.max in UTC
            raise ValueError("out of the representable range once converted to UTC") from None


class Reading(_EventBase):
    """A meter or sensor value."""

    kind: Literal["reading"] = "reading"
    quantity: Quantity
    value: float
    unit: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    cumulative: bool = Field(
        default=False, description="True for counters (kWh, m3) that only grow until reset."
    )
    channel: Identifier | None = Field(
        default=None,
        description="Which of the device's values this is (a register or field name), for devices "
        "reporting several values of one quantity, e.g. import_energy and export_energy.",
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class DoorEvent(_EventBase):
    kind: Literal["door"] = "door"
    action: DoorAction
    door: Identifier
    card: Annotated[str, StringConstraints(max_length=64)] | None = None


class PatrolTap(_EventBase):
    kind: Literal["patrol_tap"] = "patrol_tap"
    reader: Identifier
    tag: Identifier
    guard: Identifier | None = None
    source: TapSource = TapSource.ONLINE


class DeviceStatus(_EventBase):
    """Heartbeat or availability of a device or agent, with its health counters."""

    kind: Literal["status"] = "status"
    state: DeviceState
    counters: dict[Identifier, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=64
    )


Event = Annotated[Reading | DoorEvent | PatrolTap | DeviceStatus, Field(discriminator="kind")]

#: The `kind` of every event type, e.g. for routing events to whatever reads them.
EVENT_KINDS: tuple[str, ...] = tuple(cls.model_fields["kind"].default for cls in (Reading, DoorEvent, PatrolTap, DeviceStatus))


class EventBatch(BaseModel):
    """Several events in one MQTT message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = SCHEMA_VERSION
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


class InvalidPayload(ValueError):
    """A payload that is not a valid event or batch.

    `reason` says why in one line, for people; `code` is a short category for counting
    (too_large, not_utf8, not_json, not_object, schema, future_time, bad_time, and the
    gateway's bad_topic, site_mismatch, not_owner).
    """

    def __init__(self, reason: str, code: str = "schema") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def encode_events(events: list[Event]) -> bytes:
    """Serialise events as one MQTT payload: a bare event, or a batch for several."""
    if len(events) == 1:
        return events[0].model_dump_json(exclude_none=True).encode()
    return EventBatch(events=events).model_dump_json(exclude_none=True).encode()


#: How far ahead of the receiver's clock an event may be stamped.
MAX_FUTURE = timedelta(hours=1)


def decode_events(
    payload: bytes,
    *,
    now: datetime | None = None,
    max_future: timedelta = MAX_FUTURE,
) -> list[Event]:
    """Parse and validate one MQTT payload (single event or batch).

    Raises InvalidPayload naming the first problem. With `now`, events stamped more
    than `max_future` ahead of it are refused: a device clock far ahead would
    otherwise poison every time window downstream.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", "too_large")
    events = _parse_valid(payload)
    if events is None:
        events = _parse_explaining(payload)
    if now is not None:
        for event in events:
            if is_too_far_ahead(event, now, max_future):
                raise too_far_ahead(event, max_future)
    return events


def is_too_far_ahead(event: Event, now: datetime, max_future: timedelta = MAX_FUTURE) -> bool:
    """Stamped more than `max_future` ahead of the receiver's clock `now`: a device clock
    gone wrong, whose event would otherwise move rule time forward for everyone."""
    return event.event_time - now > max_future


def too_far_ahead(event: Event, max_future: timedelta = MAX_FUTURE) -> InvalidPayload:
    """The refusal of an event stamped beyond the receiver's clock + `max_future`."""
    return InvalidPayload(
        f"event {event.id}: event_time {event.event_time.isoformat()} is more than "
        f"{max_future} ahead of the receiver's clock",
        "future_time",
    )


#: How far a device may stamp an event ahead of the agent that read it before its clock
#: counts as wrong: above the minute or two a clock without NTP drifts (the simulators'
#: clock_skew faults go to 2 min), well below a patrol checkpoint's allowance.
MAX_DEVICE_AHEAD = timedelta(minutes=5)


def clamp_device_clock(event: Event, max_ahead: timedelta = MAX_DEVICE_AHEAD) -> Event:
    """The event as the gateway keeps it. Stamped by a device clock more than `max_ahead`
    ahead of its agent's receive_time (a patrol reader 20 min fast), it happened when the
    agent read it: event_time becomes receive_time and the device's stamp is kept as
    device_time, so rules judge it when it happened (no round judged 20 min early), the
    report re-judges the same time, and the device's wrong clock is counted, not hidden.
    Without a receive_time only the gateway's MAX_FUTURE limit applies; a wand's taps were
    read at its upload, not when they happened, and move no rule's time: left alone."""
    if event.receive_time is None or event.device_time is not None:
        return event
    if event.event_time - event.receive_time <= max_ahead:
        return event
    if isinstance(event, PatrolTap) and event.source is TapSource.WAND:
        return event
    return event.model_copy(update={"event_time": event.receive_time, "device_time": event.event_time})


#: The earliest time an event may be stamped with: before it a device clock was never set
#: (or is garbage, e.g. year 1, which no int64 nanosecond or SQLite integer holds).
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)


def is_too_old(event: Event) -> bool:
    """Stamped (event or receive time) before EARLIEST_TIME; refused as `bad_time`."""
    return event.event_time < EARLIEST_TIME or (event.receive_time is not None and event.receive_time < EARLIEST_TIME)


def too_old(event: Event) -> InvalidPayload:
    """The refusal of an event stamped before EARLIEST_TIME."""
    stamp = event.event_time if event.event_time < EARLIEST_TIME else event.receive_time
    return InvalidPayload(
        f"event {event.id}: time {stamp.isoformat() if stamp else '?'} is before {EARLIEST_TIME.date().isoformat()}", "bad_time"
    )


def _parse_valid(payload: bytes) -> list[Event] | None:
    """The fast path, for the payloads that are valid: pydantic parses and validates the
    JSON in one pass. Any failure (or a wrong guess of batch vs single event) returns
    None, and the careful path below decides and explains; the schema refuses NaN and
    infinities wherever a number goes, so this path accepts nothing that one refuses."""
    try:
        if b'"events"' in payload:
            return list(EventBatch.model_validate_json(payload).events)
        return [_event_adapter.validate_json(payload)]
    except ValidationError:
        return None


def _parse_explaining(payload: bytes) -> list[Event]:
    """Parse in steps, so a refusal names the first thing wrong (and its code)."""
    try:
        text = payload.decode("utf-8")  # JSON on the wire is UTF-8 (RFC 8259), never UTF-16/32
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"not UTF-8: {exc}", "not_utf8") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise InvalidPayload(f"not JSON: {exc}", "not_json") from None
    if not isinstance(document, dict):
        raise InvalidPayload(f"expected a JSON object, got {type(document).__name__}", "not_object")
    try:
        if "events" in document:
            events = list(EventBatch.model_validate(document).events)
        else:
            events = [_event_adapter.validate_python(document)]
    except ValidationError as exc:
        raise InvalidPayload(_first_error(exc)) from None
    return events


def _reject_constant(name: str) -> float:
    """json.loads accepts NaN, Infinity and -Infinity, which are not JSON: refuse them."""
    raise ValueError(f"{name} is not a valid JSON value")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    # A key from the payload is the sender's text: shown escaped, so a reason stays one line.
    where = ".".join(str(part) if str(part).isprintable() else repr(part) for part in error["loc"]) or "payload"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"
