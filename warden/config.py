"""Configuration as data: YAML or TOML files validated into typed models at start-up.

Every error names the file, the key (as a dotted path with list indexes) and what was
expected, e.g. ``config/agent.yaml: devices[1].baudrate: expected a valid integer, got 'fast'``.
Relative paths inside a file are resolved against that file's folder.
"""

from __future__ import annotations

import re
from datetime import date, time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from rules.cold_room import COLD_ROOM_RULES, ColdRoomConfig  # until RulesConfig leaves the kernel (issue 15)
from warden.calendar import Calendar, Season, TimeOfUse
from warden.events import Identifier, Quantity

_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    # defer_build: a model's validator is built the first time it is used, not at import, so
    # an agent process does not build the gateway's, the site's and the rules' models it never
    # validates (docs/benchmarks.md, agent RSS). For the same reason a default that is a model
    # is a default_factory: a default instance made at import would build its model there.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# --------------------------------------------------------------------------- shared

#: Marks a field whose value is a secret (`json_schema_extra=SECRET`): `GET /api/config`
#: shows it as REDACTED (gateway/auth.py: redacted), wherever the model is nested.
SECRET: dict[str, Any] = {"secret": True}



class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(default=None, repr=False, json_schema_extra=SECRET)
    keepalive_seconds: int = Field(default=30, ge=5, le=3600)
    tls_ca_file: Path | None = None
    reconnect_min_seconds: float = Field(default=1.0, gt=0, description="First reconnect delay; doubles per failure")
    reconnect_max_seconds: float = Field(default=30.0, gt=0, description="Cap of the reconnect delay")

    @model_validator(mode="after")
    def _delays_ordered(self) -> BrokerConfig:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds: must not be less than reconnect_min_seconds")
        return self


# --------------------------------------------------------------------------- site


class WeeklyWindow(_Strict):
    """Days of the week and a local time span, e.g. days "mon-fri", hours "07:30-17:30".

    An end before the start runs past midnight ("22:00-06:00"); "24:00" means midnight.
    """

    days: frozenset[int]
    start: time
    end: time | None  # None: until midnight

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "start" in data or "end" in data:
            return data  # already parsed (built in code), or not a mapping: let pydantic say so
        for key in ("days", "hours"):
            if key not in data:
                raise ValueError(f"{key}: required key is missing")
        data = dict(data)
        data["days"] = _parse_days(data.get("days"))
        data["start"], data["end"] = _parse_hours(data.pop("hours"))
        return data

    @model_serializer
    def _as_written(self) -> dict[str, str]:
        """Serialise back to the form people write, so generated configs read like shipped ones."""
        end = self.end.strftime("%H:%M") if self.end else "24:00"
        return {"days": ",".join(_WEEKDAYS[d] for d in sorted(self.days)), "hours": f"{self.start:%H:%M}-{end}"}


