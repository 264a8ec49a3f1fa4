"""Configuration as data: YAML or TOML files validated into typed models at start-up.

Every error names the file, the key (as a dotted path with list indexes) and what was
expected, e.g. ``config/agent.yaml: devices[1].baudrate: expected a valid integer, got 'fast'``.
Relative paths inside a file are resolved against that file's folder.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date, time
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

from warden.events import Identifier, Quantity

_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- shared


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    keepalive_seconds: int = Field(default=30, ge=5, le=3600)
    tls_ca_file: Path | None = None


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


class Room(_Strict):
    id: Identifier
    name: str = ""
    schedule: str | None = Field(default=None, description="Name of a site schedule; none: always unoccupied")
    devices: list[Identifier] = Field(default_factory=list)


class Building(_Strict):
    id: Identifier
    name: str = ""
    rooms: list[Room] = Field(default_factory=list)


class Tariff(_Strict):
    energy_per_kwh: float = Field(default=0.30, ge=0)
    currency: str = "EUR"


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
    tariff: Tariff = Tariff()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone like 'Europe/Berlin', got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
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
        for building in self.buildings:
            for room in building.rooms:
                if device in room.devices:
                    return DeviceLocation(building=building.id, room=room.id, schedule=room.schedule)
        return None


# --------------------------------------------------------------------------- agent


class FieldMapping(_Strict):
    quantity: Quantity
    unit: str
    cumulative: bool = False
    scale: float = 1.0


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


DeviceConfig = Annotated[Union[PatrolLineDevice, MqttJsonDevice], Field(discriminator="driver")]


class AgentConfig(_Strict):
    id: Identifier
    site: Identifier
    broker: BrokerConfig = BrokerConfig()
    device_broker: BrokerConfig | None = Field(
        default=None, description="Broker MQTT-native devices publish to; default: the uplink broker"
    )
    buffer_path: Path = Path("data/agent-outbox.db")
    heartbeat_seconds: float = Field(default=30, gt=0)
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_devices(self) -> AgentConfig:
        ids = [d.id for d in self.devices]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"devices: ids must be unique, repeated: {', '.join(duplicated)}")
        return self


# --------------------------------------------------------------------------- gateway


class SqliteHistorianConfig(_Strict):
    type: Literal["sqlite"]
    path: Path = Path("data/history.db")


class InfluxHistorianConfig(_Strict):
    """InfluxDB 2.x/3.x, or 1.8+ through its v2 compatibility API (bucket "db/rp")."""

    type: Literal["influxdb"]
    url: str
    token: str = Field(default="", repr=False)
    org: str = "-"
    bucket: str
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    flush_interval_ms: int = Field(default=1000, ge=10)
    retry_interval_ms: int = Field(default=1000, ge=10)
    max_retries: int = Field(default=10, ge=0)
    timeout_ms: int = Field(default=10_000, ge=100)


HistorianConfig = Annotated[
    Union[SqliteHistorianConfig, InfluxHistorianConfig], Field(discriminator="type")
]


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class AcAfterHoursConfig(_Strict):
    standby_watts: float = Field(default=60.0, ge=0)
    grace_minutes: float = Field(default=15.0, ge=0)
    max_gap_minutes: float = Field(default=10.0, gt=0)


class RulesConfig(_Strict):
    allowed_lateness_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long rules wait for late data before acting on the passing of time alone",
    )
    ac_after_hours: AcAfterHoursConfig = AcAfterHoursConfig()


class GatewayConfig(_Strict):
    id: Identifier = "gateway"
    site_file: Path
    broker: BrokerConfig = BrokerConfig()
    historian: HistorianConfig = SqliteHistorianConfig(type="sqlite")
    state_db: Path = Path("data/state.db")
    queue_size: int = Field(default=10_000, ge=1)
    api: ApiConfig = ApiConfig()
    rules: RulesConfig = RulesConfig()


# --------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)

_PATH_KEYS = {"buffer_path", "path", "state_db", "site_file", "tls_ca_file"}


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


_TAGS = {"patrol_line", "mqtt_json", "sqlite", "influxdb"}


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
