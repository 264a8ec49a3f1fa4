"""The Modbus RTU driver: its decoder, its config, and the driver against the SDM120
simulator over real pseudo-terminals and a TCP serial device server."""

from __future__ import annotations

import logging
import queue
import re
import struct
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig
from agent.drivers.modbus_rtu import ModbusBuses, ModbusRtuDevice, ModbusRtuDriver, _next_due, decode, serial_client
from simulators.sdm120 import Sdm120Sim
from tests.support.wait import wait_for
from warden.clock import ManualClock
from warden.events import Event, Quantity, Reading, stable_event_id

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
T0 = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc)
SITE = "riverside"
POLL = 10.0

#: What the simulated meter is set to, and what the driver must read back.
VALUES = {
    "voltage": 231.4,
    "current": 3.52,
    "active_power": 812.5,
    "apparent_power": 830.25,
    "reactive_power": -171.0,
    "power_factor": 0.98,
    "frequency": 49.97,
    "import_energy": 12345.67,
    "export_energy": 0.25,
    "total_energy": 12345.92,
}


def documented_sdm120() -> dict[int, str]:
    """Address -> unit of the SDM120 table in docs/agent.md (copied from the domain brief)."""
    rows = re.findall(r"^\| `?(0x[0-9A-F]{4})`? \| [^|]+ \| ([^|]+?) \|", DOC.read_text(), re.MULTILINE)
    return {int(address, 16): unit.strip().strip("`") for address, unit in rows}


def meter_config(port: str, **overrides: Any) -> ModbusRtuDevice:
    document: dict[str, Any] = {
        "driver": "modbus_rtu",
        "id": "ac-a204",
        "port": port,
        "registers": "sdm120",
        "poll_seconds": POLL,
        "timeout_seconds": 1.5,  # a healthy answer arrives within it on a loaded 2-core machine; exact error counts depend on that
    }
    return ModbusRtuDevice.model_validate({**document, **overrides})


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("words", "data_type", "word_order", "value"),
    [
        ([0x4366, 0x8000], "float32", "big", 230.5),
        ([0x8000, 0x4366], "float32", "little", 230.5),
        ([0x4640, 0xE6AE], "float32", "big", 12345.67),  # shortest float32, not 12345.669921875
        ([0xBF80, 0x0000], "float32", "big", -1.0),
        ([0xFFFF], "int16", "big", -1),
        ([0x8000], "int16", "little", -32768),  # word order is irrelevant for one word
        ([0xFFFF], "uint16", "big", 65535),
        ([0x0001, 0x0002], "uint32", "big", 65538),
        ([0x0002, 0x0001], "uint32", "little", 65538),
        ([0xFFFF, 0xFFFE], "int32", "big", -2),
        ([0xFFFE, 0xFFFF], "int32", "little", -2),
    ],
)
def test_decodes_each_data_type_and_word_order(words: list[int], data_type: str, word_order: str, value: float) -> None:
    assert decode(words, data_type, word_order) == value


def test_a_float32_keeps_the_digits_the_meter_meant_and_no_more() -> None:
    for value in (0.1, 1234.56, 49.97, 3.4028235e38, 1e-7):
        words = list(struct.unpack(">HH", struct.pack(">f", value)))
        decoded = decode(words, "float32")
        assert struct.pack(">f", decoded) == struct.pack(">f", value)  # the same float32
        assert decoded == value


def test_next_poll_skips_slots_a_slow_poll_missed() -> None:
    period = timedelta(seconds=10)
    assert _next_due(T0, period, T0 + timedelta(seconds=3)) == T0 + period
    assert _next_due(T0, period, T0 + timedelta(seconds=10)) == T0 + 2 * period
    assert _next_due(T0, period, T0 + timedelta(seconds=35)) == T0 + 4 * period


# --------------------------------------------------------------------------- config


