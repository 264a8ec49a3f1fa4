"""The patrol line codec, framer and driver, down to a real pseudo-terminal."""

from __future__ import annotations

import ast
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import reduce
from operator import xor
from pathlib import Path
from typing import Any

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.patrol_line import (
    MAX_LINE_BYTES,
    READ_TIMEOUT_SECONDS,
    FrameError,
    HeartbeatFrame,
    LineFramer,
    PatrolLineDevice,
    PatrolLineDriver,
    Segment,
    TapFrame,
    decode_line,
)
from simulators.patrol_reader import PatrolReaderSim
from warden.clock import ManualClock
from warden.events import DeviceState, DeviceStatus, Event, PatrolTap, TapSource, stable_event_id

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "patrol-line.md"
T0 = datetime(2024, 3, 1, 22, 15, 7, tzinfo=timezone.utc)

VECTORS: list[tuple[bytes, TapFrame | HeartbeatFrame]] = [
    (
        b"$WTAP,R01,65534,04A1B2C3D4E5F6,G007,20240301T221507Z*23\r\n",
        TapFrame("R01", 65534, "04A1B2C3D4E5F6", "G007", datetime(2024, 3, 1, 22, 15, 7, tzinfo=timezone.utc)),
    ),
    (
        b"$WHBT,R01,65535,20240301T223000Z*4D\r\n",
        HeartbeatFrame("R01", 65535, datetime(2024, 3, 1, 22, 30, tzinfo=timezone.utc)),
    ),
    (
        b"$WTAP,R01,0,CP-NORTH-03,,20240301T223100Z*08\r\n",
        TapFrame("R01", 0, "CP-NORTH-03", None, datetime(2024, 3, 1, 22, 31, tzinfo=timezone.utc)),
    ),
]
LINES = [line for line, _ in VECTORS]
STREAM = b"".join(LINES)


def framed(body: str) -> bytes:
    """A line with a correct checksum around any body, to reach the field checks."""
    raw = body.encode("latin-1")
    return b"$%s*%02X\r\n" % (raw, reduce(xor, raw, 0))


def segments(framer: LineFramer, *chunks: bytes) -> list[Segment]:
    return [segment for chunk in chunks for segment in framer.feed(chunk)]


# --------------------------------------------------------------------------- codec


def test_the_doc_lists_exactly_these_vectors() -> None:
    documented = [ast.literal_eval(m) for m in re.findall(r'^b"\$.*"$', DOC.read_text(), re.MULTILINE)]
    assert documented == LINES


@pytest.mark.parametrize(("line", "frame"), VECTORS)
def test_decodes_the_documented_vectors(line: bytes, frame: TapFrame | HeartbeatFrame) -> None:
    assert decode_line(line) == frame
    assert decode_line(line.removesuffix(b"\r\n")) == frame  # the terminator is optional
    assert decode_line(line.replace(b"\r\n", b"\n")) == frame  # a bare LF is accepted


