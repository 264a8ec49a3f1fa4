"""The SDM120 simulator, checked with a plain pymodbus client and pymodbus' own float
conversion (not the agent's decoder), over a pty null modem and over TCP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from simulators.sdm120 import INPUT_REGISTERS, Sdm120Sim, float_words

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
FLOAT32 = ModbusSerialClient.DATATYPE.FLOAT32


def documented_addresses() -> dict[str, int]:
    rows = re.findall(r"^\| `(0x[0-9A-F]{4})` \| `(\w+)` \|", DOC.read_text(), re.MULTILINE)
    return {name: int(address, 16) for address, name in rows}


@pytest.fixture(params=["pty", "tcp"])
def meter(request: pytest.FixtureRequest) -> Iterator[Sdm120Sim]:
    with Sdm120Sim(link=request.param) as sim:
        yield sim


@pytest.fixture
def client(meter: Sdm120Sim) -> Iterator[ModbusSerialClient]:
    modbus = ModbusSerialClient(meter.port, baudrate=9600, timeout=1.5, retries=0)
    assert modbus.connect()
    yield modbus
    modbus.close()


def read_float(client: ModbusSerialClient, address: int) -> float:
    response = client.read_input_registers(address, count=2, device_id=1)
    assert not response.isError(), response
    return float(client.convert_from_registers(response.registers, FLOAT32, word_order="big"))


def test_the_register_table_is_the_documented_sdm120_map() -> None:
    assert INPUT_REGISTERS == documented_addresses()


def test_float_words_are_ieee754_high_word_first() -> None:
    assert float_words(230.5) == (0x4366, 0x8000)
    assert float_words(-1.0) == (0xBF80, 0x0000)


def test_answers_every_register_as_set(meter: Sdm120Sim, client: ModbusSerialClient) -> None:
    values = {name: float(n) * 11.5 + 0.25 for n, name in enumerate(INPUT_REGISTERS)}
    meter.set(**values)
    assert {name: read_float(client, address) for name, address in INPUT_REGISTERS.items()} == values
    meter.set(active_power=1.5)
    assert read_float(client, INPUT_REGISTERS["active_power"]) == 1.5
    assert read_float(client, INPUT_REGISTERS["voltage"]) == values["voltage"]
    assert meter.requests == len(values) + 2


def test_holding_registers_are_a_separate_table(meter: Sdm120Sim, client: ModbusSerialClient) -> None:
    meter.set(active_power=812.5)
    meter.set_words("holding", 0x0C, [1, 2])
    assert client.read_holding_registers(0x0C, count=2, device_id=1).registers == [1, 2]
    assert read_float(client, 0x0C) == 812.5


def test_refused_and_out_of_range_addresses_answer_with_exceptions(meter: Sdm120Sim, client: ModbusSerialClient) -> None:
    meter.refuse(6, INPUT_REGISTERS["frequency"] + 1)  # touches the second word of the value
    busy = client.read_input_registers(INPUT_REGISTERS["frequency"], count=2, device_id=1)
    assert busy.isError() and busy.exception_code == 6
    beyond = client.read_input_registers(0x01FF, count=2, device_id=1)
    assert beyond.isError() and beyond.exception_code == 2
    meter.clear_faults()
    assert read_float(client, INPUT_REGISTERS["frequency"]) == 50.0


def test_silenced_addresses_and_a_muted_meter_do_not_answer(meter: Sdm120Sim, client: ModbusSerialClient) -> None:
    meter.silence(INPUT_REGISTERS["import_energy"])
    with pytest.raises(ModbusIOException):
        client.read_input_registers(INPUT_REGISTERS["import_energy"], count=2, device_id=1)
    assert read_float(client, INPUT_REGISTERS["voltage"]) == 230.0  # others still answer
    meter.mute()
    with pytest.raises(ModbusIOException):
        client.read_input_registers(INPUT_REGISTERS["voltage"], count=2, device_id=1)
    meter.clear_faults()
    assert read_float(client, INPUT_REGISTERS["import_energy"]) == 0.0


def test_set_refuses_what_the_meter_does_not_have() -> None:
    with Sdm120Sim() as meter:
        with pytest.raises(KeyError):
            meter.set(temperature=21.0)
        with pytest.raises(ValueError):
            meter.set_words("input", 0, [0x10000])


def test_unplug_and_replug_move_the_alias_to_a_new_port(tmp_path: Path) -> None:
    alias = tmp_path / "ttyMETER"
    with Sdm120Sim(alias=alias) as meter:
        first = alias.resolve()
        client = ModbusSerialClient(str(alias), timeout=1.5, retries=0)
        assert read_float(client, 0) == 230.0
        meter.unplug()
        assert not first.exists()  # the pseudo-terminal is gone, as an unplugged adapter
        with pytest.raises(ConnectionException):
            client.read_input_registers(0, count=2, device_id=1)  # the open port fails
        meter.replug()
        assert alias.resolve().exists()  # (the kernel may hand out the same pts number again)
        assert read_float(client, 0) == 230.0  # the client reopens the alias
        client.close()


def test_a_source_supplies_the_values_of_every_request() -> None:
    """A meter whose values are a function of the simulated time is asked at each request."""
    readings = iter([{"active_power": 812.5, "import_energy": 10.25}, {"active_power": 2.0, "import_energy": 10.5}])
    with Sdm120Sim(source=lambda: next(readings)) as meter:
        modbus = ModbusSerialClient(meter.port, timeout=1.5, retries=0)
        try:
            assert read_float(modbus, INPUT_REGISTERS["active_power"]) == 812.5
            assert read_float(modbus, INPUT_REGISTERS["import_energy"]) == 10.5  # the second request's values
        finally:
            modbus.close()