def _parse_days(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else str(value).split(",")
    days: set[int] = set()
    for item in (str(i).strip().lower() for i in items):
        first, dash, last = (part.strip() for part in item.partition("-"))
        if first not in _WEEKDAYS or (dash and last not in _WEEKDAYS):
            raise ValueError(f"expected weekdays like 'mon-fri' or 'sat,sun', got {item!r}")
        a, b = _WEEKDAYS.index(first), _WEEKDAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def _parse_hours(value: Any) -> tuple[time, time | None]:
    match = _HOURS.match(str(value).replace(" ", ""))
    if not match:
        raise ValueError(f"expected hours like '07:30-17:30', got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"expected hours like '07:30-17:30', got {value!r}")
    return time(h1, m1), (None if h2 == 24 else time(h2, m2))


#: What a power meter's circuit feeds. A meter a room does not list in `circuits` is "ac";
#: "refrigeration" is always on by design and never judged after hours (docs/rules.md).
CircuitKind = Literal["ac", "lighting", "water_heating", "refrigeration", "other"]

#: Alert rule name per circuit kind judged after hours (rules/ac_after_hours.py emits them).
#: The one place these names are written: ALERT_RULES below and the rule both read it.
AFTER_HOURS_RULES: dict[CircuitKind, str] = {
    "ac": "ac_after_hours",
    "lighting": "lights_after_hours",
    "water_heating": "water_heating_after_hours",
    "other": "power_after_hours",
}


class Room(_Strict):
    id: Identifier
    name: str = ""
    schedule: str | None = Field(default=None, description="Name of a site schedule; none: always unoccupied")
    devices: list[Identifier] = Field(default_factory=list)
    circuits: dict[Identifier, CircuitKind] = Field(
        default_factory=dict, description="Power meter -> the kind of circuit it measures; unlisted meters are ac"
    )
    seasons: dict[CircuitKind, Season] = Field(default_factory=dict, description="Kind -> months it may run; outside: waste")
    device_names: dict[Identifier, str] = Field(default_factory=dict, description="Device id -> display name (any Unicode), e.g. 空调 (warden/names.py)")

    @model_validator(mode="before")
    @classmethod
    def _circuits_are_devices(cls, data: Any) -> Any:
        """A meter listed in `circuits` belongs to the room without being repeated in `devices`."""
        if not isinstance(data, dict) or not isinstance(data.get("circuits"), dict):
            return data
        devices = data.get("devices", [])
        if not isinstance(devices, list):
            return data  # let pydantic name the wrong type
        missing = [d for d in data["circuits"] if d not in devices]
        return {**data, "devices": [*devices, *missing]} if missing else data


class Building(_Strict):
    id: Identifier
    name: str = ""
    rooms: list[Room] = Field(default_factory=list)


class Tariff(_Strict):
    energy_per_kwh: float = Field(default=0.30, ge=0)
    currency: str = "EUR"
    time_of_use: TimeOfUse | None = Field(default=None, description="峰谷电价: prices by band; energy_per_kwh then unused")


class DeviceLocation(_Strict):
    building: str
    room: str
    schedule: str | None


class SiteConfig(_Strict):
    id: Identifier
    name: str = ""
    timezone: str
    holidays: list[date] = Field(default_factory=list)
    schedules: dict[str, list[WeeklyWindow]] = Field(default_factory=dict)
    buildings: list[Building] = Field(default_factory=list)
    tariff: Tariff = Field(default_factory=Tariff)
    calendar: Calendar | None = Field(default=None, description="Terms, vacations, make-up days (docs/rules.md#calendars)")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Europe"
            raise ValueError(f"expected an IANA time zone like 'Europe/Berlin', got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
        self.calendar.check_schedules(self.schedules, self.buildings) if self.calendar else None
        seen: dict[str, str] = {}
        for b, building in enumerate(self.buildings):
            for r, room in enumerate(building.rooms):
                where = f"buildings[{b}].rooms[{r}]"
                if room.schedule is not None and room.schedule not in self.schedules:
                    known = ", ".join(sorted(self.schedules)) or "none defined"
                    raise ValueError(f"{where}.schedule: unknown schedule {room.schedule!r} (known: {known})")
                for device in room.devices:
                    if device in seen:
                        raise ValueError(f"{where}.devices: device {device!r} is already in room {seen[device]}")
                    seen[device] = room.id
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def locate(self, device: str) -> DeviceLocation | None:
        """Building, room and schedule of a device, or None if the site does not list it."""
        return self.device_locations.get(device)

    @cached_property
    def device_locations(self) -> dict[str, DeviceLocation]:
        """Every listed device's place, built once: locate() runs for every device of
        every batch and tick, so a scan of the rooms would make a big site quadratic."""
        places: dict[str, DeviceLocation] = {}
        for building in self.buildings:
            for room in building.rooms:
                for device in room.devices:
                    places.setdefault(device, DeviceLocation(building=building.id, room=room.id, schedule=room.schedule))
        return places

    def circuit_kind(self, device: str) -> CircuitKind:
        """The kind of circuit a power meter measures: its room's `circuits` entry, else "ac"."""
        return self._circuit_kinds.get(device, "ac")

    @cached_property
    def _circuit_kinds(self) -> dict[str, CircuitKind]:
        return {d: kind for b in self.buildings for r in b.rooms for d, kind in r.circuits.items()}


# --------------------------------------------------------------------------- agent


class FieldMapping(_Strict):
    quantity: Quantity
    unit: str
    cumulative: bool = False
    scale: float = 1.0
    channel: Identifier | None = Field(
        default=None, description="The readings' channel tag: needed when another field has the same quantity and unit"
    )


class PatrolLineDevice(_Strict):
    """A patrol checkpoint reader speaking the line protocol (docs/protocols/patrol-line.md)."""

    driver: Literal["patrol_line"]
    id: Identifier
    port: str = Field(description="Device path or pyserial URL: /dev/ttyUSB0, socket://host:4001, rfc2217://...")
    baudrate: int = Field(default=9600, gt=0)
    reconnect_seconds: float = Field(default=2.0, gt=0)


class MqttJsonDevice(_Strict):
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


_REGISTER_WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}


class ModbusRegister(_Strict):
    """One value of a Modbus meter: where it is, how it is encoded, what it means."""

    name: Identifier = Field(description="Becomes the reading's channel and part of its event id")
    address: int = Field(ge=0, le=65535, description="Zero-based register address, as in the protocol sheet")
    function: Literal["input", "holding"] = Field(default="input", description="input: code 04, holding: code 03")
    data_type: Literal["float32", "int16", "uint16", "int32", "uint32"] = "float32"
    word_order: Literal["big", "little"] = Field(
        default="big", description="32-bit values: big = high word first (Eastron, most meters)"
    )
    scale: float = Field(default=1.0, description="Multiplied into the decoded value, e.g. 0.1 for tenths")
    quantity: Quantity
    unit: str = Field(min_length=1, max_length=16)
    cumulative: bool = False

    @property
    def words(self) -> int:
        return _REGISTER_WORDS[self.data_type]

    @model_validator(mode="after")
    def _fits(self) -> ModbusRegister:
        if self.address + self.words > 65536:
            raise ValueError(f"address: {self.data_type} at {self.address} runs past register 65535")
        return self


class ModbusRtuDevice(_Strict):
    """A Modbus RTU meter polled over a serial line (RS-485) or a serial device server.

    `registers` is a list of ModbusRegister or the name of a shipped map
    (warden/modbus_maps.py: `sdm120`); `include` keeps only the named registers.
    """

    driver: Literal["modbus_rtu"]
    id: Identifier
    port: str = Field(description="Device path or pyserial URL: /dev/ttyUSB0, socket://host:4001, rfc2217://...")
    unit_id: int = Field(default=1, ge=1, le=247, description="The meter's Modbus address on the bus")
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    poll_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5, description="Re-sends of a request that got no answer")
    registers: list[ModbusRegister] = Field(min_length=1)
    include: list[Identifier] | None = Field(default=None, description="Only these registers of the map")

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("registers"), str):
            from warden.modbus_maps import PRESETS, preset

            name = data["registers"]
            if name not in PRESETS:
                raise ValueError(f"registers: unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
            data["registers"] = preset(name)
        include, registers = data.get("include"), data.get("registers")
        if isinstance(include, list) and isinstance(registers, list):
            data["registers"] = _only(registers, include)
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> ModbusRtuDevice:
        names = [r.name for r in self.registers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"registers: names must be unique, repeated: {', '.join(repeated)}")
        return self

    @property
    def line_settings(self) -> tuple[object, ...]:
        """What every meter sharing this port must agree on: one bus, one line speed."""
        return (self.baudrate, self.bytesize, self.parity, self.stopbits, self.timeout_seconds, self.retries)


def _only(registers: list[Any], include: list[Any]) -> list[Any]:
    def name_of(register: Any) -> Any:
        return register.get("name") if isinstance(register, dict) else getattr(register, "name", None)

    known = [name_of(r) for r in registers]
    unknown = [n for n in include if n not in known]
    if unknown:
        raise ValueError(f"include: no register named {', '.join(map(repr, unknown))} (known: {', '.join(map(str, known))})")
    return [r for r in registers if name_of(r) in include]


class PatrolWandDevice(_Strict):
    """A dock for offline patrol wands that drops batch files in a spool folder
    (docs/protocols/patrol-wand.md)."""

    driver: Literal["patrol_wand"]
    id: Identifier
    spool_dir: Path = Field(description="Folder the dock writes batch files (*.json) to")
    poll_seconds: float = Field(default=2.0, gt=0)
    keep_files: bool = Field(default=True, description="Move processed batches to done/ (false: delete them)")
    max_file_bytes: int = Field(default=10 * 1024 * 1024, gt=0)


class MqttDoorDevice(_Strict):
    """A door-access controller publishing JSON door events and heartbeats on an MQTT topic
    (docs/protocols/door-mqtt.md)."""

    driver: Literal["mqtt_door"]
    id: Identifier
    topic: str
    time_field: str = "ts"
    doors: list[Identifier] | None = Field(
        default=None, description="Doors the controller serves; events for other doors are refused. None: any"
    )


class DoorLineDevice(_Strict):
    """A door-access controller writing card-reader-style lines on a serial port
    (docs/protocols/door-line.md); framed like the patrol line protocol."""

    driver: Literal["door_line"]
    id: Identifier
    port: str = Field(description="Device path or pyserial URL: /dev/ttyUSB0, socket://host:4001, rfc2217://...")
    baudrate: int = Field(default=9600, gt=0)
    reconnect_seconds: float = Field(default=2.0, gt=0)


DeviceConfig = Annotated[
    Union[PatrolLineDevice, MqttJsonDevice, ModbusRtuDevice, PatrolWandDevice, MqttDoorDevice, DoorLineDevice],
    Field(discriminator="driver"),
]


class AgentConfig(_Strict):
    id: Identifier
    site: Identifier
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    device_broker: BrokerConfig | None = Field(
        default=None, description="Broker MQTT-native devices publish to; default: the uplink broker"
    )
    buffer_path: Path = Path("data/agent-outbox.db")
    buffer_max_events: int = Field(
        default=1_000_000, ge=100, description="Outbox cap; past it the oldest readings are shed (docs/agent.md)"
    )
    heartbeat_seconds: float = Field(default=30, gt=0)
    ack_timeout_seconds: float | None = Field(default=30, gt=0, description="Resend what the gateway has not confirmed after this long (agent/uplink.py); null: delete on the broker's PUBACK, benchmarks only")
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_devices(self) -> AgentConfig:
        ids = [d.id for d in self.devices]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"devices: ids must be unique, repeated: {', '.join(duplicated)}")
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
        """Meters on one RS-485 port share the line: same speed and framing, distinct unit ids."""
        first: dict[str, PatrolLineDevice | ModbusRtuDevice | DoorLineDevice] = {}
        for device in self.devices:
            if not isinstance(device, (PatrolLineDevice, ModbusRtuDevice, DoorLineDevice)):
                continue
            other = first.setdefault(device.port, device)
            if other is device:
                continue
            if not (isinstance(other, ModbusRtuDevice) and isinstance(device, ModbusRtuDevice)):
                raise ValueError(f"devices: {other.id} and {device.id} cannot share port {device.port}")
            if other.unit_id == device.unit_id:
                raise ValueError(f"devices: {other.id} and {device.id} share port {device.port} and unit_id {device.unit_id}")
            if other.line_settings != device.line_settings:
                raise ValueError(
                    f"devices: {other.id} and {device.id} share port {device.port} but differ in "
                    "baudrate, bytesize, parity, stopbits, timeout_seconds or retries"
                )
        return self