def test_accepts_a_lower_case_checksum() -> None:
    assert decode_line(b"$WHBT,R01,65535,20240301T223000Z*4d\r\n") == VECTORS[1][1]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$WTAP,R01,65534,04A1B2C3D4E5F6,G007,20240301T221507Z*24\r\n", "bad_checksum"),
        (b"$WTAP,R01,65534,04A1B2C3D4E5F6,G007,20240301T221507Z*ZZ\r\n", "bad_checksum"),
        (b"$WTAP,R01,65534,04A1B2C3D4E5F6,G007,20240301T221507Z*233\r\n", "bad_checksum"),
        (b"$WTAP,R01,65535,04A1B2C3D4E5F6,G007,20240301T221507Z*23\r\n", "bad_checksum"),
        (b"$WTAP,R01,65534,04A1B2C3D4E5F6,G0\r\n", "truncated"),
        (b"$WTAP,R01,65534,04A1B2C3D4E5F6,G007,20240301T221507Z*2\r\n", "truncated"),
        (b"$\r\n", "truncated"),
        (b"$WXYZ,R01,1*6E\r\n", "unknown_sentence"),
        (framed("wtap,R01,1,T1,,20240301T221507Z"), "unknown_sentence"),
        (b"$WTAP,R01,1,T\xe9G,,20240301T221507Z*00\r\n", "not_ascii"),
        (b"$WTAP,R01,1,T\x00G,,20240301T221507Z*00\r\n", "not_ascii"),
        (b"$WTAP,R01,1,T1\r,,20240301T221507Z*00\r\n", "not_ascii"),
        (b"$WTAP," + b"A" * MAX_LINE_BYTES + b"*00\r\n", "too_long"),
        (b"hello\r\n", "garbage"),
        (b"", "garbage"),
        (framed("WTAP,R01,1,T1,20240301T221507Z"), "bad_field"),  # guard field missing
        (framed("WTAP,R01,1,T1,,20240301T221507Z,"), "bad_field"),  # one field too many
        (framed("WHBT,R01,20240301T221507Z"), "bad_field"),
        (framed("WTAP,,1,T1,,20240301T221507Z"), "bad_field"),  # empty reader
        (framed("WTAP,R01,1,,G1,20240301T221507Z"), "bad_field"),  # empty tag
        (framed("WTAP,R0 1,1,T1,,20240301T221507Z"), "bad_field"),
        (framed("WTAP,READER-NAME-TOO-LONG,1,T1,,20240301T221507Z"), "bad_field"),
        (framed("WTAP,R01,1,-T1,,20240301T221507Z"), "bad_field"),
        (framed("WTAP,R01,1,T1,G 7,20240301T221507Z"), "bad_field"),
        (framed("WTAP,R01,65536,T1,,20240301T221507Z"), "bad_field"),  # past the wrap
        (framed("WTAP,R01,-1,T1,,20240301T221507Z"), "bad_field"),
        (framed("WTAP,R01,1a,T1,,20240301T221507Z"), "bad_field"),
        (framed("WTAP,R01,1,T1,,20240230T221507Z"), "bad_field"),  # 30 February
        (framed("WTAP,R01,1,T1,,20240301T221560Z"), "bad_field"),  # second 60
        (framed("WTAP,R01,1,T1,,20240301T221507"), "bad_field"),  # not UTC
        (framed("WTAP,R01,1,T1,,2024-03-01T22:15:07Z"), "bad_field"),
        (framed("WHBT,R01,1,20240301T221507Z,"), "bad_field"),
    ],
)
def test_rejects_each_kind_of_bad_line_with_its_reason(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode_line(line)
    assert caught.value.reason == reason


@given(st.binary(max_size=200))
def test_decoder_raises_nothing_but_frame_error(line: bytes) -> None:
    try:
        decode_line(line)
    except FrameError:
        pass


# --------------------------------------------------------------------------- framer


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_framer_reassembles_lines_split_at_any_byte(cut: int) -> None:
    assert segments(LineFramer(), STREAM[:cut], STREAM[cut:]) == [Segment(line) for line in LINES]


def test_framer_reassembles_lines_fed_one_byte_at_a_time() -> None:
    bytewise = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert segments(LineFramer(), *bytewise) == [Segment(line) for line in LINES]


def test_framer_reports_garbage_runs_between_lines() -> None:
    got = segments(LineFramer(), b"\x00\xffnoise", LINES[0] + b"junk\r\n" + LINES[1] + b"\r\n\r\n" + LINES[2])
    assert got == [
        Segment(b"\x00\xffnoise", "garbage"),
        Segment(LINES[0]),
        Segment(b"junk\r\n", "garbage"),
        Segment(LINES[1]),
        Segment(LINES[2]),  # blank lines between sentences are not garbage
    ]


def test_a_new_dollar_cuts_a_truncated_frame_without_losing_the_next() -> None:
    got = segments(LineFramer(), b"$WTAP,R01,1,CP" + LINES[0])
    assert got == [Segment(b"$WTAP,R01,1,CP", "truncated"), Segment(LINES[0])]


def test_framer_drops_an_over_long_line_and_resynchronises() -> None:
    framer = LineFramer()
    flood = [b"$"] + [b"A"] * 1000 + [b"\r\n", LINES[0], b"$" + b"B" * 300 + LINES[1]]
    got = segments(framer, *flood)
    assert got == [
        Segment(b"$" + b"A" * (MAX_LINE_BYTES - 1), "too_long"),
        Segment(LINES[0]),
        Segment(b"$" + b"B" * (MAX_LINE_BYTES - 1), "too_long"),
        Segment(LINES[1]),
    ]


def test_a_line_of_exactly_the_maximum_length_passes_and_one_more_byte_does_not() -> None:
    longest = b"$" + b"A" * (MAX_LINE_BYTES - 3) + b"\r\n"
    assert segments(LineFramer(), longest) == [Segment(longest)]
    assert [s.reason for s in segments(LineFramer(), b"$A" + longest[1:])] == ["too_long"]


def test_endless_noise_is_reported_in_bounded_runs() -> None:
    framer = LineFramer()
    got = segments(framer, *([b"\xaa" * 50] * 10))
    assert [len(s.data) for s in got] == [MAX_LINE_BYTES, MAX_LINE_BYTES, MAX_LINE_BYTES]
    assert {s.reason for s in got} == {"garbage"}
    assert framer.buffered == 500 - 3 * MAX_LINE_BYTES


def test_flush_reports_what_the_lost_port_left_behind() -> None:
    framer = LineFramer()
    assert segments(framer, LINES[0][:20]) == []
    assert list(framer.flush()) == [Segment(LINES[0][:20], "truncated")]
    assert segments(framer, b"noise") == []
    assert list(framer.flush()) == [Segment(b"noise", "garbage")]
    assert list(framer.flush()) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_fuzzed_bytes_never_raise_anything_but_frame_error_and_stay_bounded(chunks: list[bytes]) -> None:
    framer = LineFramer()
    for chunk in chunks:
        for segment in framer.feed(chunk):
            assert 0 < len(segment.data) <= MAX_LINE_BYTES
            if segment.reason is None:
                try:
                    decode_line(segment.data)
                except FrameError:
                    pass
        assert framer.buffered <= MAX_LINE_BYTES + len(chunk)
    list(framer.flush())


_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}"
taps = st.builds(
    TapFrame,
    reader=st.from_regex(_ID, fullmatch=True),
    seq=st.integers(0, 65535),
    tag=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True),
    guard=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True),
    time=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
        lambda t: t.replace(microsecond=0, tzinfo=timezone.utc)
    ),
)
noise = st.binary(max_size=300).map(lambda b: b.replace(b"$", b""))


