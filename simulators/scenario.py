"""Scenario files: a site, a simulated night, the devices in its rooms, the guards walking
its patrol routes, and what goes wrong.

What goes wrong comes in two kinds, kept apart because tests depend on the difference:

- **incidents** (a leak, an AC left on, a skipped checkpoint, a forced door, a device
  going silent, a broker restart) are the ground truth: each must cause exactly the
  alerts `expected` lists, no more, no fewer;
- **faults** (line noise, malformed or duplicated or reordered messages, clock skew,
  short dropouts, Modbus timeouts and exceptions) must cause **no** alert at all: the
  system is expected to absorb them.

Times without a date or zone are the site's local wall-clock time; a bare "01:10" is its
first occurrence after the night starts. The patrol routes are the gateway's own
(`rules.patrol.routes`), so the simulated guards and the rule judging them cannot drift
apart. The scenario's site is written for the gateway with every device placed in its room.
"""

from __future__ import annotations

import copy
from datetime import datetime, time, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from rules.config import RulesConfig
from simulators.calendar import local_instant
from warden.config import CircuitKind, PatrolRoute, SiteConfig, parse_days, parse_hours, wall_time
from warden.events import Identifier

Link = Literal["pty", "tcp"]


def _wall_clock(value: Any) -> Any:
    """YAML 1.1 reads an unquoted 23:30 as the integer 1410; turn it back into a time."""
    return wall_time(value)