# --------------------------------------------------------------------------- gateway


class SqliteHistorianConfig(_Strict):
    type: Literal["sqlite"]
    path: Path = Path("data/history.db")


class InfluxHistorianConfig(_Strict):
    """InfluxDB 2.x/3.x, or 1.8+ through its v2 compatibility API (bucket "db/rp").

    Points go through a durable spool (SQLite at `spool_path`) and are retried without
    limit; there is no max_retries (see docs/storage.md)."""

    type: Literal["influxdb"]
    url: str
    token: str = Field(default="", repr=False, json_schema_extra=SECRET)
    org: str = "-"
    bucket: str
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    flush_interval_ms: int = Field(default=1000, ge=10)
    retry_interval_ms: int = Field(default=1000, ge=10)
    max_retry_delay_ms: int = Field(default=60_000, ge=10)
    exponential_base: float = Field(default=2.0, ge=1.0, le=10.0)
    timeout_ms: int = Field(default=10_000, ge=100)
    spool_path: Path = Path("data/influx-spool.db")  # next to the default state_db
    spool_max_points: int = Field(default=5_000_000, ge=1)


HistorianConfig = Annotated[
    Union[SqliteHistorianConfig, InfluxHistorianConfig], Field(discriminator="type")
]


ApiRole = Literal["guard", "maintenance", "manager", "admin"]


