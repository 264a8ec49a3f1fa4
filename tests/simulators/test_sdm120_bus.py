"""The SDM120 simulator on a shared RS-485 bus (issue 17): like a real meter it stays
silent to requests for other unit ids and to broadcasts (unit 0), instead of answering
them with exception 04. Frames are built here by hand (CRC-16/MODBUS written out). Silence
is what a bus master sees: nothing within its response timeout; the next request for the
meter's own unit id then gets its reply, and nothing before it."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
import serial

from simulators.sdm120 import Sdm120Sim


def crc16(frame: bytes) -> bytes:
    """CRC-16/MODBUS: polynomial 0xA001 (reflected), initial 0xFFFF, low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def read_input(unit: int, address: int = 0, count: int = 2) -> bytes:
    body = struct.pack(">BBHH", unit, 4, address, count)
    return body + crc16(body)


@pytest.fixture
def line() -> Iterator[tuple[Sdm120Sim, serial.SerialBase]]:
    with Sdm120Sim(unit_id=7) as meter:
        port = serial.serial_for_url(meter.port, baudrate=9600, timeout=2)
        try:
            yield meter, port
        finally:
            port.close()


def test_the_crc_matches_the_specifications_example() -> None:
    # Modbus over serial line V1.02, 6.2.2: 02 07 -> CRC 0x1241, sent as 41 12.
    assert crc16(bytes([0x02, 0x07])) == bytes([0x41, 0x12])


@pytest.mark.parametrize("other", [1, 8, 0], ids=["unit-1", "unit-8", "broadcast"])
def test_requests_for_other_units_and_broadcasts_get_no_answer(line: tuple[Sdm120Sim, serial.SerialBase], other: int) -> None:
    meter, port = line
    port.write(read_input(other))
    # A master waits its response timeout for an answer, as the agent does: none comes.
    port.timeout = 0.5
    assert port.read(1) == b""
    port.timeout = 2
    port.write(read_input(7))
    # The reply to unit 7: id, function 4, 4 data bytes (voltage 230.0 = 0x4366 0x0000), CRC.
    body = bytes([7, 4, 4, 0x43, 0x66, 0x00, 0x00])
    assert port.read(len(body) + 2) == body + crc16(body)
