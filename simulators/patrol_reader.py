"""A simulated patrol checkpoint reader speaking the line protocol
(docs/protocols/patrol-line.md) on a pseudo-terminal, or through a TCP "serial device
server", so the real agent driver can be run against it unchanged.

It has its own small encoder on purpose: sharing the agent's codec would let a bug on
one side hide the same bug on the other. Tests hold both to the documented vectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from functools import reduce
from operator import xor
from types import TracebackType
from typing import Literal

from simulators.base import LINE, Emission, utc
from simulators.serial_link import Link, open_link

SEQ_MODULUS = 65536

_READER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


def encode_sentence(*fields: str) -> bytes:
    """`$` + comma-joined fields + `*` + XOR checksum in upper-case hex + CR LF."""
    body = ",".join(fields).encode("ascii")
    return b"$%s*%02X\r\n" % (body, reduce(xor, body, 0))


def utc_stamp(at: datetime) -> str:
    """`YYYYMMDDTHHMMSSZ`, always four year digits (strftime's %Y does not promise that)."""
    if at.tzinfo is None:
        raise ValueError("reader times must be timezone-aware")
    t = at.astimezone(timezone.utc)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


def _checked(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"{what} {value!r} does not fit the protocol ({pattern.pattern})")
    return value


class PatrolReaderSim:
    """One reader: `tap()` and `heartbeat()` write correct lines, `write_raw()` anything else.

    `port` is what the agent opens: a /dev/pts path, or `socket://127.0.0.1:PORT` with
    `link="tcp"`.
    """

    def __init__(self, reader: str = "R01", *, first_seq: int = 0, link: Literal["pty", "tcp"] = "pty") -> None:
        self.reader = _checked(_READER, reader, "reader")
        self.seq = first_seq % SEQ_MODULUS  # the number the next sentence carries
        self._link: Link = open_link(link)
        self._closed = False

    @property
    def port(self) -> str:
        return self._link.port

    def tap(self, tag: str, guard: str | None, at: datetime) -> bytes:
        """Write a tap sentence with the next sequence number; return its exact bytes."""
        tag_field = _checked(_TAG, tag, "tag")  # check everything before a number is used up
        guard_field = _checked(_TAG, guard, "guard") if guard else ""
        time_field = utc_stamp(at)
        return self.write_raw(
            encode_sentence("WTAP", self.reader, self._next_seq(), tag_field, guard_field, time_field)
        )

    def heartbeat(self, at: datetime) -> bytes:
        """Write a heartbeat sentence with the next sequence number; return its exact bytes."""
        time_field = utc_stamp(at)
        return self.write_raw(encode_sentence("WHBT", self.reader, self._next_seq(), time_field))

    def write_raw(self, data: bytes) -> bytes:
        """Put bytes on the line as they are: noise, bad checksums, cut-off frames, re-sends."""
        self._link.write(data)
        return data

    def disconnect(self) -> None:
        """Drop the TCP client, as a device server does when it restarts (TCP link only)."""
        self._link.disconnect()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._link.close()

    def __enter__(self) -> PatrolReaderSim:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _next_seq(self) -> str:
        seq, self.seq = self.seq, (self.seq + 1) % SEQ_MODULUS
        return str(seq)


def reader_emissions(
    device: str,
    reader: str,
    taps: Sequence[tuple[float, str, str | None]],
    *,
    start: float,
    end: float,
    heartbeat_seconds: float,
    skew: float = 0.0,
) -> Iterator[Emission]:
    """What one reader puts on its line over a night: a WTAP per tap (time, tag, guard),
    a WHBT every `heartbeat_seconds` so a quiet line is told from a dead one, one sequence
    counter for both. Times in the sentences are the reader's clock (`skew` off)."""
    _checked(_READER, reader, "reader")
    beats = [(start + n * heartbeat_seconds, "", None) for n in range(int((end - start) // heartbeat_seconds) + 1)]
    seq = 0
    for t, tag, guard in sorted([*taps, *beats], key=lambda item: (item[0], item[1] == "")):
        stamp = utc_stamp(utc(t + skew))
        if tag:
            guard_field = _checked(_TAG, guard, "guard") if guard else ""
            sentence = encode_sentence("WTAP", reader, str(seq), _checked(_TAG, tag, "tag"), guard_field, stamp)
        else:
            sentence = encode_sentence("WHBT", reader, str(seq), stamp)
        yield Emission(t, device, LINE, sentence, kind="data" if tag else "heartbeat", events=1)
        seq = (seq + 1) % SEQ_MODULUS