class ApiToken(_Strict):
    """One API token, kept only as the SHA-256 of the secret (`warden token` makes both)."""

    name: Identifier = Field(description="Who holds it; shown in alert history, never the secret")
    role: ApiRole
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False, json_schema_extra=SECRET, description="hex SHA-256 of the token")
    guard: Identifier | None = Field(default=None, description="role guard: the badge whose routes they see")
    routes: list[Identifier] = Field(default_factory=list, description="role guard: routes they walk")

    @model_validator(mode="after")
    def _guard_scope(self) -> ApiToken:
        if self.role == "guard" and self.guard is None and not self.routes:
            raise ValueError("a guard token needs `guard` (a badge) or `routes`, else it sees no patrol")
        return self


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tokens: list[ApiToken] = Field(default_factory=list)
    public_read: bool | None = Field(
        default=None,
        description="Reads without a token (kiosk); None: only while no token is configured. Writes always need one.",
    )
    public_metrics: bool = Field(default=True, description="/metrics and /api/health without a token")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; none: closed")
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body; a bigger one is refused with 413 before it is read"
    )

    @model_validator(mode="after")
    def _unique_tokens(self) -> ApiConfig:
        for key in ("name", "sha256"):
            values = [getattr(t, key) for t in self.tokens]
            if len(set(values)) != len(values):
                raise ValueError(f"tokens: each {key} may appear once")
        return self


class AcAfterHoursConfig(_Strict):
    """Circuits left on after hours (AC, lights, water heating, other); docs/rules.md."""

    enabled: bool = True
    standby_watts: float = Field(default=60.0, ge=0)
    grace_minutes: float = Field(default=15.0, ge=0, description="On-time (summed, not contiguous) before raising")
    max_gap_minutes: float = Field(default=10.0, gt=0)
    min_duty: float = Field(default=0.25, ge=0, le=1, description="Share of the look-back on needed to raise")
    duty_window_minutes: float = Field(default=60.0, gt=0, description="Look-back of min_duty")
    off_minutes: float = Field(default=60.0, gt=0, description="Off this long ends the stretch's alert")
    update_minutes: float = Field(default=5.0, ge=0, description="At most one update per this much event time")


def _wall_time(value: Any) -> Any:
    """A local time of day. YAML 1.1 reads an unquoted 23:30 as the base-60 integer 1410
    (but 02:00 as a string), so such integers are turned back into hours and minutes."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)
    return value


class WaterMeterOverride(_Strict):
    """Settings of one meter that differ from the water rule's defaults."""

    burst_l_per_min: float | None = Field(default=None, gt=0)
    min_flow_l_per_min: float | None = Field(default=None, ge=0)
    baseline_l_per_min: float | None = Field(
        default=None, ge=0, description="The meter's normal flow, not counted as lost; none: learned from quiet windows"
    )