#: A local time of day ("01:10": its first occurrence in the night) or a date and time.
When = Annotated[datetime | time, BeforeValidator(_wall_clock)]
LocalTime = Annotated[time, BeforeValidator(_wall_clock)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- devices


class _DeviceSpec(StrictModel):
    device: Identifier
    room: str | None = Field(default=None, description="Room id (or building:room) the device is in")


class PowerMeterSpec(_DeviceSpec):
    """An electricity meter on one circuit of a kind (ac, lighting, water_heating,
    refrigeration, other). The load runs while the room is occupied (its timetable,
    shortened at both ends), or during `runs` if given; refrigeration runs all the time.
    `runs` is "07:40-17:45" or {hours: "07:40-17:45", days: "mon-fri"}: a wall timer, on
    those days (holidays too), or without days on the room's schedule days (every day if
    the room has none) but never on a holiday."""

    type: Literal["power_meter"]
    circuit: CircuitKind = "ac"
    transport: Literal["mqtt", "modbus"] = "mqtt"
    link: Link = Field(default="pty", description="Modbus: a pseudo-terminal, or TCP (a serial device server)")
    unit_id: int = Field(default=1, ge=1, le=247)
    poll_seconds: float = Field(default=60.0, gt=0, description="Modbus: the agent's polling interval")
    rated_w: float = Field(default=1200.0, gt=0)
    standby_w: float = Field(default=2.0, ge=0)
    use_probability: float = Field(default=0.9, ge=0, le=1, description="Chance the unit is used on a school day")
    runs: tuple[time, time] | None = Field(default=None, description="Fixed daily run, e.g. '07:40-17:45'")
    runs_days: frozenset[int] | None = Field(
        default=None, description="Weekdays (0 = Monday) of the fixed run; none: the room's schedule days"
    )

    @model_validator(mode="before")
    @classmethod
    def _runs_with_days(cls, data: Any) -> Any:
        """`runs: {hours, days}` is `runs` plus `runs_days`."""
        if isinstance(data, dict) and isinstance(data.get("runs"), dict):
            run = dict(data["runs"])
            data = {**data, "runs": run.pop("hours", None)}
            if "days" in run:
                data["runs_days"] = run.pop("days")
            if run:
                raise ValueError(f"runs: unknown keys {', '.join(sorted(run))} (expected hours, days)")
        return data

    @field_validator("runs", mode="before")
    @classmethod
    def _hours(cls, value: object) -> object:
        if isinstance(value, str):
            start, end = parse_hours(value)
            return (start, end or time(23, 59, 59))
        return value

    @field_validator("runs_days", mode="before")
    @classmethod
    def _days(cls, value: object) -> object:
        if value is None or (isinstance(value, (list, set, frozenset)) and all(isinstance(v, int) for v in value)):
            return value
        return parse_days(value)


class WaterMeterSpec(_DeviceSpec):
    """A water meter reporting its cumulative volume and flow over MQTT."""

    type: Literal["water_meter"]
    uses_per_hour: float = Field(default=12.0, ge=0, description="Taps and flushes per hour while occupied")
    night_uses: float = Field(default=0.3, ge=0, description="Expected uses between 22:00 and 06:00")
    base_m3: float = Field(default=1000.0, ge=0)
    register_only: bool = Field(default=False, description="Reports only its volume register, no flow field")


class WetSensorSpec(_DeviceSpec):
    """A leak (wet floor) sensor reporting wet/dry every `report_minutes` and on change."""

    type: Literal["wet_sensor"]
    report_minutes: float = Field(default=5.0, gt=0)


class Defrost(StrictModel):
    """A cold room's defrost cycles: from each local time the air rises linearly to
    `peak_c` over half of `minutes` and falls back to the setpoint over the other half."""

    at: list[LocalTime] = Field(min_length=1)
    minutes: float = Field(default=20.0, gt=0)
    peak_c: float = 10.0


class TemperatureSensorSpec(_DeviceSpec):
    """A temperature sensor in a cold room, freezer or food store, over MQTT, reporting
    every `step_seconds`. The air holds `setpoint_c`; while `door` (a door of a door
    controller) is open it warms by `warm_c_per_min`, and once shut cools back by
    `cool_c_per_min` (simulators/cold_room.py); defrost cycles add their own rise."""

    type: Literal["temperature_sensor"]
    setpoint_c: float = 3.0
    door: Identifier | None = None
    warm_c_per_min: float = Field(default=0.5, gt=0)
    cool_c_per_min: float = Field(default=0.1, gt=0)
    defrost: Defrost | None = None


class DoorControllerSpec(_DeviceSpec):
    """An access controller for one or more doors, over MQTT JSON or a serial line."""

    type: Literal["door_controller"]
    transport: Literal["mqtt", "line"] = "mqtt"
    link: Link = "pty"
    doors: list[Identifier] = Field(min_length=1)
    traffic_per_hour: float = Field(default=12.0, ge=0, description="Card swipes per door while it is scheduled")
    heartbeat_minutes: float = Field(default=5.0, gt=0)
    held_open_report_seconds: float | None = Field(
        default=60.0, gt=0, description="The controller's own held-open alarm; null: it has none"
    )


class PatrolReaderSpec(_DeviceSpec):
    """A line of online patrol checkpoint readers (docs/protocols/patrol-line.md)."""

    type: Literal["patrol_reader"]
    reader: str | None = Field(default=None, description="Reader id on the line; default: the device id")
    link: Link = "pty"
    heartbeat_minutes: float = Field(default=5.0, gt=0)


class WandDockSpec(_DeviceSpec):
    """A dock for offline patrol wands, writing batch files to a spool folder."""

    type: Literal["wand_dock"]
    poll_seconds: float = Field(default=120.0, gt=0, description="How often the agent scans the spool folder")


DeviceSpec = Annotated[
    PowerMeterSpec | WaterMeterSpec | WetSensorSpec | DoorControllerSpec | PatrolReaderSpec | WandDockSpec
    | TemperatureSensorSpec,
    Field(discriminator="type"),
]


class GuardSpec(StrictModel):
    """A guard walking every round of a route, tapping each checkpoint on an online reader
    or on an offline wand that is docked (and uploaded) at `dock_at`: one time for the
    night, or one per round (`{"23:30": "00:40", "02:00": "06:10"}`)."""

    id: Identifier
    route: Identifier = Field(description="A route of rules.patrol.routes")
    reader: Identifier | None = Field(default=None, description="Device id of a patrol_reader")
    wand: Identifier | None = None
    dock: Identifier | None = Field(default=None, description="Device id of a wand_dock")
    dock_at: When | dict[LocalTime, When] | None = None
    pace_minutes: float = Field(default=4.0, gt=0, description="Walk between two checkpoints")
    jitter_seconds: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _one_way_to_tap(self) -> GuardSpec:
        if (self.reader is None) == (self.wand is None):
            raise ValueError("a guard taps on exactly one of `reader` or `wand`")
        if self.wand is not None and (self.dock is None or self.dock_at is None):
            raise ValueError("a guard with a wand needs `dock` and `dock_at`")
        return self

    def dock_time(self, round_at: time) -> datetime | time | None:
        """When the wand holding the taps of the round starting at `round_at` is docked:
        the round's own dock time, else the night's (None: no wand, or no time for it)."""
        if isinstance(self.dock_at, dict):
            return self.dock_at.get(round_at)
        return self.dock_at


# --------------------------------------------------------------------------- incidents


class _Incident(StrictModel):
    id: str | None = Field(default=None, description="Name in the ground-truth file; default: type-N")


class WaterLeak(_Incident):
    type: Literal["water_leak"]
    device: Identifier
    kind: Literal["drip", "steady", "burst"]
    at: When
    until: When | None = Field(default=None, description="Default: a burst lasts 20 min, other leaks go on")
    flow_l_per_min: float | None = Field(default=None, gt=0, description="Default: drip 0.15, steady 2, burst 150")

    @property
    def flow(self) -> float:
        return self.flow_l_per_min or {"drip": 0.15, "steady": 2.0, "burst": 150.0}[self.kind]


class Duty(StrictModel):
    """A thermostat (or timer) cycling a load: on for `on_minutes`, off for `off_minutes`."""

    on_minutes: float = Field(gt=0)
    off_minutes: float = Field(ge=0)


class AcLeftOn(_Incident):
    """Any power meter's load left running (alias `type: left_on`), continuously or cycling."""

    type: Literal["ac_left_on", "left_on"]
    device: Identifier
    at: When | None = Field(default=None, description="Default: it was running when the night started")
    until: When | None = None
    duty: Duty | None = Field(default=None, description="Thermostat cycling; none: on continuously")
    power_w: float | None = Field(default=None, gt=0, description="Draw while on; default the meter's rated_w")


class WetFloor(_Incident):
    type: Literal["wet"]
    device: Identifier
    at: When
    until: When | None = None


class SkipCheckpoint(_Incident):
    type: Literal["skip_checkpoint"]
    guard: Identifier
    round: LocalTime
    tag: Identifier


class SkipRound(_Incident):
    type: Literal["skip_round"]
    guard: Identifier
    round: LocalTime


class LateRound(_Incident):
    """A guard walks the whole round shifted: `minutes` late (negative: early), or
    starting at `start_at` (e.g. 2026-10-25T02:30:00+01:00, the second 02:30)."""

    type: Literal["late_round"]
    guard: Identifier
    round: LocalTime
    minutes: float | None = None
    start_at: When | None = None

    @model_validator(mode="after")
    def _one_shift(self) -> LateRound:
        if (self.minutes is None) == (self.start_at is None):
            raise ValueError("late_round: give exactly one of `minutes` or `start_at`")
        return self


class MeterReplaced(_Incident):
    """A water meter swapped mid-night: its register restarts at `new_base_m3`."""

    type: Literal["meter_replaced"]
    device: Identifier
    at: When
    new_base_m3: float = Field(default=0.0, ge=0)


class DoorHeldOpen(_Incident):
    type: Literal["door_held_open"]
    device: Identifier
    door: Identifier
    at: When
    seconds: float = Field(default=300.0, gt=0)


class DoorForced(_Incident):
    type: Literal["door_forced"]
    device: Identifier
    door: Identifier
    at: When


class DoorDenied(_Incident):
    type: Literal["door_denied"]
    device: Identifier
    door: Identifier
    at: When
    count: int = Field(default=4, ge=1)
    card: str = "990017"


class DoorAfterHours(_Incident):
    type: Literal["door_after_hours"]
    device: Identifier
    door: Identifier
    at: When
    card: str = "004711"


class DeviceSilent(_Incident):
    type: Literal["device_silent"]
    device: Identifier
    at: When


class BrokerRestart(_Incident):
    type: Literal["broker_restart"]
    at: When
    down_seconds: float = Field(default=60.0, gt=0)


Incident = Annotated[
    WaterLeak | AcLeftOn | WetFloor | SkipCheckpoint | SkipRound | LateRound | MeterReplaced | DoorHeldOpen | DoorForced
    | DoorDenied | DoorAfterHours | DeviceSilent | BrokerRestart,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- faults

LineNoiseKind = Literal["garbage", "bad_checksum", "truncated", "too_long", "resend"]


class LineNoise(StrictModel):
    """Noise on a serial line between the real sentences, which all still arrive."""

    type: Literal["line_noise"]
    device: Identifier
    every_minutes: float = Field(default=20.0, gt=0)
    kinds: list[LineNoiseKind] = Field(default=["garbage", "bad_checksum", "truncated", "too_long", "resend"], min_length=1)


class MqttMalformed(StrictModel):
    type: Literal["mqtt_malformed"]
    device: Identifier
    every_minutes: float = Field(default=45.0, gt=0)


class Duplicates(StrictModel):
    type: Literal["duplicates"]
    device: Identifier
    every_minutes: float = Field(default=10.0, gt=0)


class OutOfOrder(StrictModel):
    type: Literal["out_of_order"]
    device: Identifier
    every_minutes: float = Field(default=15.0, gt=0)


class ClockSkew(StrictModel):
    type: Literal["clock_skew"]
    device: Identifier
    seconds: float = Field(ge=-300, le=300, description="Device clock ahead (+) or behind (-), at most 5 min")


class Dropout(StrictModel):
    """A short silence: shorter than the deadman interval, so no alert."""

    type: Literal["dropout"]
    device: Identifier
    at: When
    minutes: float = Field(gt=0)


class ModbusFault(StrictModel):
    """A Modbus meter that stops answering (timeout) or answers with an exception."""

    type: Literal["modbus_fault"]
    device: Identifier
    at: When
    minutes: float = Field(gt=0)
    mode: Literal["timeout", "exception"] = "timeout"
    code: int = Field(default=6, ge=1, le=255, description="Exception code: 6 device busy, 2 illegal address...")


Fault = Annotated[
    LineNoise | MqttMalformed | Duplicates | OutOfOrder | ClockSkew | Dropout | ModbusFault,
    Field(discriminator="type"),
]


_TYPE_NAMES: dict[type, str] = {
    PowerMeterSpec: "power_meter",
    WaterMeterSpec: "water_meter",
    WetSensorSpec: "wet_sensor",
    DoorControllerSpec: "door_controller",
    PatrolReaderSpec: "patrol_reader",
    WandDockSpec: "wand_dock",
    TemperatureSensorSpec: "temperature_sensor",
}


class ExpectedAlert(StrictModel):
    """An alert the night must raise, optionally with values its last details must carry
    (within `tolerance`, relative)."""

    rule: str
    subject: str
    values: dict[str, float] = Field(default_factory=dict)
    tolerance: float = Field(default=0.2, ge=0)


# --------------------------------------------------------------------------- the scenario


class Scenario(StrictModel):
    name: str
    description: str = ""
    site: SiteConfig
    agent: Identifier = "agent-1"
    start: datetime = Field(description="Local start of the night (no zone: the site's)")
    end: datetime
    step_seconds: float = Field(default=60.0, gt=0, description="How often MQTT meters report")
    agent_heartbeat_seconds: float = Field(default=300.0, gt=0)
    devices: list[DeviceSpec] = Field(default_factory=list)
    guards: list[GuardSpec] = Field(default_factory=list)
    incidents: list[Incident] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    rules: RulesConfig = Field(default_factory=RulesConfig, description="The gateway's rules for this site")
    expected: list[ExpectedAlert] | None = Field(
        default=None, description="The alerts the incidents must cause; checked against what they imply"
    )

    @model_validator(mode="before")
    @classmethod
    def _wand_routes(cls, data: Any) -> Any:
        """A route a guard walks with an offline wand is a wand route for the gateway
        (`wand: true`, judged once uploaded), unless the file says otherwise: the
        scenario knows how its guards tap, as a site's manager knows how the rounds go."""
        if not isinstance(data, dict) or not isinstance(data.get("guards"), list) or not isinstance(data.get("rules"), dict):
            return data
        walked = {g.get("route") for g in data["guards"] if isinstance(g, dict) and g.get("wand") is not None}
        patrol = data["rules"].get("patrol")
        if not walked or not isinstance(patrol, dict) or not isinstance(patrol.get("routes"), list):
            return data
        routes = [
            {**r, "wand": True} if isinstance(r, dict) and r.get("id") in walked and "wand" not in r else r
            for r in patrol["routes"]
        ]
        return {**data, "rules": {**data["rules"], "patrol": {**patrol, "routes": routes}}}

    @model_validator(mode="before")
    @classmethod
    def _place_devices(cls, data: Any) -> Any:
        """List every device in its room of the site, as the gateway's site file needs."""
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
            return data
        site = data.get("site")
        site = site.model_dump(mode="json") if isinstance(site, SiteConfig) else copy.deepcopy(site)
        if not isinstance(site, dict):
            return data
        rooms: dict[str, list[dict[str, Any]]] = {}
        for building in site.get("buildings") or []:
            for room in building.get("rooms") or []:
                rooms.setdefault(room.get("id"), []).append(room)
                rooms[f"{building.get('id')}:{room.get('id')}"] = [room]
        for n, spec in enumerate(data["devices"]):
            spec = spec.model_dump() if isinstance(spec, BaseModel) else spec
            where = spec.get("room") if isinstance(spec, dict) else None
            if where is None:
                continue
            if len(rooms.get(where, [])) != 1:
                problem = "is not a room of the site" if where not in rooms else "names rooms in several buildings"
                raise ValueError(f"devices[{n}].room: {where!r} {problem} (write building:room)")
            room = rooms[where][0]
            listed = room.setdefault("devices", [])
            if spec.get("device") not in listed:
                listed.append(spec.get("device"))
            if spec.get("type") == "power_meter":
                room.setdefault("circuits", {}).setdefault(spec.get("device"), spec.get("circuit") or "ac")
        return {**data, "site": site}

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.end_utc <= self.start_utc:
            raise ValueError("end: must be after start")
        ids = [d.device for d in self.devices]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"devices: ids must be unique, repeated: {', '.join(repeated)}")
        for n, guard in enumerate(self.guards):
            self._check_guard(n, guard)
        walked = {g.route for g in self.guards}
        for n, route in enumerate(self.rules.patrol.routes if self.rules.patrol.enabled else []):
            if route.id not in walked:
                raise ValueError(
                    f"rules.patrol.routes[{n}]: no guard walks route {route.id!r}; every round would be "
                    "'not started' (give it a guard, and a skip_round incident for a round nobody walks)"
                )
        for n, incident in enumerate(self.incidents):
            self._check_incident(n, incident)
        for n, fault in enumerate(self.faults):
            self._check_fault(n, fault)
        return self

    # ----------------------------------------------------------------- lookups

    def device(self, device_id: str) -> DeviceSpec:
        for spec in self.devices:
            if spec.device == device_id:
                return spec
        raise KeyError(device_id)

    def guard(self, guard_id: str) -> GuardSpec:
        return next(g for g in self.guards if g.id == guard_id)

    def route(self, route_id: str) -> PatrolRoute:
        return next(r for r in self.rules.patrol.routes if r.id == route_id)

    def incident_id(self, incident: Incident) -> str:
        if incident.id:
            return incident.id
        same = [i for i in self.incidents if i.type == incident.type]
        return f"{incident.type}-{next(n for n, i in enumerate(same, 1) if i is incident)}"

    # ----------------------------------------------------------------- time

    def local(self, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=self.site.zone)

    @property
    def start_utc(self) -> datetime:
        return self.instant(self.start)

    @property
    def end_utc(self) -> datetime:
        return self.instant(self.end)

    @property
    def duration(self) -> timedelta:
        return self.end_utc - self.start_utc

    def instant(self, when: datetime | time) -> datetime:
        """UTC instant of a scenario time: a bare local time is its first occurrence in the
        night; a date and time without zone is local (a skipped wall time is when the
        clocks jump, as for schedules)."""
        zone = self.site.zone
        if isinstance(when, datetime):
            if when.tzinfo is not None:
                return when.astimezone(timezone.utc)
            return local_instant(zone, when.date(), when.time())
        start = self.instant(self.start)
        day = start.astimezone(zone).date()
        for offset in range(3):
            moment = local_instant(zone, day + timedelta(days=offset), when)
            if moment >= start:
                return moment
        raise ValueError(f"{when} does not fall in the night")

    # ----------------------------------------------------------------- checks

    def _spec(self, where: str, device_id: str, *types: type) -> Any:
        try:
            spec = self.device(device_id)
        except KeyError:
            raise ValueError(f"{where}.device: no device {device_id!r} in devices") from None
        if types and not isinstance(spec, types):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ValueError(f"{where}.device: {device_id!r} is a {spec.type}, expected a {wanted}")
        return spec

    def _check_guard(self, n: int, guard: GuardSpec) -> None:
        where = f"guards[{n}]"
        if guard.route not in {r.id for r in self.rules.patrol.routes}:
            raise ValueError(f"{where}.route: {guard.route!r} is not a route of rules.patrol.routes")
        if guard.reader is not None:
            self._spec(where, guard.reader, PatrolReaderSpec)
        if guard.dock is not None:
            self._spec(where, guard.dock, WandDockSpec)
        if isinstance(guard.dock_at, dict):
            rounds = self.route(guard.route).rounds
            for at in guard.dock_at:
                if at not in rounds:
                    raise ValueError(f"{where}.dock_at: route {guard.route} has no round at {at:%H:%M}")
            missing = [f"{r:%H:%M}" for r in rounds if r not in guard.dock_at]
            if missing:
                raise ValueError(f"{where}.dock_at: no dock time for round(s) {', '.join(missing)}")

    def _check_incident(self, n: int, incident: Incident) -> None:
        where = f"incidents[{n}]"
        needs: dict[str, tuple[type, ...]] = {
            "water_leak": (WaterMeterSpec,),
            "ac_left_on": (PowerMeterSpec,),
            "left_on": (PowerMeterSpec,),
            "meter_replaced": (WaterMeterSpec,),
            "wet": (WetSensorSpec,),
            "door_held_open": (DoorControllerSpec,),
            "door_forced": (DoorControllerSpec,),
            "door_denied": (DoorControllerSpec,),
            "door_after_hours": (DoorControllerSpec,),
            "device_silent": (),
        }
        if incident.type in needs:
            spec = self._spec(where, incident.device, *needs[incident.type])  # type: ignore[union-attr]
            door = getattr(incident, "door", None)
            if door is not None and door not in spec.doors:
                raise ValueError(f"{where}.door: {door!r} is not a door of {spec.device}")
        if isinstance(incident, (SkipCheckpoint, SkipRound, LateRound)):
            if incident.guard not in {g.id for g in self.guards}:
                raise ValueError(f"{where}.guard: no guard {incident.guard!r}")
            route = self.route(self.guard(incident.guard).route)
            if incident.round not in route.rounds:
                raise ValueError(f"{where}.round: route {route.id} has no round at {incident.round:%H:%M}")
            if isinstance(incident, SkipCheckpoint) and incident.tag not in [c.tag for c in route.checkpoints]:
                raise ValueError(f"{where}.tag: {incident.tag!r} is not a checkpoint of route {route.id}")
        if isinstance(incident, DeviceSilent) and self.rules.deadman.heartbeats_count:
            raise ValueError(
                f"{where}: a silent device behind a live agent is only seen with rules.deadman.heartbeats_count: "
                "false (the agent's own heartbeat for each device would count as the device speaking)"
            )

    def _check_fault(self, n: int, fault: Fault) -> None:
        where = f"faults[{n}]"
        line = (PatrolReaderSpec, DoorControllerSpec)
        mqtt = (PowerMeterSpec, WaterMeterSpec, WetSensorSpec, DoorControllerSpec, TemperatureSensorSpec)
        if isinstance(fault, LineNoise):
            spec = self._spec(where, fault.device, *line)
            if isinstance(spec, DoorControllerSpec) and spec.transport != "line":
                raise ValueError(f"{where}.device: {spec.device} is not on a serial line")
        elif isinstance(fault, (MqttMalformed, OutOfOrder)):
            spec = self._spec(where, fault.device, *mqtt)
            if getattr(spec, "transport", "mqtt") != "mqtt":
                raise ValueError(f"{where}.device: {spec.device} does not publish over MQTT")
        elif isinstance(fault, ModbusFault):
            spec = self._spec(where, fault.device, PowerMeterSpec)
            if spec.transport != "modbus":
                raise ValueError(f"{where}.device: {spec.device} is not a Modbus meter")
            self._shorter_than_deadman(where, fault.device, fault.minutes + spec.poll_seconds / 60)
        elif isinstance(fault, Dropout):
            self._spec(where, fault.device)
            self._shorter_than_deadman(where, fault.device, fault.minutes)
        else:
            self._spec(where, fault.device)


    def _shorter_than_deadman(self, where: str, device: str, minutes: float) -> None:
        """A fault must not be an incident: a silence as long as the deadman interval is one."""
        config = self.rules.deadman
        limit = config.devices.get(device, config.reading_minutes) if config.enabled else None
        if limit is not None and minutes >= limit:
            raise ValueError(
                f"{where}.minutes: {minutes:g} min without a reading would raise a deadman alert "
                f"(interval {limit:g} min); make it a device_silent incident, or shorter"
            )
