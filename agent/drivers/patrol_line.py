"""Patrol checkpoint readers on a serial line (docs/protocols/patrol-line.md).

Three layers, each testable alone: `decode_line` turns one line into a frame,
`LineFramer` cuts a byte stream (split anywhere, with noise) into lines, and
`PatrolLineDriver` owns the port, counts and logs what is wrong and emits events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import reduce
from operator import xor
from typing import Callable, Iterator, Literal

import serial
from pydantic import Field

from agent.drivers.base import Driver, DriverCounters, DriverHost, Emit
from agent.drivers.registry import DriverSpec
from warden.clock import Clock
from warden.config import StrictModel
from warden.events import DeviceState, DeviceStatus, Event, Identifier, PatrolTap, TapSource, stable_event_id

log = logging.getLogger(__name__)

#: Longest line a receiver accepts, from `$` to LF; longer ones are dropped unread.
MAX_LINE_BYTES = 128
#: Largest sequence number before the reader's counter wraps to 0.
MAX_SEQ = 65535
#: How much of a bad line goes into the log.
LOG_SAMPLE_BYTES = 80
#: A noisy line logs the first drop of each reason, then at most one summary this often.
NOISE_SUMMARY_SECONDS = 60.0



#: Port read timeout: bounds how long `stop` can go unnoticed.
READ_TIMEOUT_SECONDS = 0.5  # 0.1 s costs 10 wake-ups a second per idle port

SerialFactory = Callable[..., serial.SerialBase]


# --------------------------------------------------------------------------- codec


# --------------------------------------------------------------------------- config


class SerialLineDevice(StrictModel):
    """A device read as lines from a serial port; the framing is the patrol line protocol's."""

    id: Identifier
    port: str = Field(description="Device path or pyserial URL: /dev/ttyUSB0, socket://host:4001, rfc2217://...")
    baudrate: int = Field(default=9600, gt=0)
    reconnect_seconds: float = Field(default=2.0, gt=0)


class PatrolLineDevice(SerialLineDevice):
    """A patrol checkpoint reader speaking the line protocol (docs/protocols/patrol-line.md)."""

    driver: Literal["patrol_line"]


