"""A simulated patrol checkpoint reader speaking the line protocol
(docs/protocols/patrol-line.md) on a pseudo-terminal, or through a TCP "serial device
server", so the real agent driver can be run against it unchanged.

It has its own small encoder on purpose: sharing the agent's codec would let a bug on
one side hide the same bug on the other. Tests hold both to the documented vectors.
"""

from __future__ import annotations

import os
import re
import socket
import tty
from datetime import datetime, timezone
from functools import reduce
from operator import xor
from types import TracebackType
from typing import Literal, Protocol

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


class _Link(Protocol):
    port: str

    def write(self, data: bytes) -> None: ...

    def disconnect(self) -> None: ...

    def close(self) -> None: ...


class _PtyLink:
    """A pseudo-terminal in raw mode: the slave side is the reader's "serial port".

    Bytes wait in the terminal's buffer until read; a write blocks only if it fills up.
    """

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: bytes pass unchanged
        self.port = os.ttyname(self._slave)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view) :]

    def disconnect(self) -> None:
        raise ValueError("a pseudo-terminal has no client to drop; close() the simulator instead")

    def close(self) -> None:
        for fd in (self._master, self._slave):
            os.close(fd)


class _TcpLink:
    """A serial device server on loopback: one TCP client at a time receives the bytes.

    With no client connected the bytes are lost, as on a serial line nobody listens to.
    """

    def __init__(self, host: str = "127.0.0.1", accept_timeout: float = 2.0) -> None:
        self._server = socket.create_server((host, 0))
        self._server.settimeout(accept_timeout)
        self._client: socket.socket | None = None
        self.port = f"socket://{host}:{self._server.getsockname()[1]}"

    def write(self, data: bytes) -> None:
        if self._client is None:
            try:
                self._client, _ = self._server.accept()
            except TimeoutError:
                return
        try:
            self._client.sendall(data)
        except OSError:
            self.disconnect()

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self.disconnect()
        self._server.close()


class PatrolReaderSim:
    """One reader: `tap()` and `heartbeat()` write correct lines, `write_raw()` anything else.

    `port` is what the agent opens: a /dev/pts path, or `socket://127.0.0.1:PORT` with
    `link="tcp"`.
    """

    def __init__(self, reader: str = "R01", *, first_seq: int = 0, link: Literal["pty", "tcp"] = "pty") -> None:
        self.reader = _checked(_READER, reader, "reader")
        self.seq = first_seq % SEQ_MODULUS  # the number the next sentence carries
        self._link: _Link = _PtyLink() if link == "pty" else _TcpLink()
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
