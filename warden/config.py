"""Configuration as data: YAML or TOML files validated into typed models at start-up.

Every error names the file, the key (as a dotted path with list indexes) and what was
expected, e.g. ``config/agent.yaml: devices[1].baudrate: expected a valid integer, got 'fast'``.
Relative paths inside a file are resolved against that file's folder.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from datetime import date, time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from warden.calendar import Calendar, Season, TimeOfUse, around_the_clock
from warden.documents import CONFIG_FOLDER, ConfigError, ConfigPath, read_document
from warden.events import Identifier
from warden.i18n import DEFAULT_CURRENCY, DEFAULT_LOCALE, currency_for, normalise_locale

_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are frozen.

    defer_build: a model's validator is built the first time it is used, not at import, so
    a process builds only the models it validates (docs/benchmarks.md, agent RSS). For the
    same reason a default that is a model is a default_factory."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# --------------------------------------------------------------------------- shared



#: Marks a field whose value is a secret (`json_schema_extra=SECRET`): `GET /api/config`
#: shows it as REDACTED (gateway/auth.py: redacted), wherever the model is nested.
SECRET: dict[str, Any] = {"secret": True}



class BrokerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(default=None, repr=False, json_schema_extra=SECRET)
    keepalive_seconds: int = Field(default=30, ge=5, le=3600)
    tls_ca_file: ConfigPath | None = None
    reconnect_min_seconds: float = Field(default=1.0, gt=0, description="First reconnect delay; doubles per failure")
    reconnect_max_seconds: float = Field(default=30.0, gt=0, description="Cap of the reconnect delay")
    protocol: Literal["3.1.1", "5"] = Field(default="3.1.1", description="MQTT version; 5 for EMQX clusters and MQTT 5 brokers")
    session_expiry_hours: float = Field(
        default=168, gt=0, le=24 * 365,
        description="MQTT 5 only: how long the broker keeps a persistent session (and its queued messages) "
        "while the client is away; under 3.1.1 the broker's own setting decides",
    )  # fmt: skip

    @model_validator(mode="after")
    def _delays_ordered(self) -> BrokerConfig:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds: must not be less than reconnect_min_seconds")
        return self


def require_unique(values: Iterable[Hashable], key: str, what: str = "id", show: bool = True) -> None:
    """Raise the one wording of a repeated value: ``devices: each id may appear once (must be unique), repeated: a``.
    `show`: False for values that must not be echoed (a token's hash)."""
    seen: set[Hashable] = set()
    repeated = sorted({str(v) for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if repeated:
        raise ValueError(f"{key}: each {what} may appear once (must be unique)" + (f", repeated: {', '.join(repeated)}" if show else ""))


#: Discriminator values of every tagged union (`tagged_union`): pydantic puts the tag in an
#: error's location, where it is not one of the user's keys (format_validation_error).
_UNION_TAGS: set[str] = set()


def tagged_union(discriminator: str, models: Sequence[type[BaseModel]]) -> Any:
    """A union of models told apart by the value of `discriminator` (a Literal field),
    e.g. a device's `driver` or a sink's `type`; its tags are kept out of error key paths."""
    for model in models:
        _UNION_TAGS.update(get_args(model.model_fields[discriminator].annotation))
    return Annotated[Union[tuple(models)], Field(discriminator=discriminator)]  # noqa: UP007 (a union built at run time)


# --------------------------------------------------------------------------- site


class WeeklyWindow(StrictModel):
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
        data["days"] = parse_days(data.get("days"))
        data["start"], data["end"] = parse_hours(data.pop("hours"))
        return data

    @model_serializer
    def _as_written(self) -> dict[str, str]:
        """Serialise back to the form people write, so generated configs read like shipped ones."""
        end = self.end.strftime("%H:%M") if self.end else "24:00"
        return {"days": ",".join(_WEEKDAYS[d] for d in sorted(self.days)), "hours": f"{self.start:%H:%M}-{end}"}


def parse_days(value: Any) -> frozenset[int]:
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


def parse_hours(value: Any) -> tuple[time, time | None]:
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



class Room(StrictModel):
    id: Identifier
    name: str = ""
    schedule: str | None = Field(default=None, description="Name of a site schedule; none: always unoccupied")
    group: str | None = Field(default=None, description="Tenant, household or department billed for its meters (monthly report)")
    devices: list[Identifier] = Field(default_factory=list)
    circuits: dict[Identifier, CircuitKind] = Field(
        default_factory=dict, description="Power meter -> the kind of circuit it measures; unlisted meters are ac"
    )
    seasons: dict[CircuitKind, Season] = Field(default_factory=dict, description="Kind -> months it may run; outside: waste")
    device_names: dict[Identifier, str] = Field(
        default_factory=dict, description="Device id -> display name (any Unicode), e.g. 空调 (warden/names.py)"
    )

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


class Building(StrictModel):
    id: Identifier
    name: str = ""
    rooms: list[Room] = Field(default_factory=list)


class Tariff(StrictModel):
    energy_per_kwh: float = Field(default=0.30, ge=0)
    currency: str = Field(default=DEFAULT_CURRENCY, description="Default: the site locale's (CNY for zh-CN), else EUR")
    time_of_use: TimeOfUse | None = Field(default=None, description="峰谷电价: prices by band; energy_per_kwh then unused")


#: Whether a holiday cuts a schedule ("off") or it runs its windows as on any day ("keep").
HolidayPolicy = Literal["off", "keep"]


class DeviceLocation(StrictModel):
    building: str
    room: str
    schedule: str | None


class SiteConfig(StrictModel):
    id: Identifier
    name: str = ""
    timezone: str
    holidays: list[date] = Field(default_factory=list)
    schedules: dict[str, list[WeeklyWindow]] = Field(
        default_factory=dict, description="Name -> windows, or {windows, holidays: off|keep} (docs/rules.md#holidays)"
    )
    schedule_holidays: dict[str, HolidayPolicy] = Field(
        default_factory=dict, exclude=True, description="Read from schedules written as {windows, holidays}"
    )
    buildings: list[Building] = Field(default_factory=list)
    tariff: Tariff = Field(default_factory=Tariff)
    calendar: Calendar | None = Field(default=None, description="Terms, vacations, make-up days (docs/rules.md#calendars)")
    locale: str = Field(default=DEFAULT_LOCALE, description="Language and formats of screens, reports, messages: 'en', 'zh-CN'")

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        return normalise_locale(value)

    @model_validator(mode="before")
    @classmethod
    def _currency_by_locale(cls, data: Any) -> Any:
        """A tariff that names no currency is in the locale's (CNY for zh-CN); one that names it keeps it."""
        if not isinstance(data, dict) or not isinstance(data.get("locale"), str):
            return data
        tariff = data.get("tariff", {})
        if not isinstance(tariff, dict) or "currency" in tariff:
            return data
        try:
            currency = currency_for(normalise_locale(data["locale"]))
        except ValueError:
            return data  # the locale's own validator names the key
        return {**data, "tariff": {**tariff, "currency": currency}}

    @model_validator(mode="before")
    @classmethod
    def _schedule_forms(cls, data: Any) -> Any:
        """A schedule is its windows, or `{windows: [...], holidays: keep}` when it must say
        whether a holiday cuts it; the policy is kept beside the windows every rule reads."""
        if not isinstance(data, dict) or not isinstance(data.get("schedules"), dict):
            return data
        schedules, policies = {}, dict(data.get("schedule_holidays") or {})
        for name, value in data["schedules"].items():
            if isinstance(value, dict) and "start" not in value:
                unknown = sorted(set(value) - {"windows", "holidays"})
                if unknown:
                    raise ValueError(f"schedules.{name}.{unknown[0]}: unknown key (expected windows, holidays)")
                if "windows" not in value:
                    raise ValueError(f"schedules.{name}.windows: required key is missing")
                if "holidays" in value:
                    policy = "off" if value["holidays"] is False else value["holidays"]  # YAML reads `off` as false
                    if policy not in ("off", "keep"):
                        raise ValueError(f"schedules.{name}.holidays: expected 'off' or 'keep', got {policy!r}")
                    policies[name] = policy
                value = value["windows"]
            schedules[name] = value
        return {**data, "schedules": schedules, "schedule_holidays": policies}

    @field_serializer("schedules")
    def _schedules_as_written(self, schedules: dict[str, list[WeeklyWindow]]) -> dict[str, Any]:
        """A schedule with a holiday policy is written back in its mapping form."""
        policies = self.schedule_holidays
        return {
            name: {"windows": windows, "holidays": policies[name]} if name in policies else windows
            for name, windows in schedules.items()
        }

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
        if self.calendar is not None:
            self.calendar.check_schedules(self.schedules, self.buildings)
        strays = sorted(self.schedule_holidays.keys() - self.schedules.keys())
        if strays:
            raise ValueError(f"schedule_holidays.{strays[0]}: unknown schedule {strays[0]!r}")
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
    def holiday_keepers(self) -> frozenset[str]:
        """Schedules a holiday does not cut: `holidays: keep`, and by default one that runs
        around the clock every day (a server room, a ward), so a holiday never pages for it;
        an office or classroom schedule observes holidays unless it says `keep`."""
        return frozenset(
            name
            for name, windows in self.schedules.items()
            if self.schedule_holidays.get(name, "keep" if around_the_clock(windows) else "off") == "keep"
        )

    @cached_property
    def _circuit_kinds(self) -> dict[str, CircuitKind]:
        return {d: kind for b in self.buildings for r in b.rooms for d, kind in r.circuits.items()}



# --------------------------------------------------------------------------- patrol routes
# Where the checkpoints are and when rounds start are facts of the site, read by the patrol
# rule (rules/patrol.py), the API's guard scopes and the simulators' independent truth.


def wall_time(value: Any) -> Any:
    """A local time of day. YAML 1.1 reads an unquoted 23:30 as the base-60 integer 1410
    (but 02:00 as a string), so such integers are turned back into hours and minutes."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)
    return value



class PatrolCheckpoint(StrictModel):
    tag: Identifier
    name: str = Field(default="", description="Display name (any Unicode), e.g. 实验楼东门; default: the tag (warden/names.py)")
    allowance_minutes: float | None = Field(default=None, gt=0, description="None: the route's")

    @model_validator(mode="before")
    @classmethod
    def _bare_tag(cls, data: Any) -> Any:
        return {"tag": data} if isinstance(data, str) else data


class PatrolRoute(StrictModel):
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
    schedule: Identifier | None = Field(
        default=None, description="A site schedule: rounds only on days it runs by the site calendar (holidays, "
        "vacations, make-up days: rules/patrol.py); none: every day in `days`"
    )
    wand: bool = Field(default=False, description="Walked with an offline wand: judged once it is uploaded")
    upload_deadline_minutes: float | None = Field(
        default=None, gt=0, description="Wand routes: minutes after the round's last deadline by which the wand "
        "must be uploaded (default 240)"
    )

    @field_validator("rounds", mode="before")
    @classmethod
    def _round_times(cls, value: Any) -> Any:
        return [wall_time(v) for v in value] if isinstance(value, list) else value

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        if isinstance(value, (list, set, frozenset)) and all(isinstance(v, int) for v in value):
            return frozenset(value)
        return parse_days(value)

    @model_validator(mode="after")
    def _unique(self) -> PatrolRoute:
        require_unique((c.tag for c in self.checkpoints), "checkpoints", "tag")
        require_unique((f"{r:%H:%M}" for r in self.rounds), "rounds", "start time")
        if self.upload_deadline_minutes is not None and not self.wand:
            raise ValueError("upload_deadline_minutes: only for a route walked with a wand (set wand: true)")
        return self

    @property
    def upload_minutes(self) -> float:
        """Minutes after the last deadline by which a wand route's wand must be uploaded."""
        return self.upload_deadline_minutes if self.upload_deadline_minutes is not None else 240.0



# --------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)



def load_config(path: str | Path, model: type[M]) -> M:
    """Read a YAML (.yaml/.yml) or TOML (.toml) file into `model`, or raise ConfigError."""
    path = Path(path)
    data = read_document(path)
    try:
        return model.model_validate(data, context={CONFIG_FOLDER: path.parent})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
    except RecursionError:  # e.g. a YAML alias that contains itself: a: &a [*a]
        raise ConfigError(f"{path}: nested too deeply (does a YAML alias refer to itself?)") from None


def format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        key = _key_path(error["loc"])
        lines.append(f"{path}: {key + ': ' if key else ''}{_expected(error)}")
    return "\n".join(lines)


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or str(part).startswith("function-"):
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