class WaterConfig(_Strict):
    """Leaks from water meters and wet sensors (rules/water.py, docs/rules.md#water)."""

    enabled: bool = True
    meters: list[Identifier] | None = Field(
        default=None, description="Devices to watch; none: every device sending flow, volume or wet readings"
    )
    min_flow_l_per_min: float = Field(default=0.5, ge=0, description="Flow at or below this is no flow")
    night_start: time = time(2, 0)
    night_end: time = time(5, 0)
    night_min_coverage: float = Field(default=0.8, gt=0, le=1)
    night_clean_windows: int = Field(default=2, ge=1)
    night_min_leak_minutes: float = Field(
        default=30.0, gt=0, description="Flow without a stop over at least this much of the window's end is a leak"
    )
    night_flow_minutes: float = Field(
        default=60.0, gt=0, description="Flow without a stop for this long inside the window raises at once"
    )
    continuous_hours: float = Field(default=24.0, gt=0)
    zero_minutes: float = Field(default=60.0, gt=0)
    burst_l_per_min: float = Field(default=60.0, gt=0)
    burst_minutes: float = Field(default=5.0, gt=0)
    max_gap_minutes: float = Field(default=65.0, gt=0)
    update_minutes: float = Field(default=15.0, ge=0)
    overrides: dict[Identifier, WaterMeterOverride] = Field(default_factory=dict)

    @field_validator("night_start", "night_end", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return _wall_time(value)

    @model_validator(mode="after")
    def _window(self) -> WaterConfig:
        if self.night_start == self.night_end:
            raise ValueError("night_end: must differ from night_start")
        return self


class DoorOverride(_Strict):
    """Settings of one door that differ from the door rule's defaults."""

    schedule: str | None = Field(default=None, description="Site schedule instead of the room's")
    name: str = Field(default="", description="Display name (any Unicode), e.g. 东门; default: the id (warden/names.py)")
    after_hours: bool = True
    held_open_seconds: float | None = Field(default=None, gt=0)


class DoorsConfig(_Strict):
    """Door held open, forced, used after hours, denied cards (rules/doors.py)."""

    enabled: bool = True
    held_open_seconds: float = Field(default=60.0, gt=0)
    denied_count: int = Field(default=3, ge=1)
    denied_minutes: float = Field(default=5.0, gt=0)
    after_hours: bool = True
    doors: dict[Identifier, DoorOverride] = Field(default_factory=dict)


class PatrolCheckpoint(_Strict):
    tag: Identifier
    name: str = Field(default="", description="Display name (any Unicode), e.g. 实验楼东门; default: the tag (warden/names.py)")
    allowance_minutes: float | None = Field(default=None, gt=0, description="None: the route's")

    @model_validator(mode="before")
    @classmethod
    def _bare_tag(cls, data: Any) -> Any:
        return {"tag": data} if isinstance(data, str) else data


class PatrolRoute(_Strict):
    """An ordered list of checkpoints walked at fixed local times (rules/patrol.py)."""

    id: Identifier
    name: str = Field(default="", description="Display name (any Unicode), e.g. 夜间巡逻; default: the id (warden/names.py)")
    checkpoints: list[PatrolCheckpoint] = Field(min_length=1)
    rounds: list[time] = Field(min_length=1, description="Local start times, e.g. ['23:30', '02:00']")
    days: frozenset[int] = frozenset(range(7))
    allowance_minutes: float = Field(default=10.0, gt=0)
    early_minutes: float = Field(default=10.0, ge=0)
    late_minutes: float = Field(default=60.0, ge=0, description="Taps this long after the last deadline still belong to the round")
    max_silence_minutes: float = Field(default=30.0, gt=0)
    guard: Identifier | None = None
    wand: bool = Field(default=False, description="Walked with an offline wand: judged once it is uploaded")
    upload_deadline_minutes: float | None = Field(
        default=None, gt=0, description="Wand routes: minutes after the round's last deadline by which the wand "
        "must be uploaded (default 240)"
    )

    @field_validator("rounds", mode="before")
    @classmethod
    def _round_times(cls, value: Any) -> Any:
        return [_wall_time(v) for v in value] if isinstance(value, list) else value

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        if isinstance(value, (list, set, frozenset)) and all(isinstance(v, int) for v in value):
            return frozenset(value)
        return _parse_days(value)

    @model_validator(mode="after")
    def _unique(self) -> PatrolRoute:
        tags = [c.tag for c in self.checkpoints]
        if len(set(tags)) != len(tags):
            raise ValueError("checkpoints: each tag may appear once per route")
        if len(set(self.rounds)) != len(self.rounds):
            raise ValueError("rounds: start times must be unique")
        if self.upload_deadline_minutes is not None and not self.wand:
            raise ValueError("upload_deadline_minutes: only for a route walked with a wand (set wand: true)")
        return self

    @property
    def upload_minutes(self) -> float:
        """Minutes after the last deadline by which a wand route's wand must be uploaded."""
        return self.upload_deadline_minutes if self.upload_deadline_minutes is not None else 240.0


class PatrolConfig(_Strict):
    enabled: bool = True
    routes: list[PatrolRoute] = Field(default_factory=list)
    repeat_seconds: float = Field(default=60.0, ge=0, description="Taps of one tag this close count once")
    keep_hours: float = Field(default=24.0, gt=0, description="How long a finished round accepts wand uploads")
    upload_settle_seconds: float = Field(
        default=60.0, ge=0, description="Wand taps are applied together once no newer ones came for this long "
        "(gateway clock): an upload split over several messages is judged as a whole"
    )

    @model_validator(mode="after")
    def _unique_routes(self) -> PatrolConfig:
        ids = [r.id for r in self.routes]
        if len(set(ids)) != len(ids):
            raise ValueError("routes: ids must be unique")
        for route in self.routes:
            if route.wand and route.upload_minutes >= route.late_minutes + self.keep_hours * 60:
                raise ValueError(f"routes: {route.id}: upload_deadline_minutes must be shorter than keep_hours, "
                                 "or the round is forgotten before its wand is due")
        return self


class DeadmanConfig(_Strict):
    """Silent devices and agents (rules/deadman.py). Minutes; null: that kind is not watched."""

    enabled: bool = True
    reading_minutes: float | None = Field(default=15.0, gt=0)
    status_minutes: float | None = Field(default=5.0, gt=0)
    door_minutes: float | None = Field(default=None, gt=0)
    patrol_tap_minutes: float | None = Field(default=None, gt=0)
    heartbeats_count: bool = False  # the agent heartbeats for every device it serves, silent or not
    agent_offline_minutes: float = Field(
        default=5.0, ge=0, description="An agent's offline status raises only once it lasted this long (0: at once); "
        "a broker restart fires every agent's will and they are back seconds later"
    )
    devices: dict[Identifier, Annotated[float, Field(gt=0)] | None] = Field(
        default_factory=dict, description="Per-device minutes; null: not watched"
    )
    agents: dict[Identifier, list[Identifier]] = Field(default_factory=dict, description="Agent id -> its devices")


class RulesConfig(_Strict):
    allowed_lateness_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long rules wait for late data before acting on the passing of time alone",
    )
    tick_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Real seconds between two ticks of the rules (time passing without an event)",
    )
    catch_up_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="After (re)connecting, real seconds to wait for the broker's backlog before ticking anyway",
    )
    ac_after_hours: AcAfterHoursConfig = Field(default_factory=AcAfterHoursConfig)
    water: WaterConfig = Field(default_factory=WaterConfig)
    doors: DoorsConfig = Field(default_factory=DoorsConfig)
    patrol: PatrolConfig = Field(default_factory=PatrolConfig)
    deadman: DeadmanConfig = Field(default_factory=DeadmanConfig)
    cold_room: ColdRoomConfig = Field(default_factory=ColdRoomConfig)


