"""Modbus RTU meters (e.g. the Eastron SDM120) polled over RS-485 with pymodbus.

Three layers, each testable alone: `decode` turns register words into a number,
`ModbusBus` owns one serial line (meters daisy-chained on one RS-485 port share it and
take turns, as the half-duplex bus requires) and turns pymodbus' outcomes into a few
failure kinds, and `ModbusRtuDriver` polls one meter on its interval, counts and logs
what went wrong, and emits a Reading per register.

Failure policy (docs/agent.md):
- an exception response (illegal address, device busy...) fails that register only;
  the rest of the poll goes on;
- no answer (timeout) ends the poll, since a meter that ignored one request rarely
  answers the next a millisecond later, and a dead meter must not hold the bus for a
  timeout per register; the port is reopened for the next poll, which also recovers a
  USB adapter that re-enumerated or a device server that dropped the TCP session;
- a port that cannot be opened or fails ends the poll and is reopened at the next one.
Nothing is fatal: the driver polls until stopped.
"""

from __future__ import annotations

import array
import fcntl
import functools
import logging
import math
import struct
import termios
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Literal, Protocol

import serial
from pydantic import Field, model_validator

from agent.drivers.base import Driver, DriverCounters, DriverHost, Emit
from agent.drivers.registry import DriverSpec
from warden.clock import Clock
from warden.config import StrictModel, require_unique
from warden.events import Identifier, Quantity, Reading, stable_event_id

log = logging.getLogger(__name__)

#: Modbus exception codes by name, for counters such as error_exception_illegal_address.
EXCEPTION_NAMES = {
    1: "illegal_function",
    2: "illegal_address",
    3: "illegal_value",
    4: "device_failure",
    5: "acknowledge",
    6: "device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_no_response",
}

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}


# --------------------------------------------------------------------------- config


_REGISTER_WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}


class ModbusRegister(StrictModel):
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


class ModbusRtuDevice(StrictModel):
    """A Modbus RTU meter polled over a serial line (RS-485) or a serial device server.

    `registers` is a list of ModbusRegister or the name of a shipped map
    (agent/drivers/modbus_maps.py: `sdm120`); `include` keeps only the named registers.
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
            from agent.drivers.modbus_maps import PRESETS, preset

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
        require_unique((r.name for r in self.registers), "registers", "name")
        return self

    @property
    def bus_address(self) -> int:
        """Several devices may share a port if each has its own address on the bus."""
        return self.unit_id

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


# --------------------------------------------------------------------------- codec


def decode(words: list[int], data_type: str, word_order: str = "big") -> float:
    """Register words (16-bit, as received) to a number; each word is big-endian on the wire.

    `word_order="big"` puts the first register in the high half of a 32-bit value.
    """
    if word_order == "little":
        words = list(reversed(words))
    raw = b"".join(word.to_bytes(2, "big") for word in words)
    value = float(struct.unpack(_FORMATS[data_type], raw)[0])
    return _shortest_float32(value, raw) if data_type == "float32" else value


def _shortest_float32(value: float, raw: bytes) -> float:
    """The shortest decimal that is the same float32, e.g. 1234.56 rather than
    1234.56005859375: the digits the meter meant, without float64 noise."""
    if not math.isfinite(value):
        return value
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == raw:
            return candidate
    return value


# --------------------------------------------------------------------------- bus


class ModbusFailure(Exception):
    """A request that produced no value; `reason` names it for the counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NoAnswer(ModbusFailure):
    def __init__(self, detail: str) -> None:
        super().__init__("timeout", detail)


class PortFailure(ModbusFailure):
    def __init__(self, detail: str) -> None:
        super().__init__("port_error", detail)


class ExceptionAnswer(ModbusFailure):
    def __init__(self, code: int) -> None:
        super().__init__(f"exception_{EXCEPTION_NAMES.get(code, code)}", f"exception code {code}")
        self.code = code


class _Client(Protocol):
    def connect(self) -> bool: ...

    def close(self) -> None: ...

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any: ...

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any: ...


ClientFactory = Callable[[ModbusRtuDevice], _Client]


