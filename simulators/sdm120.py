"""A simulated Eastron SDM120 meter: a pymodbus RTU server answering the meter's input
registers (function 04, IEEE-754 float32, high word first), so the agent's `modbus_rtu`
driver runs against it exactly as configured for the real meter (`registers: sdm120`).

Links:
- `link="pty"`: two pseudo-terminals wired back to back, like a null-modem cable (or
  socat): the server opens one end, the agent the other (`port`). `unplug()` and
  `replug()` pull and reconnect the agent's end, as a USB adapter coming and going; give
  `alias` (a path) to get a stable name that follows it, like /dev/serial/by-id/....
- `link="tcp"`: the same RTU frames over TCP, as a serial device server passes them on;
  `port` is `socket://127.0.0.1:PORT`.

Values are set with `set(...)`, or come from `source`, a callable asked for the current
values at every request (a simulated meter whose curve is a function of the simulated
clock: simulators/ac_meter.py).

Fault injection: `silence(*addresses)` leaves requests touching those addresses
unanswered (the client times out), `refuse(code, *addresses)` answers them with a Modbus
exception, `mute()` stops answering at all, `clear_faults()` undoes all three.

It has its own register table and float encoder on purpose: sharing the agent's preset
or decoder would let a wrong address or word order on one side hide the same mistake on
the other. Tests hold both to domain.md.
"""

from __future__ import annotations

import asyncio
import os
import select
import struct
import threading
import tty
from pathlib import Path
from types import TracebackType
from typing import Callable, Literal, Mapping

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.broker import free_port, wait_for_port

#: The SDM120's input registers, copied from Eastron's SDM120 Modbus protocol sheet on
#: purpose, not imported from the agent's preset (agent/drivers/modbus_maps.py): the
#: simulated meter is the device, so a wrong address in the preset shows in the tests.
INPUT_REGISTERS: dict[str, int] = {
    "voltage": 0x0000,
    "current": 0x0006,
    "active_power": 0x000C,
    "apparent_power": 0x0012,
    "reactive_power": 0x0018,
    "power_factor": 0x001E,
    "frequency": 0x0046,
    "import_energy": 0x0048,
    "export_energy": 0x004A,
    "total_energy": 0x0156,
}

#: Registers the simulated meter has, per table; addresses beyond answer "illegal address".
TABLE_SIZE = 0x0200

Table = Literal["input", "holding"]
_TABLE_OF_FUNCTION: dict[int, Table] = {4: "input", 3: "holding", 6: "holding", 16: "holding", 23: "holding"}