class FrameError(ValueError):
    """A line that is not a valid sentence; `reason` is a short machine-readable word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TapFrame:
    reader: str
    seq: int
    tag: str
    guard: str | None  # None: tapped without a guard badge
    time: datetime  # UTC, from the reader's clock


@dataclass(frozen=True)
class HeartbeatFrame:
    reader: str
    seq: int
    time: datetime


_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")
_READER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_SEQ = re.compile(r"[0-9]{1,5}")
_TIME = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")


def decode_line(line: bytes) -> TapFrame | HeartbeatFrame:
    """Decode one sentence, with or without its CR LF; raise FrameError naming the first fault."""
    if len(line) > MAX_LINE_BYTES:
        raise FrameError("too_long")
    text = line.removesuffix(b"\n").removesuffix(b"\r")
    if not text.startswith(b"$"):
        raise FrameError("garbage")
    if _NOT_PRINTABLE.search(text):
        raise FrameError("not_ascii")
    body, star, checksum = text[1:].partition(b"*")
    if not star or len(checksum) < 2:
        raise FrameError("truncated")
    if not _HEX2.fullmatch(checksum) or int(checksum, 16) != reduce(xor, body, 0):
        raise FrameError("bad_checksum")
    sentence, *fields = body.decode("ascii").split(",")
    if sentence == "WTAP":
        return _tap(fields)
    if sentence == "WHBT":
        return _heartbeat(fields)
    raise FrameError("unknown_sentence")


def _tap(fields: list[str]) -> TapFrame:
    if len(fields) != 5:
        raise FrameError("bad_field")
    reader, seq, tag, guard, time = fields
    return TapFrame(
        reader=_match(_READER, reader),
        seq=_seq(seq),
        tag=_match(_TAG, tag),
        guard=_match(_TAG, guard) if guard else None,
        time=_time(time),
    )


def _heartbeat(fields: list[str]) -> HeartbeatFrame:
    if len(fields) != 3:
        raise FrameError("bad_field")
    reader, seq, time = fields
    return HeartbeatFrame(reader=_match(_READER, reader), seq=_seq(seq), time=_time(time))


def _match(pattern: re.Pattern[str], value: str) -> str:
    if not pattern.fullmatch(value):
        raise FrameError("bad_field")
    return value


def _seq(value: str) -> int:
    if not _SEQ.fullmatch(value) or int(value) > MAX_SEQ:
        raise FrameError("bad_field")
    return int(value)


def _time(value: str) -> datetime:
    match = _TIME.fullmatch(value)
    if not match:
        raise FrameError("bad_field")
    try:
        return datetime(*(int(part) for part in match.groups()), tzinfo=timezone.utc)
    except ValueError:  # month 13, 30 February, second 60...
        raise FrameError("bad_field") from None


# --------------------------------------------------------------------------- framing


@dataclass(frozen=True)
class Segment:
    """A piece of the byte stream: a complete line to decode, or bytes already known bad."""

    data: bytes
    reason: str | None = None  # None: a line ending in LF; else garbage, truncated, too_long


class _State(Enum):
    HUNT = "hunt"  # outside a sentence: bytes are garbage until a `$`
    LINE = "line"  # inside a sentence: collecting up to LF
    SKIP = "skip"  # inside an over-long line: discarding up to LF or `$`


_DELIMITERS = re.compile(rb"([$\n])")


class LineFramer:
    """Cuts serial bytes into segments; holds at most about one line between calls.

    A `$` always starts a new sentence (it cannot occur inside one), so a frame cut short
    is reported as truncated without swallowing the good frame that follows it.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._state = _State.HUNT

    @property
    def buffered(self) -> int:
        """Bytes held for a segment that is not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> Iterator[Segment]:
        """Take bytes as read, split anywhere; yield each segment as soon as it is complete."""
        for part in _DELIMITERS.split(data):
            if part == b"$":
                yield from self._start_line()
            elif part == b"\n" and self._state is not _State.HUNT:
                yield from self._end_line()
            elif part:
                yield from self._take(part)

    def flush(self) -> Iterator[Segment]:
        """The stream ended (port lost): a pending sentence is truncated, pending noise garbage."""
        if self._state is _State.LINE:
            yield Segment(bytes(self._buf), "truncated")
        elif self._state is _State.HUNT:
            yield from self._garbage(bytes(self._buf))
        self._buf.clear()
        self._state = _State.HUNT

    def _start_line(self) -> Iterator[Segment]:
        if self._state is _State.LINE:
            yield Segment(bytes(self._buf), "truncated")
        elif self._state is _State.HUNT:
            yield from self._garbage(bytes(self._buf))
        self._buf[:] = b"$"
        self._state = _State.LINE

    def _end_line(self) -> Iterator[Segment]:
        if self._state is _State.LINE:
            self._buf += b"\n"
            yield Segment(bytes(self._buf)) if len(self._buf) <= self.max_line else self._too_long()
        self._buf.clear()
        self._state = _State.HUNT

    def _take(self, part: bytes) -> Iterator[Segment]:
        if self._state is _State.SKIP:
            return
        self._buf += part
        if self._state is _State.LINE and len(self._buf) > self.max_line:
            yield self._too_long()
            self._buf.clear()
            self._state = _State.SKIP
        while self._state is _State.HUNT and len(self._buf) >= self.max_line:
            yield from self._garbage(bytes(self._buf[: self.max_line]))
            del self._buf[: self.max_line]

    def _too_long(self) -> Segment:
        return Segment(bytes(self._buf[: self.max_line]), "too_long")

    def _garbage(self, run: bytes) -> Iterator[Segment]:
        if run.strip(b"\r\n"):  # blank lines between sentences are harmless
            yield Segment(run, "garbage")


# --------------------------------------------------------------------------- noise


class NoiseLog:
    """Logs a line's dropped input without flooding the log: the first drop of each reason
    at once (with a sample), then the drops since as one summary per `interval` seconds,
    written with the next drop after the interval, or by `flush` (the port closing). The
    driver's counters stay exact; this only bounds the log (11 MB of noise gave 41 538
    WARNING lines before)."""

    def __init__(self, label: str, port: str, device: str, interval: float = NOISE_SUMMARY_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._where = (label, port, device)
        self._interval = interval
        self._monotonic = monotonic
        self._first_logged: set[str] = set()
        self._since_summary: Counter[str] = Counter()
        self._last_summary = monotonic()

    def dropped(self, reason: str, data: bytes) -> None:
        label, port, device = self._where
        if reason not in self._first_logged:
            self._first_logged.add(reason)
            sample = repr(data[:LOG_SAMPLE_BYTES])
            log.warning("%s %s: dropped %s: %s (further drops are summarised every %gs)", label, port, reason, sample,
                        self._interval, extra={"device": device, "port": port, "reason": reason, "bytes": sample})
        else:
            self._since_summary[reason] += 1
        if self._since_summary and self._monotonic() - self._last_summary >= self._interval:
            self.flush()

    def flush(self) -> None:
        """Log the drops not yet logged, if any, as one summary."""
        now = self._monotonic()
        if self._since_summary:
            label, port, device = self._where
            dropped = dict(sorted(self._since_summary.items()))
            log.warning("%s %s: dropped %d more in %.0fs: %s", label, port, sum(dropped.values()), now - self._last_summary,
                        ", ".join(f"{reason} {n}" for reason, n in dropped.items()),
                        extra={"device": device, "port": port, "reason": "summary", "dropped": dropped})
            self._since_summary.clear()
        self._last_summary = now


# --------------------------------------------------------------------------- driver


class PatrolLineDriver:
    """Reads one serial line of patrol readers and emits a PatrolTap per tap.

    Bad input is counted and logged, never raised; a lost port is reopened every
    `reconnect_seconds` until `stop` is set. Subclasses for other sentences of the same
    framing override `decode` and `_event` (agent/drivers/door_line.py).
    """

    label = "patrol line"  # how logs name the line

    def __init__(
        self,
        config: SerialLineDevice,
        site: str,
        emit: Emit,
        clock: Clock,
        serial_factory: SerialFactory = serial.serial_for_url,
    ) -> None:
        self.config = config
        self.site = site
        self.device_id = config.id
        self.counters = DriverCounters()
        self._emit = emit
        self._clock = clock
        self._serial_factory = serial_factory
        self.port_open = threading.Event()  # health, and lets callers wait until bytes will be read
        self._feed_framer = LineFramer()
        self.noise = NoiseLog(self.label, config.port, config.id)

    def run(self, stop: threading.Event) -> None:
        """Own the port on this thread: blocking reads, reopened after a failure.

        The agent reads device paths and socket:// lines on one shared thread instead
        (agent/drivers/serial_hub.py); this is for the other URLs, and for use alone."""
        while not stop.is_set():
            port = self.open_port(READ_TIMEOUT_SECONDS)
            if port is not None:
                try:
                    self._pump(port, stop)
                finally:
                    self.close_port(port)
            if not stop.is_set():
                stop.wait(self.config.reconnect_seconds)

    def feed(self, data: bytes) -> None:
        """Handle bytes as if read from the port (a replay of recorded line output)."""
        self._handle_all(self._feed_framer.feed(data))

    def decode(self, line: bytes) -> object:
        """One line to a frame, or FrameError; subclasses decode their own sentences."""
        return decode_line(line)

    def open_port(self, timeout: float) -> serial.SerialBase | None:
        """The open port (reads wait at most `timeout`; 0: never), or None, counted and logged."""
        try:
            port = self._serial_factory(self.config.port, baudrate=self.config.baudrate, timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as exc:  # ValueError: bad URL
            self.port_error("open", exc)
            return None
        log.info(
            "%s %s: port open",
            self.label,
            self.config.port,
            extra={"device": self.device_id, "port": self.config.port},
        )
        self.port_open.set()
        return port

    def close_port(self, port: serial.SerialBase) -> None:
        self.port_open.clear()
        self.noise.flush()
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()

    def read_from(self, port: serial.SerialBase, framer: LineFramer, size: int | None = None) -> bool:
        """Read up to `size` bytes (default: what is waiting, at least one) and handle what
        they complete; False if the port failed (counted and logged, and what the framer
        held is reported)."""
        try:
            data = read_ready(port, size) if size else port.read(port.in_waiting or 1)
        except (serial.SerialException, OSError) as exc:
            self.port_error("read", exc)
            self._handle_all(framer.flush())
            return False
        self._handle_all(framer.feed(data))
        return True

    def drain(self, port: serial.SerialBase, framer: LineFramer) -> None:
        """On shutdown, take what the port has already received: the reader sent it and
        will not send it again. A sentence still arriving is left (and counted) truncated."""
        try:
            while waiting := port.in_waiting:
                self._handle_all(framer.feed(read_ready(port, waiting)))
        except (serial.SerialException, OSError):
            return
        self._handle_all(framer.flush())

    def _pump(self, port: serial.SerialBase, stop: threading.Event) -> None:
        framer = LineFramer()
        while not stop.is_set():
            if not self.read_from(port, framer):
                return
        self.drain(port, framer)

    def _handle_all(self, segments: Iterator[Segment]) -> None:
        for segment in segments:
            self._handle(segment)

    def _handle(self, segment: Segment) -> None:
        if segment.reason is not None:
            self._reject(segment.reason, segment.data)
            return
        try:
            frame = self.decode(segment.data)
        except FrameError as exc:
            self._reject(exc.reason, segment.data)
            return
        now = self._clock.now()
        event = self._event(frame, now)
        self.counters.count_event(now)
        self._emit(event)

    def _event(self, frame: object, now: datetime) -> Event:
        if isinstance(frame, TapFrame):
            return self._tap_event(frame, now)
        assert isinstance(frame, HeartbeatFrame)
        return self._status_event(frame, now)

    def _tap_event(self, frame: TapFrame, now: datetime) -> Event:
        return PatrolTap(
            id=stable_event_id(self.site, self.device_id, "tap", frame.reader, frame.seq, frame.time.isoformat()),
            site=self.site,
            device=self.device_id,
            event_time=frame.time,
            receive_time=now,
            reader=frame.reader,
            tag=frame.tag,
            guard=frame.guard,
            source=TapSource.ONLINE,
        )

    def _status_event(self, frame: HeartbeatFrame, now: datetime) -> Event:
        return DeviceStatus(
            id=stable_event_id(
                self.site, self.device_id, "heartbeat", frame.reader, frame.seq, frame.time.isoformat()
            ),
            site=self.site,
            device=self.device_id,
            event_time=frame.time,
            receive_time=now,
            state=DeviceState.HEARTBEAT,
            counters=self.counters.snapshot(),
        )

    def _reject(self, reason: str, data: bytes) -> None:
        self.counters.count_error(reason)
        self.noise.dropped(reason, data)

    def port_error(self, action: str, exc: BaseException) -> None:
        """Count and log a port that failed to `action` (open, read...); it will be reopened."""
        self.counters.count_error("port_error")
        log.warning(
            "%s %s: cannot %s port (%s); retrying in %gs",
            self.label,
            self.config.port,
            action,
            exc,
            self.config.reconnect_seconds,
            extra={"device": self.device_id, "port": self.config.port, "reason": "port_error", "error": str(exc)},
        )


def read_ready(port: serial.SerialBase, size: int) -> bytes:
    """Up to `size` bytes of a port a selector found readable. A POSIX port (non-blocking,
    as pyserial opens it) is read with one os.read: pyserial's read() select()s on the
    port and its own pipes, which fails once descriptors pass 1023, i.e. past a few
    hundred ports. Other ports (socket://) are read through pyserial."""
    fd = getattr(port, "fd", None)
    if not isinstance(fd, int) or fd < 0:
        return port.read(size)
    try:
        data = os.read(fd, size)
    except BlockingIOError:
        return b""
    if not data:  # readable with nothing to read: the other end is gone
        raise serial.SerialException("device reports readiness to read but returned no data (device disconnected?)")
    return data


def _build(device: PatrolLineDevice, host: DriverHost) -> Driver:
    return host.serial_line(lambda emit: PatrolLineDriver(device, host.site, emit, host.clock), device.port)


DRIVER = DriverSpec(model=PatrolLineDevice, build=_build)
