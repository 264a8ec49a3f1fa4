"""Replay a night through the agent's drivers and the rule engine, in one process, with no
broker, no ports and no clock: seconds for a night, and the rules ticked every minute as
a live gateway ticks them (the live demo, accelerated thousands of times, can only tick
at the start and end of the night).

Each emission goes to the driver the agent would use for it: MQTT payloads to `handle()`,
serial bytes to `feed()`, wand batches to the dock's spool folder and `scan()`, and
Modbus meters are polled by the real `ModbusRtuDriver` through an in-memory bus that
answers from the meter's curve (and its faults). Events then go through what the gateway
does before the rules (drop repeated ids), and signals through what its alert store does
(at most one open alert per key). So a scenario's ground truth can be checked in tests
in seconds, under realistic ticking, before the end-to-end test checks it for real.

The same drivers, fed what a live night really put on the wire (`ProducedEvents`), give
the ids of every event the real agent must deliver: what the fault suite looks for in the
historian, each exactly once.
"""

from __future__ import annotations

import heapq
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pymodbus.exceptions import ModbusIOException

from agent.config import DeviceConfig
from agent.drivers.door_line import DoorLineDriver
from agent.drivers.modbus_rtu import ModbusBus, ModbusRtuDriver
from agent.drivers.mqtt_door import MqttDoorDriver
from agent.drivers.mqtt_json import MqttJsonDriver
from agent.drivers.patrol_line import PatrolLineDriver
from agent.drivers.patrol_wand import PatrolWandDriver
from rules.alerts import AlertSignal, SignalAction
from rules.engine import RuleEngine
from simulators.ac_meter import PowerMeterSim
from simulators.base import BROKER, LINE, MODBUS, MQTT, WAND, Emission, epoch, utc
from simulators.patrol_wand import deliver
from simulators.sdm120 import INPUT_REGISTERS, float_words
from simulators.timeline import Night
from simulators.wiring import device_config
from warden.events import DeviceState, DeviceStatus, Event, stable_event_id

_DEVICE: TypeAdapter[DeviceConfig] = TypeAdapter(DeviceConfig)


class EmissionClock:
    """The replay's "now": the instant of the emission being handled."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        return None

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.is_set()


@dataclass
class ReplayResult:
    alerts: list[dict[str, Any]]  # as the API lists them: rule, subject, state, details, opened_at
    events: int
    duplicates: int
    counters: dict[str, dict[str, float]]  # per device, the driver's health counters
    signals: list[AlertSignal] = field(default_factory=list)


class DriverBank:
    """The agent's driver for every device of a night, configured as the live agent's
    (simulators/wiring.py), fed in-process: `take()` hands an emission to the driver the
    agent would read it with. Modbus meters answer through an in-memory bus (`meters`),
    polled by whoever owns the bank."""

    def __init__(self, night: Night, spool: Path, clock: EmissionClock, emit: Callable[[Event], None]) -> None:
        self.night = night
        self.clock = clock
        self.site = night.scenario.site.id
        self.drivers: dict[str, Any] = {}
        self.meters: dict[str, _Meter] = {}
        for spec in night.scenario.devices:
            config = _DEVICE.validate_python(device_config(night, spec, port="replay", spool_dir=spool / spec.device))
            self.drivers[config.id] = self._driver(config, emit)

    def _driver(self, config: Any, emit: Callable[[Event], None]) -> Any:
        site, clock = self.site, self.clock
        match config.driver:
            case "mqtt_json":
                return MqttJsonDriver(config, site, emit, clock)
            case "mqtt_door":
                return MqttDoorDriver(config, site, emit, clock)
            case "patrol_line":
                return PatrolLineDriver(config, site, emit, clock)
            case "door_line":
                return DoorLineDriver(config, site, emit, clock)
            case "patrol_wand":
                return PatrolWandDriver(config, site, emit, clock)
        meter = self.meters[config.id] = _Meter(self.night.power[config.id], clock)
        return ModbusRtuDriver(config, site, emit, clock, ModbusBus(config, lambda _: meter))

    def take(self, e: Emission) -> None:
        """What the device's driver does with one emission (BROKER controls are not theirs)."""
        if e.channel == MQTT:
            self.drivers[e.device].handle(e.payload)
        elif e.channel == LINE:
            self.drivers[e.device].feed(e.payload)
        elif e.channel == WAND:
            driver = self.drivers[e.device]
            deliver(driver.spool, e.topic, e.payload)
            driver.scan()
        elif e.channel == MODBUS:
            self.meters[e.device].control(e.action)


class ProducedEvents:
    """Every event the agent should make of what a live night put on the wire (pass `add`
    as NightSimulation's `on_wire`), by id: an MQTT message lost while the broker was down
    is not in it, a resent line or a duplicated message is in it once. Polled Modbus meters
    are refused: what they produce depends on when the agent polls, not on emissions."""

    def __init__(self, night: Night, spool: Path) -> None:
        if night.modbus_meters:
            raise ValueError(f"polled Modbus meters have no emissions to derive events from: {sorted(night.modbus_meters)}")
        self.events: dict[str, Event] = {}
        self._clock = EmissionClock(night.scenario.start_utc)
        self._bank = DriverBank(night, spool, self._clock, lambda event: self.events.setdefault(event.id, event))

    def add(self, e: Emission) -> None:
        self._clock.at = e.at
        self._bank.take(e)

    def ids(self) -> set[str]:
        return set(self.events)


def replay(night: Night, *, tick_seconds: float = 60.0) -> ReplayResult:
    """Play the night through drivers and rules; return the alerts they raised."""
    with tempfile.TemporaryDirectory(prefix="warden-replay-") as spool:
        return _Replay(night, Path(spool), tick_seconds).run()