def float_words(value: float) -> tuple[int, int]:
    """IEEE-754 single precision as two registers, high word first."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return high, low


class Sdm120Sim:
    """One meter on its own line; values are set from tests with `set(...)`."""

    def __init__(
        self,
        unit_id: int = 1,
        *,
        link: Literal["pty", "tcp"] = "pty",
        alias: Path | None = None,
        baudrate: int = 9600,
        source: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.unit_id = unit_id
        self._source = source
        self.requests = 0  # requests answered or deliberately ignored
        self._words: dict[tuple[Table, int], int] = {}
        self._silent: set[int] = set()
        self._refused: dict[int, int] = {}
        self._muted = False
        self._drop_next_answer = False
        self._lock = threading.Lock()
        self._served = threading.Condition(self._lock)
        self._modem = _NullModem(alias) if link == "pty" else None
        self._tcp_port = free_port() if link == "tcp" else 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sdm120-sim", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(baudrate), self._loop).result(timeout=10)
        if link == "tcp":
            wait_for_port("127.0.0.1", self._tcp_port)
        self._closed = False
        self.set(voltage=230.0, frequency=50.0, power_factor=1.0)

    # ------------------------------------------------------------------ what the agent opens

    @property
    def port(self) -> str:
        if self._modem is not None:
            return self._modem.host_port
        return f"socket://127.0.0.1:{self._tcp_port}"

    # ------------------------------------------------------------------ values

    def set(self, **values: float) -> None:
        """Set SDM120 values by name (see INPUT_REGISTERS), e.g. set(active_power=812.5)."""
        for name, value in values.items():
            if name not in INPUT_REGISTERS:
                raise KeyError(f"the SDM120 has no register {name!r}; known: {', '.join(INPUT_REGISTERS)}")
            self.set_words("input", INPUT_REGISTERS[name], float_words(value))

    def set_words(self, table: Table, address: int, words: tuple[int, ...] | list[int]) -> None:
        """Put raw 16-bit words at an address, for other data types and word orders."""
        with self._lock:
            for offset, word in enumerate(words):
                if not 0 <= word <= 0xFFFF:
                    raise ValueError(f"not a 16-bit word: {word}")
                self._words[(table, address + offset)] = word

    # ------------------------------------------------------------------ faults

    def silence(self, *addresses: int) -> None:
        """Leave requests touching these addresses unanswered."""
        with self._lock:
            self._silent.update(addresses)

    def refuse(self, code: int, *addresses: int) -> None:
        """Answer requests touching these addresses with Modbus exception `code`."""
        with self._lock:
            self._refused.update({address: code for address in addresses})

    def mute(self) -> None:
        """Answer nothing at all, as a meter without power."""
        with self._lock:
            self._muted = True

    def clear_faults(self) -> None:
        with self._lock:
            self._silent.clear()
            self._refused.clear()
            self._muted = False

    def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        """Block until `count` requests in total reached the meter."""
        with self._served:
            if not self._served.wait_for(lambda: self.requests >= count, timeout):
                raise TimeoutError(f"the meter saw {self.requests} of {count} requests")

    # ------------------------------------------------------------------ the line

    def unplug(self) -> None:
        """Pull the agent's end of the cable (pty link): its open port fails."""
        self._require_modem().unplug()

    def replug(self) -> None:
        """Plug a new cable in: a new pseudo-terminal, and `alias` points at it."""
        self._require_modem().replug()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        if self._modem is not None:
            self._modem.close()

    def __enter__(self) -> Sdm120Sim:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ server internals

    async def _start(self, baudrate: int) -> ModbusSerialServer | ModbusTcpServer:
        def bits() -> list[SimData]:
            return [SimData(0, values=[False] * 16, datatype=DataType.BITS)]

        def registers() -> list[SimData]:
            return [SimData(0, count=TABLE_SIZE, datatype=DataType.REGISTERS)]

        # Separate tables (coils, discrete inputs, holding, input), as the meter has;
        # the values themselves are filled in per request by _on_request.
        device = SimDevice(id=self.unit_id, simdata=(bits(), bits(), registers(), registers()), action=self._on_request)
        server: ModbusSerialServer | ModbusTcpServer
        if self._modem is not None:
            server = ModbusSerialServer(
                device, framer=FramerType.RTU, port=self._modem.device_port, baudrate=baudrate, trace_packet=self._outgoing
            )
        else:
            server = ModbusTcpServer(
                device, framer=FramerType.RTU, address=("127.0.0.1", self._tcp_port), trace_packet=self._outgoing
            )
        await server.serve_forever(background=True)
        return server

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before answering: fill in current values, or fail on purpose."""
        if self._source is not None:
            self.set(**self._source())
        touched = set(range(address, address + count))
        with self._lock:
            self.requests += 1
            self._served.notify_all()
            if self._muted or touched & self._silent:
                self._drop_next_answer = True
                return None
            refused = [self._refused[a] for a in sorted(touched & self._refused.keys())]
            if refused:
                return ExcCodes(refused[0])
            table = _TABLE_OF_FUNCTION.get(function_code, "holding")
            for n in range(count):
                registers[address - start_address + n] = self._words.get((table, address + n), 0)
        return None

    def _outgoing(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus' packet hook: an empty packet is how a reply is left unsent. A reply
        carries the request's unit id: one not this meter's (another meter on the bus, or
        0, broadcast) is left unsent, as a real RS-485 meter stays silent (pymodbus would
        answer exception 04)."""
        if not sending:
            return packet
        if packet and packet[0] != self.unit_id:
            return b""
        with self._lock:
            if self._drop_next_answer or self._muted:
                self._drop_next_answer = False
                return b""
        return packet

    def _require_modem(self) -> _NullModem:
        if self._modem is None:
            raise ValueError("unplug/replug need the pty link; a TCP device server is restarted instead")
        return self._modem


class _Pty:
    """One pseudo-terminal in raw mode; we keep the slave open so bytes are never refused."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            os.close(fd)


class _NullModem:
    """Two pseudo-terminals whose masters a thread copies between, both ways.

    All fd changes (unplug, replug, close) run on the relay thread, between two
    select() calls, so a descriptor is never closed while it is being waited on.
    """

    def __init__(self, alias: Path | None) -> None:
        self.alias = alias
        self._device = _Pty()
        self._host: _Pty | None = _Pty()
        self._point_alias()
        self._wake_r, self._wake_w = os.pipe()
        self._pending: list[tuple[Callable[[], None], threading.Event]] = []
        self._pending_lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._relay, name="sdm120-null-modem", daemon=True)
        self._thread.start()

    @property
    def device_port(self) -> str:
        return self._device.path

    @property
    def host_port(self) -> str:
        if self.alias is not None:
            return str(self.alias)
        if self._host is None:
            raise ValueError("unplugged")
        return self._host.path

    def unplug(self) -> None:
        self._call(self._close_host)

    def replug(self) -> None:
        self._call(self._open_host)

    def close(self) -> None:
        self._call(self._stop)
        self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _call(self, action: Callable[[], None]) -> None:
        done = threading.Event()
        with self._pending_lock:
            self._pending.append((action, done))
        os.write(self._wake_w, b"!")
        if not done.wait(5):
            raise TimeoutError("null-modem relay did not respond")

    def _close_host(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None

    def _open_host(self) -> None:
        self._close_host()
        self._host = _Pty()
        self._point_alias()

    def _stop(self) -> None:
        self._close_host()
        self._device.close()
        self._running = False

    def _point_alias(self) -> None:
        if self.alias is None or self._host is None:
            return
        staging = self.alias.with_name(self.alias.name + ".new")
        staging.unlink(missing_ok=True)
        staging.symlink_to(self._host.path)
        os.replace(staging, self.alias)  # atomic: the agent sees the old or the new port, never none

    def _relay(self) -> None:
        while self._running:
            host = self._host.master if self._host else None
            watched = [self._wake_r, self._device.master] + ([host] if host is not None else [])
            readable, _, _ = select.select(watched, [], [])
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
                self._run_pending()
                continue
            for fd in readable:
                target = host if fd == self._device.master else self._device.master
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if target is not None and data:
                    _write_all(target, data)

    def _run_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for action, done in pending:
            action()
            done.set()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