def serial_client(config: ModbusRtuDevice) -> _Client:
    """pymodbus' synchronous RTU client; the port goes to pyserial, so socket:// works too."""
    from pymodbus.client import ModbusSerialClient

    client_class = _device_server_client(ModbusSerialClient) if config.port.startswith("socket://") else ModbusSerialClient
    return client_class(
        config.port,
        baudrate=config.baudrate,
        bytesize=config.bytesize,
        parity=config.parity,
        stopbits=config.stopbits,
        timeout=config.timeout_seconds,
        retries=config.retries,
        name=config.port,
    )


@functools.cache
def _device_server_client(base: type) -> type:
    """The RTU client for a serial device server (socket://). pyserial's socket handler
    answers `in_waiting` with 1 for "something to read", not a byte count, so pymodbus read
    a reply byte by byte with a 4 ms wait between bytes: 43 ms a register read at 9600 baud
    against 9 ms on a serial port. The count comes from the socket instead (FIONREAD)."""

    class DeviceServerClient(base):  # type: ignore[misc, valid-type]
        def _in_waiting(self) -> int:
            waiting = array.array("i", [0])
            fcntl.ioctl(self.socket.fileno(), termios.FIONREAD, waiting)
            return waiting[0]

    return DeviceServerClient


class ModbusBus:
    """One serial line; `lock` is held for a whole poll so meters on it take turns."""

    def __init__(self, config: ModbusRtuDevice, client_factory: ClientFactory = serial_client) -> None:
        self.port = config.port
        self.lock = threading.Lock()
        self._client = client_factory(config)
        # pymodbus is loaded with the first meter's bus, not with this module: the module
        # holds the device model every agent validates, pymodbus is 11 MB of memory.
        from pymodbus import exceptions

        self._errors = exceptions
        self._open = False

    def read(self, unit_id: int, register: ModbusRegister) -> list[int]:
        """The register's words, or a ModbusFailure saying why not."""
        self._ensure_open()
        read = self._client.read_input_registers if register.function == "input" else self._client.read_holding_registers
        try:
            response = read(register.address, count=register.words, device_id=unit_id)
        except self._errors.ModbusIOException as exc:
            if "no response" not in str(exc).lower():
                raise ModbusFailure("bad_response", str(exc)) from None  # e.g. another unit id answered
            self.close()  # reopen next time: a silent line may be a stale port
            raise NoAnswer(str(exc)) from None
        except (self._errors.ConnectionException, serial.SerialException, OSError) as exc:
            self.close()
            raise PortFailure(str(exc)) from None
        except self._errors.ModbusException as exc:
            raise ModbusFailure("bad_response", str(exc)) from None
        if response.isError():
            raise ExceptionAnswer(int(getattr(response, "exception_code", 0)))
        words = list(getattr(response, "registers", []))
        if len(words) != register.words:
            raise ModbusFailure("bad_response", f"expected {register.words} registers, got {len(words)}")
        return words

    def close(self) -> None:
        self._open = False
        try:
            self._client.close()
        except (serial.SerialException, OSError):
            pass  # closing a port that is already gone

    def _ensure_open(self) -> None:
        if self._open:
            return
        try:
            opened = self._client.connect()
        except (serial.SerialException, OSError, ValueError) as exc:  # ValueError: bad URL
            raise PortFailure(str(exc)) from None
        if not opened:
            raise PortFailure(f"cannot open {self.port}")
        self._open = True


class ModbusBuses:
    """One ModbusBus per port, so meters daisy-chained on a port share it (the config
    guarantees they agree on the line settings)."""

    def __init__(self, client_factory: ClientFactory = serial_client) -> None:
        self._client_factory = client_factory
        self._buses: dict[str, ModbusBus] = {}

    def get(self, config: ModbusRtuDevice) -> ModbusBus:
        if config.port not in self._buses:
            self._buses[config.port] = ModbusBus(config, self._client_factory)
        return self._buses[config.port]


# --------------------------------------------------------------------------- driver