class _Replay:
    def __init__(self, night: Night, spool: Path, tick_seconds: float) -> None:
        scenario = night.scenario
        self.night = night
        self.clock = EmissionClock(scenario.start_utc)
        self.site = scenario.site.id
        self.agent = scenario.agent
        self.lateness = timedelta(seconds=scenario.rules.allowed_lateness_seconds)
        self.tick_seconds = tick_seconds
        self.engine = RuleEngine(scenario.site, scenario.rules)
        self.seen: set[str] = set()
        self.pending: list[Event] = []
        self.result = ReplayResult(alerts=[], events=0, duplicates=0, counters={})
        self.open: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.bank = DriverBank(night, spool, self.clock, self.pending.append)
        self.drivers, self.meters = self.bank.drivers, self.bank.meters

    # ----------------------------------------------------------------- playing

    def run(self) -> ReplayResult:
        scenario = self.night.scenario
        start, end = epoch(scenario.start_utc), epoch(scenario.end_utc)
        self._tick(start)
        for t, kind, item in heapq.merge(self._emissions(), self._polls(start, end), self._ticks(start, end)):
            self.clock.at = utc(t)
            if kind == 0:
                self._emission(item)
            elif kind == 1:
                self.drivers[item].poll(self.clock.at)
            else:
                self._tick(t)
            self._deliver()
        self.clock.at = scenario.end_utc
        self._tick(end, lateness=False)
        self.result.counters = {device: driver.counters.snapshot() for device, driver in self.drivers.items()}
        return self.result

    def _emissions(self) -> Iterator[tuple[float, int, Any]]:
        for n, e in enumerate(self.night.emissions()):
            yield e.t, 0, _Ordered(n, e)

    def _polls(self, start: float, end: float) -> Iterator[tuple[float, int, Any]]:
        polls = []
        for device, meter in self.meters.items():
            period = meter.sim.spec.poll_seconds
            polls += [(start + k * period, 1, device) for k in range(int((end - start) // period) + 1)]
        return iter(sorted(polls))

    def _ticks(self, start: float, end: float) -> Iterator[tuple[float, int, Any]]:
        n = int((end - start) // self.tick_seconds)
        return ((start + k * self.tick_seconds, 2, None) for k in range(1, n + 1))

    def _emission(self, ordered: _Ordered) -> None:
        e = ordered.emission
        if e.channel == BROKER and e.action == "up":
            self._broker_restarted()
        else:
            self.bank.take(e)

    def _broker_restarted(self) -> None:
        """What the gateway sees after a broker restart: the agent's will (stamped when the
        agent set it, at start), then its retained online status."""
        will_time = self.night.scenario.start_utc
        for state, at in ((DeviceState.OFFLINE, will_time), (DeviceState.ONLINE, self.clock.at)):
            self.pending.append(DeviceStatus(
                id=stable_event_id(self.site, self.agent, "status", state, at.isoformat()),
                site=self.site, device=self.agent, event_time=at, state=state,
            ))

    # ----------------------------------------------------------------- the gateway's part

    def _deliver(self) -> None:
        events, self.pending[:] = list(self.pending), []
        for event in events:
            if event.id in self.seen:
                self.result.duplicates += 1
                continue
            self.seen.add(event.id)
            self.result.events += 1
            if event.device != self.agent:
                self.engine.learn_agent(event.device, self.agent)
            self._apply(self.engine.on_event(event))

    def _tick(self, t: float, lateness: bool = True) -> None:
        self._apply(self.engine.on_tick(utc(t) - (self.lateness if lateness else timedelta(0))))

    def _apply(self, signals: list[AlertSignal]) -> None:
        """The alert store's rule: at most one open alert per (site, rule, subject)."""
        for signal in signals:
            self.result.signals.append(signal)
            live = self.open.get(signal.key)
            if signal.action is SignalAction.RAISE and live is None:
                live = {"rule": signal.rule, "subject": signal.subject, "state": "open",
                        "opened_at": signal.at.isoformat(), "details": dict(signal.details), "message": signal.message}
                self.open[signal.key] = live
                self.result.alerts.append(live)
            elif live is not None:
                live.update(details=dict(signal.details), message=signal.message)
                if signal.action is SignalAction.RESOLVE:
                    live["state"] = "resolved"
                    del self.open[signal.key]


@dataclass(order=True)
class _Ordered:
    """Keeps emissions in stream order when merged with polls and ticks at equal times."""

    n: int
    emission: Emission = field(compare=False)


# --------------------------------------------------------------------------- an in-memory SDM120


@dataclass
class _Response:
    registers: list[int]
    exception_code: int = 0

    def isError(self) -> bool:  # noqa: N802 - pymodbus' name
        return bool(self.exception_code)


class _Meter:
    """What `ModbusBus` needs of a pymodbus client, answering from the meter's curve."""

    def __init__(self, sim: PowerMeterSim, clock: EmissionClock) -> None:
        self.sim = sim
        self.clock = clock
        self.state = "clear"  # clear, mute, refuse:<code>
        self._names = {address: name for name, address in INPUT_REGISTERS.items()}

    def control(self, action: str) -> None:
        self.state = action

    def connect(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> _Response:
        if self.state == "mute":
            raise ModbusIOException("No response received, expected at least 4 bytes")
        if self.state.startswith("refuse:"):
            return _Response([], int(self.state.split(":")[1]))
        values = self.sim.registers_at(self.clock.now().timestamp())
        name = self._names.get(address)
        if name is None or count != 2:
            return _Response([], 2)
        return _Response(list(float_words(values[name])))

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> _Response:
        return _Response([], 2)