def test_the_sdm120_preset_is_the_documented_register_map() -> None:
    documented = documented_sdm120()
    assert len(documented) == 10, "docs/agent.md lost rows of the SDM120 table"
    registers = meter_config("/dev/ttyUSB0").registers
    assert {r.address: r.unit for r in registers} == documented
    assert {(r.function, r.data_type, r.word_order) for r in registers} == {("input", "float32", "big")}
    energies = {r.name for r in registers if r.quantity is Quantity.ENERGY}
    assert energies == {"import_energy", "export_energy", "total_energy"}
    assert all(r.cumulative == (r.name in energies) for r in registers)
    assert next(r for r in registers if r.name == "active_power").quantity is Quantity.POWER


def test_include_keeps_only_the_named_registers_of_a_preset() -> None:
    config = meter_config("/dev/ttyUSB0", include=["import_energy", "active_power"])
    assert [r.name for r in config.registers] == ["active_power", "import_energy"]
    with pytest.raises(ValidationError, match="no register named 'reactive'"):
        meter_config("/dev/ttyUSB0", include=["reactive"])
    with pytest.raises(ValidationError, match="unknown preset 'sdm630'"):
        meter_config("/dev/ttyUSB0", registers="sdm630")


def test_meters_may_share_a_port_only_as_one_bus(tmp_path: Path) -> None:
    def agent(*devices: dict[str, Any]) -> AgentConfig:
        return AgentConfig.model_validate({"id": "a", "site": "s", "devices": list(devices)})

    one = {"driver": "modbus_rtu", "id": "m1", "port": "/dev/ttyUSB0", "registers": "sdm120"}
    two = {**one, "id": "m2", "unit_id": 2}
    config = agent(one, two)
    buses = ModbusBuses()
    assert buses.get(config.devices[0]) is buses.get(config.devices[1])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="share port /dev/ttyUSB0 and unit_id 1"):
        agent(one, {**one, "id": "m2"})
    with pytest.raises(ValidationError, match="differ in baudrate"):
        agent(one, {**two, "baudrate": 2400})
    with pytest.raises(ValidationError, match="cannot share port"):
        agent(one, {"driver": "patrol_line", "id": "r", "port": "/dev/ttyUSB0"})


# --------------------------------------------------------------------------- driver vs simulator


class Harness:
    """The driver polling in a thread on a hand-moved clock: one advance, one poll."""

    def __init__(self, config: ModbusRtuDevice) -> None:
        self.clock = ManualClock(T0)
        self.events: queue.Queue[Event] = queue.Queue()
        self.driver = ModbusRtuDriver(config, SITE, self.events.put, self.clock)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.driver.run, args=(self.stop,), daemon=True)
        self.thread.start()
        wait_for(lambda: self.driver.polls == 1, what="first poll at start")

    def poll(self) -> list[Reading]:
        """Move the clock one period on, wait for that poll, return its readings."""
        before = self.driver.polls
        self.clock.advance(timedelta(seconds=POLL))
        wait_for(lambda: self.driver.polls == before + 1, what="the next poll")
        return self.drain()

    def drain(self) -> list[Reading]:
        got = []
        while not self.events.empty():
            event = self.events.get_nowait()
            assert isinstance(event, Reading)
            got.append(event)
        return got

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "driver did not stop"


@pytest.fixture
def harness() -> Iterator[Any]:
    started: list[Harness] = []

    def start(config: ModbusRtuDevice) -> Harness:
        started.append(Harness(config))
        return started[-1]

    yield start
    for h in started:
        h.close()


@pytest.fixture
def meter() -> Iterator[Sdm120Sim]:
    with Sdm120Sim() as sim:
        sim.set(**VALUES)
        yield sim


def by_channel(readings: list[Reading]) -> dict[str, Reading]:
    return {r.channel: r for r in readings if r.channel}