# --------------------------------------------------------------------------- alert lifecycle

#: Rule names the rule families emit (rules/*.py); tests/gateway/test_escalation.py keeps
#: this in step with the rules, so a misspelt name in `escalation.rules` is an error.
ALERT_RULES = frozenset(
    {
        *AFTER_HOURS_RULES.values(),
        "water_night_flow", "water_continuous_flow", "water_burst", "water_wet",
        "door_held_open", "door_forced", "door_after_hours", "door_denied",
        "patrol_round", "patrol_checkpoint", "patrol_silence", "patrol_upload_late",
        "deadman", "deadman_agent", *COLD_ROOM_RULES,
    }
)

AlertChangeKind = Literal["opened", "updated", "acknowledged", "escalated", "resolved"]
SeverityName = Literal["info", "warning", "critical"]
#: What people are told by default: every step of the lifecycle but the frequent updates.
PEOPLE_CHANGES: tuple[AlertChangeKind, ...] = ("opened", "acknowledged", "escalated", "resolved")


class EscalationRule(_Strict):
    """Deadlines of one rule that differ from the defaults; a key left out keeps the
    default, null turns that escalation off for the rule."""

    ack_minutes: float | None = Field(default=None, gt=0)
    response_hours: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`door_forced: 5` means ack_minutes 5; `patrol_silence: null` never escalates."""
        if data is None:
            return {"ack_minutes": None, "response_hours": None}
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"ack_minutes": data}
        if not isinstance(data, dict):
            raise ValueError(f"expected minutes (a number), null or a mapping of ack_minutes and response_hours, got {data!r}")
        return data


class EscalationConfig(_Strict):
    """Unacknowledged and unresolved alerts climb a ladder of people (docs/rules.md#alert-lifecycle).
    Judged on the gateway's clock: deadlines are about people, not device event time."""

    enabled: bool = True
    ack_minutes: float | None = Field(default=60.0, gt=0, description="Open this long without acknowledgement: escalate")
    response_hours: float | None = Field(default=24.0, gt=0, description="Acknowledged this long without resolution: escalate")
    rules: dict[str, EscalationRule] = Field(default_factory=dict)
    levels: list[list[Identifier]] = Field(
        default_factory=lambda: [[], [], []],
        description="Sink names per level; level 0 is the first responder, the last level is the top",
    )

    @field_validator("levels")
    @classmethod
    def _a_ladder(cls, value: list[list[str]]) -> list[list[str]]:
        if not value:
            raise ValueError("expected at least one level (level 0: the first responders)")
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, EscalationRule]) -> dict[str, EscalationRule]:
        unknown = sorted(set(value) - ALERT_RULES)
        if unknown:
            raise ValueError(f"unknown rule {', '.join(map(repr, unknown))} (known: {', '.join(sorted(ALERT_RULES))})")
        return value

    @property
    def top_level(self) -> int:
        return len(self.levels) - 1

    def deadlines(self, rule: str) -> tuple[float | None, float | None]:
        """(ack minutes, response hours) for `rule`; None: that escalation is off."""
        override = self.rules.get(rule)
        ack, response = self.ack_minutes, self.response_hours
        if override is not None:
            ack = override.ack_minutes if "ack_minutes" in override.model_fields_set else ack
            response = override.response_hours if "response_hours" in override.model_fields_set else response
        return ack, response


