"""The patrol reader simulator: documented bytes, unchanged through a pty or TCP."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import serial

from simulators.patrol_reader import PatrolReaderSim, encode_sentence, utc_stamp

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "patrol-line.md"
DOC_VECTORS = [ast.literal_eval(m) for m in re.findall(r'^b"\$.*"$', DOC.read_text(), re.MULTILINE)]


def play_doc_scenario(sim: PatrolReaderSim) -> list[bytes]:
    """What the doc's test vectors describe, played on a reader."""
    return [
        sim.tap("04A1B2C3D4E5F6", "G007", datetime(2024, 3, 1, 22, 15, 7, tzinfo=timezone.utc)),
        sim.heartbeat(datetime(2024, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=1)))),
        sim.tap("CP-NORTH-03", None, datetime(2024, 3, 1, 22, 31, tzinfo=timezone.utc)),
    ]


@pytest.fixture(params=["pty", "tcp"])
def sim(request: pytest.FixtureRequest) -> Iterator[PatrolReaderSim]:
    with PatrolReaderSim("R01", first_seq=65534, link=request.param) as reader:
        yield reader


def test_the_doc_has_three_vectors() -> None:
    assert len(DOC_VECTORS) == 3


def test_lines_equal_the_documented_vectors_and_pass_the_link_unchanged(sim: PatrolReaderSim) -> None:
    with serial.serial_for_url(sim.port, timeout=5) as port:  # open first: opening flushes input
        written = play_doc_scenario(sim)
        received = port.read(sum(map(len, DOC_VECTORS)))
    assert written == DOC_VECTORS
    assert received == b"".join(DOC_VECTORS)


def test_raw_bytes_pass_unchanged(sim: PatrolReaderSim) -> None:
    every_byte = bytes(range(256)) + b"\r\n\r\x03\x04\x11\x13"  # CR, ^C, ^D, XON/XOFF included
    with serial.serial_for_url(sim.port, timeout=5) as port:
        assert sim.write_raw(every_byte) == every_byte
        assert port.read(len(every_byte)) == every_byte


def test_sequence_counts_every_sentence_and_wraps() -> None:
    with PatrolReaderSim("R7", first_seq=65535) as sim:
        at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        assert sim.tap("T1", "G1", at).startswith(b"$WTAP,R7,65535,T1,G1,20240102T030405Z*")
        assert sim.heartbeat(at).startswith(b"$WHBT,R7,0,")
        assert sim.tap("T1", "", at).startswith(b"$WTAP,R7,1,T1,,")
        assert sim.seq == 2


def test_encoder_checksum_and_layout() -> None:
    assert encode_sentence("WXYZ", "R01", "1") == b"$WXYZ,R01,1*6E\r\n"
    assert utc_stamp(datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "09990102T030405Z"


@pytest.mark.parametrize(
    ("tag", "guard", "at"),
    [
        ("T,1", None, datetime(2024, 1, 1, tzinfo=timezone.utc)),
        ("T1", "G*1", datetime(2024, 1, 1, tzinfo=timezone.utc)),
        ("T" * 33, None, datetime(2024, 1, 1, tzinfo=timezone.utc)),
        ("T1", None, datetime(2024, 1, 1)),  # naive: whose time?
    ],
)
def test_refuses_what_a_real_reader_could_not_send(tag: str, guard: str | None, at: datetime) -> None:
    with PatrolReaderSim() as sim:
        with pytest.raises(ValueError):
            sim.tap(tag, guard, at)
        assert sim.seq == 0


def test_tcp_link_drops_bytes_nobody_listens_to_and_serves_the_next_client() -> None:
    with PatrolReaderSim("R01", link="tcp") as sim:
        assert sim.port.startswith("socket://127.0.0.1:")
        with serial.serial_for_url(sim.port, timeout=5) as first:
            sim.write_raw(b"one\n")
            assert first.read(4) == b"one\n"
        sim.disconnect()
        with serial.serial_for_url(sim.port, timeout=5) as second:
            sim.write_raw(b"two\n")
            assert second.read(4) == b"two\n"


def test_a_pty_has_no_client_to_drop_and_close_is_idempotent() -> None:
    sim = PatrolReaderSim()
    with pytest.raises(ValueError):
        sim.disconnect()
    sim.close()
    sim.close()