def test_reads_an_sdm120_configured_by_its_preset_over_a_pty(harness: Any, meter: Sdm120Sim) -> None:
    h = harness(meter_config(meter.port))
    first = by_channel(h.drain())
    assert {name: r.value for name, r in first.items()} == VALUES

    meter.set(active_power=1500.0, import_energy=12346.0)
    second = by_channel(h.poll())
    when = T0 + timedelta(seconds=POLL)
    power = second["active_power"]
    assert (power.site, power.device, power.quantity, power.value, power.unit) == (SITE, "ac-a204", Quantity.POWER, 1500.0, "W")
    assert power.event_time == when and not power.cumulative
    assert power.id == stable_event_id(SITE, "ac-a204", "active_power", when.isoformat())
    energy = second["import_energy"]
    assert (energy.quantity, energy.value, energy.unit, energy.cumulative) == (Quantity.ENERGY, 12346.0, "kWh", True)
    assert second["reactive_power"].quantity is Quantity.REACTIVE_POWER and second["reactive_power"].unit == "var"
    assert len({r.id for r in [*first.values(), *second.values()]}) == 20  # every poll, every register: its own id
    assert h.driver.counters.events == 20 and h.driver.counters.errors == {}
    assert h.driver.counters.snapshot()["last_seen"] == when.timestamp()


def test_holding_registers_of_every_type_and_word_order(harness: Any, meter: Sdm120Sim) -> None:
    meter.set_words("holding", 0x10, [0x8000, 0x4366])  # float32, low word first
    meter.set_words("holding", 0x20, [0xFFFE, 0xFFFF])  # int32 -2, low word first
    meter.set_words("holding", 0x30, [0x0001, 0x0002])  # uint32 65538, high word first
    meter.set_words("holding", 0x40, [0xFF38])  # int16 -200
    meter.set_words("holding", 0x41, [2345])  # uint16, tenths
    registers = [
        {"name": "f", "address": 0x10, "function": "holding", "word_order": "little", "quantity": "power", "unit": "W"},
        {"name": "i32", "address": 0x20, "function": "holding", "data_type": "int32", "word_order": "little", "quantity": "power", "unit": "W"},
        {"name": "u32", "address": 0x30, "function": "holding", "data_type": "uint32", "quantity": "energy", "unit": "Wh", "cumulative": True},
        {"name": "i16", "address": 0x40, "function": "holding", "data_type": "int16", "scale": 0.5, "quantity": "temperature", "unit": "degC"},
        {"name": "u16", "address": 0x41, "function": "holding", "data_type": "uint16", "scale": 0.1, "quantity": "voltage", "unit": "V"},
        {"name": "same_address_as_input", "address": 0x0C, "function": "holding", "quantity": "power", "unit": "W"},
    ]
    h = harness(meter_config(meter.port, registers=registers))
    values = {name: r.value for name, r in by_channel(h.drain()).items()}
    assert values == {"f": 230.5, "i32": -2, "u32": 65538, "i16": -100, "u16": pytest.approx(234.5), "same_address_as_input": 0.0}