class ModbusRtuDriver:
    """Polls one meter every `poll_seconds` and emits a Reading per register read.

    Readings of one poll share its start time as `event_time`, and their ids are
    stable_event_id(site, device, register name, poll time), so a reading is one
    observation however often it travels.
    """

    def __init__(
        self, config: ModbusRtuDevice, site: str, emit: Emit, clock: Clock, bus: ModbusBus | None = None
    ) -> None:
        self.config = config
        self.site = site
        self.device_id = config.id
        self.counters = DriverCounters()
        self.bus = bus or ModbusBus(config)
        self._emit = emit
        self._clock = clock
        self._polls = 0
        self._polls_lock = threading.Condition()
        self._reported: dict[str, str] = {}  # register (or "port") -> failure already logged

    @property
    def polls(self) -> int:
        """Polls finished, successful or not (health, and lets tests wait for one)."""
        with self._polls_lock:
            return self._polls

    def run(self, stop: threading.Event) -> None:
        period = timedelta(seconds=self.config.poll_seconds)
        due = self._clock.now()
        try:
            while not stop.is_set():
                remaining = (due - self._clock.now()).total_seconds()
                if remaining > 0 and self._clock.wait(stop, remaining):
                    break
                started = self._clock.now()
                self.poll(started, stop)
                due = _next_due(due, period, self._clock.now())
        finally:
            with self.bus.lock:  # a meter sharing the bus may be mid-poll
                self.bus.close()

    def poll(self, at: datetime, stop: threading.Event | None = None) -> list[Reading]:
        """Read every register once; failures are counted and logged, never raised."""
        readings: list[Reading] = []
        with self.bus.lock:
            for register in self.config.registers:
                if stop is not None and stop.is_set():
                    break
                try:
                    reading = self._read(register, at)
                except ModbusFailure as exc:
                    self._failed(register, exc)
                    if isinstance(exc, (NoAnswer, PortFailure)):
                        break  # the rest of this poll would fail the same way, a timeout each
                    continue
                self._recovered(register)
                self.counters.count_event(reading.receive_time or at)
                self._emit(reading)
                readings.append(reading)
        with self._polls_lock:
            self._polls += 1
            self._polls_lock.notify_all()
        return readings

    def _read(self, register: ModbusRegister, at: datetime) -> Reading:
        words = self.bus.read(self.config.unit_id, register)
        value = decode(words, register.data_type, register.word_order) * register.scale
        if not math.isfinite(value):
            raise ModbusFailure("bad_value", f"{value} from words {[hex(w) for w in words]}")
        return Reading(
            id=stable_event_id(self.site, self.device_id, register.name, at.isoformat()),
            site=self.site,
            device=self.device_id,
            event_time=at,
            receive_time=self._clock.now(),
            quantity=register.quantity,
            value=value,
            unit=register.unit,
            cumulative=register.cumulative,
            channel=register.name,
        )

    def _failed(self, register: ModbusRegister, exc: ModbusFailure) -> None:
        """Count every failure; log the first of a run at WARNING, repeats at DEBUG."""
        self.counters.count_error(exc.reason)
        key = "port" if exc.reason in ("timeout", "port_error") else register.name
        level = logging.DEBUG if self._reported.get(key) == exc.reason else logging.WARNING
        self._reported[key] = exc.reason
        log.log(
            level,
            "modbus %s unit %d: %s reading %s at 0x%04X (%s)",
            self.config.port,
            self.config.unit_id,
            exc.reason,
            register.name,
            register.address,
            exc.detail,
            extra={
                "device": self.device_id,
                "port": self.config.port,
                "unit_id": self.config.unit_id,
                "register": register.name,
                "address": register.address,
                "reason": exc.reason,
            },
        )

    def _recovered(self, register: ModbusRegister) -> None:
        cleared = [self._reported.pop(key, None) for key in ("port", register.name)]
        if any(cleared):
            log.info(
                "modbus %s unit %d: answering again",
                self.config.port,
                self.config.unit_id,
                extra={"device": self.device_id, "port": self.config.port, "register": register.name},
            )


def _next_due(due: datetime, period: timedelta, now: datetime) -> datetime:
    """The next slot on the poll grid; slots missed by a slow poll are skipped, not caught up."""
    due += period
    if due <= now:
        missed = (now - due) // period + 1
        due += missed * period
    return due


def _build(device: ModbusRtuDevice, host: DriverHost) -> Driver:
    """Meters daisy-chained on one port share its bus (one per port and agent)."""
    return ModbusRtuDriver(device, host.site, host.emit, host.clock, host.shared("modbus_buses", ModbusBuses).get(device))


DRIVER = DriverSpec(model=ModbusRtuDevice, build=_build)