def encode_tap(frame: TapFrame) -> bytes:
    return framed(
        f"WTAP,{frame.reader},{frame.seq},{frame.tag},{frame.guard or ''},{frame.time:%Y%m%dT%H%M%SZ}"
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(noise, taps), max_size=8), st.data())
def test_good_lines_survive_noise_and_any_chunking(items: list[tuple[bytes, TapFrame]], data: Any) -> None:
    stream = b"".join(junk + encode_tap(frame) for junk, frame in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    decoded = [decode_line(s.data) for s in segments(LineFramer(), *chunks) if s.reason is None]
    assert decoded == [frame for _, frame in items]


# --------------------------------------------------------------------------- driver

SITE = "hq"
RECEIVED = datetime(2024, 3, 1, 22, 40, tzinfo=timezone.utc)


class Harness:
    """A driver running in a thread, its emitted events on a queue, its port opens on another."""

    def __init__(self, port: str, factory: Callable[..., Any] = serial.serial_for_url, reconnect: float = 0.05):
        self.config = PatrolLineDevice(driver="patrol_line", id="gate-line", port=port, reconnect_seconds=reconnect)
        self.events: queue.Queue[Event] = queue.Queue()
        self.opens: queue.Queue[dict[str, Any]] = queue.Queue()
        self._factory = factory
        self.driver = PatrolLineDriver(self.config, SITE, self.events.put, ManualClock(RECEIVED), self._open)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.driver.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def _open(self, url: str, **kwargs: Any) -> Any:
        port = self._factory(url, **kwargs)
        self.opens.put(kwargs)
        return port

    def wait_open(self) -> dict[str, Any]:
        return self.opens.get(timeout=5)

    def next_event(self) -> Event:
        return self.events.get(timeout=5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "driver did not stop"


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def start(port: str, **kwargs: Any) -> Harness:
        started.append(Harness(port, **kwargs))
        return started[-1]

    yield start
    for h in started:
        h.close()


def tap_id(frame: TapFrame) -> str:
    return stable_event_id(SITE, "gate-line", "tap", frame.reader, frame.seq, frame.time.isoformat())


def assert_tap(event: Event, frame: TapFrame) -> None:
    assert isinstance(event, PatrolTap)
    assert event == PatrolTap(
        id=tap_id(frame),
        site=SITE,
        device="gate-line",
        reader=frame.reader,
        tag=frame.tag,
        guard=frame.guard,
        event_time=frame.time,
        receive_time=RECEIVED,
        source=TapSource.ONLINE,
    )


def test_end_to_end_through_a_real_pseudo_terminal(harness: Callable[..., Harness], caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="agent.drivers.patrol_line")
    with PatrolReaderSim("R01", first_seq=65534) as sim:
        h = harness(sim.port)
        assert h.wait_open() == {"baudrate": 9600, "timeout": pytest.approx(READ_TIMEOUT_SECONDS)}

        sim.write_raw(b"\x00\xff line noise \x07")
        first = sim.tap("04A1B2C3D4E5F6", "G007", T0)
        bad = sim.write_raw(first.replace(b"*23", b"*24"))
        sim.heartbeat(datetime(2024, 3, 1, 22, 30, tzinfo=timezone.utc))
        sim.write_raw(b"$WTAP,R01,9,CP-NOR")  # cut off by the next `$`
        last = sim.tap("CP-NORTH-03", None, datetime(2024, 3, 1, 22, 31, tzinfo=timezone.utc))
        assert [first, last] == [LINES[0], LINES[2]]

        assert_tap(h.next_event(), VECTORS[0][1])  # type: ignore[arg-type]
        status = h.next_event()
        assert isinstance(status, DeviceStatus) and status.state is DeviceState.HEARTBEAT
        assert status.event_time == VECTORS[1][1].time and status.device == "gate-line"
        assert_tap(h.next_event(), VECTORS[2][1])  # type: ignore[arg-type]

        resent = sim.write_raw(first)  # the reader sends a stored line again
        assert h.next_event().id == tap_id(VECTORS[0][1])  # type: ignore[arg-type]
        assert resent == first

        assert h.driver.counters.errors == {"garbage": 1, "bad_checksum": 1, "truncated": 1}
        assert h.driver.counters.events == 4
        assert h.thread.is_alive()

    logged = {r.reason: r for r in caplog.records if hasattr(r, "reason")}
    assert logged["bad_checksum"].port == sim.port
    assert logged["bad_checksum"].bytes == repr(bad)
    assert logged["garbage"].bytes == repr(b"\x00\xff line noise \x07")


def test_a_bad_frame_log_holds_at_most_80_bytes(harness: Callable[..., Harness], caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="agent.drivers.patrol_line")
    with PatrolReaderSim() as sim:
        h = harness(sim.port)
        h.wait_open()
        sim.write_raw(b"$" + b"X" * 300 + b"\r\n")
        sim.tap("T1", None, T0)
        h.next_event()
    (record,) = [r for r in caplog.records if getattr(r, "reason", None) == "too_long"]
    assert record.bytes == repr(b"$" + b"X" * 79)


def test_end_to_end_through_a_serial_device_server_and_its_restart(harness: Callable[..., Harness]) -> None:
    with PatrolReaderSim("R01", first_seq=65534, link="tcp") as sim:
        h = harness(sim.port)
        h.wait_open()
        sim.tap("04A1B2C3D4E5F6", "G007", T0)
        assert_tap(h.next_event(), VECTORS[0][1])  # type: ignore[arg-type]

        sim.disconnect()  # the device server restarts
        h.wait_open()  # ... and the driver is back
        assert h.driver.counters.errors["port_error"] == 1
        sim.heartbeat(datetime(2024, 3, 1, 22, 30, tzinfo=timezone.utc))
        sim.tap("CP-NORTH-03", None, datetime(2024, 3, 1, 22, 31, tzinfo=timezone.utc))
        assert isinstance(h.next_event(), DeviceStatus)
        assert_tap(h.next_event(), VECTORS[2][1])  # type: ignore[arg-type]
        assert h.thread.is_alive()


def test_a_vanished_pty_is_reopened_when_the_device_comes_back(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    link = tmp_path / "ttyPATROL"  # like /dev/serial/by-id/..., which follows the adapter
    first = PatrolReaderSim("R01", first_seq=65534)
    link.symlink_to(first.port)
    h = harness(str(link))
    h.wait_open()
    first.tap("04A1B2C3D4E5F6", "G007", T0)
    assert_tap(h.next_event(), VECTORS[0][1])  # type: ignore[arg-type]

    first.close()  # the USB adapter is pulled
    with PatrolReaderSim("R01", first_seq=0) as second:  # ... and plugged in again
        (tmp_path / "next").symlink_to(second.port)
        os.replace(tmp_path / "next", link)
        h.wait_open()
        assert h.driver.counters.errors["port_error"] >= 1
        second.tap("CP-NORTH-03", None, datetime(2024, 3, 1, 22, 31, tzinfo=timezone.utc))
        assert_tap(h.next_event(), VECTORS[2][1])  # type: ignore[arg-type]
        assert h.thread.is_alive()


def test_a_port_that_cannot_be_opened_is_retried(harness: Callable[..., Harness]) -> None:
    attempts = iter([serial.SerialException("no such port"), FileNotFoundError("gone"), None])

    def flaky(url: str, **kwargs: Any) -> Any:
        failure = next(attempts)
        if failure is not None:
            raise failure
        port = serial.serial_for_url("loop://", **kwargs)
        port.write(LINES[0])
        return port

    h = harness("/dev/ttyPATROL", factory=flaky)
    assert_tap(h.next_event(), VECTORS[0][1])  # type: ignore[arg-type]
    assert h.driver.counters.errors == {"port_error": 2}


def test_stop_is_honoured_while_waiting_to_reconnect(harness: Callable[..., Harness]) -> None:
    tried = threading.Event()

    def absent(url: str, **kwargs: Any) -> Any:
        tried.set()
        raise serial.SerialException("no such port")

    h = harness("/dev/ttyPATROL", factory=absent, reconnect=3600)
    assert tried.wait(5)
    h.close()  # returns well before the hour is up, or the join times out and fails
    assert h.driver.counters.errors == {"port_error": 1}


def test_on_stop_the_driver_first_reads_what_the_port_already_received() -> None:
    """Bytes in the port's buffer were sent by the reader and will not be sent again."""
    stop = threading.Event()

    class ArrivesAsStopIsSet:
        buffer = LINES[0] + LINES[2][:20]

        @property
        def in_waiting(self) -> int:
            return len(self.buffer) if stop.is_set() else 0

        def read(self, size: int) -> bytes:
            if not stop.is_set():
                stop.set()  # the agent is told to stop while it waits for bytes
                return b""
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            return data

        def close(self) -> None:
            pass

    config = PatrolLineDevice(driver="patrol_line", id="gate-line", port="/dev/ttyPATROL")
    events: list[Event] = []
    driver = PatrolLineDriver(config, SITE, events.append, ManualClock(RECEIVED), lambda url, **kw: ArrivesAsStopIsSet())
    driver.run(stop)
    assert len(events) == 1
    assert_tap(events[0], VECTORS[0][1])  # type: ignore[arg-type]
    assert driver.counters.errors == {"truncated": 1}  # the sentence still arriving is counted, not guessed