def test_exception_answers_and_timeouts_are_counted_and_the_polls_around_them_delivered(
    harness: Any, meter: Sdm120Sim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.drivers.modbus_rtu")
    h = harness(meter_config(meter.port))
    assert len(h.drain()) == 10

    meter.refuse(2, 0x0046)  # frequency: illegal address
    refused = by_channel(h.poll())
    assert set(refused) == set(VALUES) - {"frequency"}  # the rest of that poll still delivered
    assert h.driver.counters.errors == {"exception_illegal_address": 1}

    meter.clear_faults()
    meter.silence(0x0048)  # import energy: no answer
    silent = by_channel(h.poll())
    assert list(silent) == ["voltage", "current", "active_power", "apparent_power", "reactive_power", "power_factor", "frequency"]
    assert h.driver.counters.errors == {"exception_illegal_address": 1, "timeout": 1}

    meter.clear_faults()
    meter.refuse(6, 0x0000)  # device busy
    busy = by_channel(h.poll())
    assert "voltage" not in busy and len(busy) == 9
    meter.clear_faults()
    after = by_channel(h.poll())
    assert {name: r.value for name, r in after.items()} == VALUES
    assert h.driver.counters.errors == {"exception_illegal_address": 1, "timeout": 1, "exception_device_busy": 1}
    assert h.driver.counters.events == 10 + 9 + 7 + 9 + 10
    assert h.thread.is_alive()

    logged = [r for r in caplog.records if getattr(r, "reason", None) == "timeout"]
    assert logged and logged[0].levelno == logging.WARNING
    assert (logged[0].port, logged[0].register, logged[0].address, logged[0].unit_id) == (meter.port, "import_energy", 0x48, 1)


def test_a_meter_that_stays_silent_is_logged_once_and_counted_every_poll(
    harness: Any, meter: Sdm120Sim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.drivers.modbus_rtu")
    h = harness(meter_config(meter.port))
    h.drain()
    meter.mute()
    for _ in range(3):
        assert h.poll() == []  # one timeout ends the poll: a dead meter does not hold the bus
    assert h.driver.counters.errors == {"timeout": 3}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    meter.clear_faults()
    assert len(h.poll()) == 10
    assert any("answering again" in r.getMessage() for r in caplog.records)


def test_a_lost_port_is_counted_and_reopened_when_the_adapter_returns(harness: Any, meter: Sdm120Sim, tmp_path: Path) -> None:
    alias = tmp_path / "ttyMETER"  # like /dev/serial/by-id/..., which follows the adapter
    alias.symlink_to(meter.port)
    h = harness(meter_config(str(alias)))
    assert len(h.drain()) == 10

    meter.unplug()  # the USB adapter is pulled while the port is open
    assert h.poll() == []
    assert h.driver.counters.errors == {"port_error": 1}
    assert h.poll() == []  # still gone: the open fails
    assert h.driver.counters.errors == {"port_error": 2}

    replugged = tmp_path / "next"
    meter.replug()
    replugged.symlink_to(meter.port)
    replugged.replace(alias)
    meter.set(active_power=99.5)
    back = by_channel(h.poll())
    assert len(back) == 10 and back["active_power"].value == 99.5
    assert h.thread.is_alive()


def test_reads_through_a_serial_device_server() -> None:
    with Sdm120Sim(link="tcp") as meter:
        meter.set(**VALUES)
        assert meter.port.startswith("socket://")
        driver = ModbusRtuDriver(meter_config(meter.port), SITE, lambda e: None, ManualClock(T0))
        try:
            readings = driver.poll(T0)
        finally:
            driver.bus.close()
    assert {name: r.value for name, r in by_channel(readings).items()} == VALUES


def test_a_device_servers_reply_is_read_whole_not_byte_by_byte() -> None:
    """pyserial's socket:// says only "something to read"; read byte by byte, pymodbus waited
    4 ms between bytes (43 ms a read at 9600 baud). The reply to reading 2 registers is 9
    bytes (address, function, byte count, 4 data bytes, CRC 2): one read of 9."""
    with Sdm120Sim(link="tcp") as meter:
        client = serial_client(meter_config(meter.port))
        assert client.connect()
        try:
            sizes: list[int] = []
            read = client.socket.read  # a spy on the real socket, which still does the reading
            client.socket.read = lambda n: (sizes.append(n), read(n))[1]
            reply = client.read_input_registers(0, count=2, device_id=meter.unit_id)
        finally:
            client.close()
    assert not reply.isError() and len(reply.registers) == 2
    assert sizes == [9]


def test_a_wrong_word_order_reads_a_different_number(meter: Sdm120Sim) -> None:
    """The map matters: the same meter read low word first is nonsense, not 812.5 W."""
    registers = [{"name": "p", "address": 0x0C, "word_order": "little", "quantity": "power", "unit": "W"}]
    driver = ModbusRtuDriver(meter_config(meter.port, registers=registers), SITE, lambda e: None, ManualClock(T0))
    try:
        [reading] = driver.poll(T0)
    finally:
        driver.bus.close()
    assert reading.value != VALUES["active_power"]


def test_stop_is_honoured_while_the_port_cannot_be_opened() -> None:
    h = Harness(meter_config("/dev/ttyWARDEN-NONE", poll_seconds=3600))
    assert h.driver.counters.errors == {"port_error": 1}
    h.close()