class RouteConfig(_Strict):
    """Which alert changes a sink receives, besides its escalation level."""

    min_severity: SeverityName = "info"
    rules: list[str] | None = Field(default=None, description="Only these rules; none: every rule")
    changes: list[AlertChangeKind] = Field(default_factory=lambda: list(PEOPLE_CHANGES), min_length=1)

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - ALERT_RULES)
        if unknown:
            raise ValueError(f"unknown rule {', '.join(map(repr, unknown))} (known: {', '.join(sorted(ALERT_RULES))})")
        return value


class MqttAlertsConfig(RouteConfig):
    """The MQTT alerts topic (warden/v1/<site>/alerts): every change, for dashboards."""

    enabled: bool = True
    changes: list[AlertChangeKind] = Field(
        default_factory=lambda: ["opened", "updated", "acknowledged", "escalated", "resolved"], min_length=1
    )


class DeliveryConfig(RouteConfig):
    """Delivery off the ingest worker, from an outbox on disk (gateway/notify.py): retried
    with doubling backoff until delivered, refused for good, or expired."""

    queue_size: int = Field(
        default=1000, ge=1, description="Notifications waiting on disk besides the one being delivered; past it the oldest are dropped and counted"
    )
    expire_hours: float = Field(default=24.0, gt=0, description="Not delivered this long after the change: given up, counted as expired")
    timeout_seconds: float = Field(default=10.0, gt=0)
    retries: int | None = Field(default=None, ge=0, description="Give up (counted as failed) after this many retries; none: until expire_hours")
    backoff_seconds: float = Field(default=1.0, ge=0, description="First retry delay; doubles per attempt")
    max_backoff_seconds: float = Field(default=60.0, ge=0)


class WebhookSinkConfig(DeliveryConfig):
    """POST of the change as JSON. url and headers may hold secrets: never logged."""

    type: Literal["webhook"]
    url: str = Field(repr=False, json_schema_extra=SECRET)
    headers: dict[str, str] = Field(default_factory=dict, repr=False, json_schema_extra=SECRET)
    timeout_seconds: float = Field(default=5.0, gt=0)
    preset: Literal["wecom", "dingtalk", "feishu"] | None = Field(default=None, description="Group bot format: 企业微信, 钉钉, 飞书 (gateway/bots.py)")
    body: dict[str, Any] | None = Field(default=None, description="JSON body template, string leaves Jinja2 (gateway/bots.py); default: the preset's, or the change")
    secret: str | None = Field(default=None, repr=False, json_schema_extra=SECRET, description="Signing secret of a dingtalk or feishu bot")
    max_per_minute: int | None = Field(default=None, ge=1, description="Messages a minute at most (wecom default 20); more wait and go together")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _signing(self) -> WebhookSinkConfig:
        if self.secret is not None and self.preset not in ("dingtalk", "feishu"):
            raise ValueError(f"secret: only a dingtalk or feishu bot signs (preset is {self.preset!r})")
        return self


class SmtpSinkConfig(DeliveryConfig):
    """Mail through an SMTP relay. The password is never logged, nor sent without TLS."""

    type: Literal["smtp"]
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = Field(default="none", description="starttls: port 587; implicit: port 465")
    tls_ca_file: Path | None = Field(default=None, description="CA to trust instead of the system's")
    username: str | None = None
    password: str | None = Field(default=None, repr=False, json_schema_extra=SECRET)
    sender: str
    to: list[str]
    subject_prefix: str = "[warden]"

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _mail_address(value)

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one address")
        return [_mail_address(v) for v in value]

    @model_validator(mode="after")
    def _credentials(self) -> SmtpSinkConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password: set both or neither")
        if self.password is not None and self.tls == "none":
            raise ValueError("password: would be sent in clear; set tls: starttls or implicit")
        return self


def _mail_address(value: str) -> str:
    if not re.match(r"^[^@\s,<>]+@[^@\s,<>]+$", value):
        raise ValueError(f"expected a mail address like warden@example.org, got {value!r}")
    return value


SinkConfig = Annotated[Union[WebhookSinkConfig, SmtpSinkConfig], Field(discriminator="type")]


class AlertsConfig(_Strict):
    """Escalation and notifications (gateway/escalation.py, gateway/notify.py)."""

    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    mqtt: MqttAlertsConfig = Field(default_factory=MqttAlertsConfig)
    sinks: dict[Identifier, SinkConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _levels_name_sinks(self) -> AlertsConfig:
        placed: dict[str, int] = {}
        for index, names in enumerate(self.escalation.levels):
            for name in names:
                if name not in self.sinks:
                    known = ", ".join(sorted(self.sinks)) or "none defined"
                    raise ValueError(f"escalation.levels[{index}]: unknown sink {name!r} (known: {known})")
                if name in placed:
                    raise ValueError(f"escalation.levels[{index}]: sink {name!r} is already in level {placed[name]}")
                placed[name] = index
        return self

    def sink_level(self, name: str) -> int:
        """The lowest escalation level a sink hears about; 0 (every level) if in no level."""
        for index, names in enumerate(self.escalation.levels):
            if name in names:
                return index
        return 0


class DeadLetterConfig(_Strict):
    """Bounds of the refused messages kept for inspection; past either the oldest go
    (counted as warden_gateway_dead_letters_pruned), so a flood cannot fill the disk."""

    max_count: int = Field(default=10_000, ge=1, description="Dead letters kept at most")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024, description="Payload bytes kept at most, over all dead letters")


class ReportConfig(_Strict):
    """The morning report (warden/report.py, docs/api.md#the-morning-report)."""

    day_start: time = Field(
        default=time(8, 0),
        description="Local time a report's day starts and the previous one ends: the report of day D covers "
        "D at day_start to D+1 at day_start, daytime, weekends and holidays included",
    )

    @field_validator("day_start", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return _wall_time(value)


from gateway.workorders import WorkOrderConfig  # noqa: E402  (issue 18; moves with GatewayConfig to gateway/config.py)


class GatewayConfig(_Strict):
    id: Identifier = "gateway"
    site_file: Path
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    historian: HistorianConfig = Field(default_factory=lambda: SqliteHistorianConfig(type="sqlite"))
    state_db: Path = Path("data/state.db")
    queue_size: int = Field(default=10_000, ge=1)
    dedup_window_days: float = Field(
        default=14, gt=0,
        description="How long an event id is remembered so that a re-sent copy is dropped "
        "(between half this and this long); the seen ids do not grow forever.",
    )  # fmt: skip
    dead_letters: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    work_orders: WorkOrderConfig = Field(default_factory=WorkOrderConfig)


# --------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)

_PATH_KEYS = {"buffer_path", "path", "state_db", "site_file", "tls_ca_file", "spool_path", "spool_dir"}


def load_config(path: str | Path, model: type[M]) -> M:
    """Read a YAML (.yaml/.yml) or TOML (.toml) file into `model`, or raise ConfigError."""
    path = Path(path)
    data = _read_document(path)
    try:
        _resolve_paths(data, path.parent)
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
    except RecursionError:  # e.g. a YAML alias that contains itself: a: &a [*a]
        raise ConfigError(f"{path}: nested too deeply (does a YAML alias refer to itself?)") from None


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        if path.suffix == ".toml":
            import tomllib  # here: a process whose config is YAML, as most agents', never needs it

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: expected a .yaml, .yml or .toml file")
    except yaml.MarkedYAMLError as exc:  # one line, with the position in the file
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = ", ".join(str(m) for m in (exc.context, exc.problem) if m) or str(exc)
        raise ConfigError(f"{path}: not valid YAML: {where}{what}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: also an impossible date like 2026-02-30
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _resolve_paths(node: Any, base: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute():
                node[key] = str(base / value)
            else:
                _resolve_paths(value, base)
    elif isinstance(node, list):
        for item in node:
            _resolve_paths(item, base)


def format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        key = _key_path(error["loc"])
        lines.append(f"{path}: {key + ': ' if key else ''}{_expected(error)}")
    return "\n".join(lines)


_TAGS = {"patrol_line", "mqtt_json", "modbus_rtu", "patrol_wand", "mqtt_door", "door_line", "sqlite", "influxdb", "webhook", "smtp"}


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS or str(part).startswith("function-"):
            continue  # discriminator and validator names are pydantic's, not the user's keys
        else:
            out += f".{part}" if out else str(part)
    return out


def _expected(error: Any) -> str:
    message: str = error["msg"]
    message = message.removeprefix("Value error, ")
    message = re.sub(r"^Input should be ", "expected ", message)
    if error["type"] == "union_tag_invalid":
        ctx = error["ctx"]
        return f"{ctx['discriminator'].strip(chr(39))}: expected one of {ctx['expected_tags']}, got {ctx['tag']!r}"
    if error["type"] == "union_tag_not_found":
        ctx = error["ctx"]
        return f"{ctx['discriminator'].strip(chr(39))}: required key is missing"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "extra_forbidden":
        return "unknown key (check its spelling)"
    if "input" in error and error["type"] not in ("value_error",) and not isinstance(error["input"], (dict, list)):
        message += f", got {error['input']!r}"
    return message
