"""Serial links a simulated device writes its line output to.

- `pty`: a pseudo-terminal; its slave side (`port`, /dev/pts/N) is what the agent opens,
  exactly like a USB serial adapter;
- `tcp`: a serial device server on loopback; `port` is `socket://127.0.0.1:PORT`, the
  pyserial URL real sites use for Moxa/Lantronix-style servers.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import tty
from typing import Literal, Protocol

log = logging.getLogger(__name__)

#: Real seconds a write waits for a reader to make room before its bytes are dropped.
STALL_SECONDS = 2.0


class Link(Protocol):
    port: str

    def write(self, data: bytes) -> None: ...

    def disconnect(self) -> None: ...

    def close(self) -> None: ...


class PtyLink:
    """A pseudo-terminal in raw mode: the slave side is the reader's "serial port".

    Bytes wait in the terminal's buffer (some 18 KB) until read. When it is full and no
    one reads for `stall_seconds`, the rest is dropped (`dropped` counts the bytes), as
    on a serial line nobody listens to: a simulation never hangs on a missing agent.
    """

    def __init__(self, stall_seconds: float = STALL_SECONDS) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: bytes pass unchanged
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self.stall_seconds = stall_seconds
        self.dropped = 0
        self._stalled = False  # the last write found nobody reading: do not wait again

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view) :]
                self._stalled = False
            except BlockingIOError:
                wait = 0.0 if self._stalled else self.stall_seconds
                _, writable, _ = select.select([], [self._master], [], wait)
                if not writable:
                    self._stalled = True  # a week of lines to an unread port must not wait a week of stalls
                    self._drop(len(view))
                    return

    def _drop(self, count: int) -> None:
        if not self.dropped:
            log.warning("nobody reads the line: dropping what does not fit", extra={"port": self.port})
        self.dropped += count

    def disconnect(self) -> None:
        raise ValueError("a pseudo-terminal has no client to drop; close() the simulator instead")

    def close(self) -> None:
        for fd in (self._master, self._slave):
            os.close(fd)


class TcpLink:
    """A serial device server on loopback: one TCP client at a time receives the bytes.

    With no client connected the bytes are lost, as on a serial line nobody listens to.
    """

    def __init__(self, host: str = "127.0.0.1", accept_timeout: float = STALL_SECONDS) -> None:
        self._server = socket.create_server((host, 0))
        self._server.settimeout(accept_timeout)  # the first write waits this long for a client
        self._client: socket.socket | None = None
        self.port = f"socket://{host}:{self._server.getsockname()[1]}"

    def write(self, data: bytes) -> None:
        if self._client is None:
            try:
                self._client, _ = self._server.accept()
            except (TimeoutError, BlockingIOError):
                self._server.settimeout(0)  # nobody came: later writes do not wait again
                return
            self._client.settimeout(STALL_SECONDS)
        try:
            self._client.sendall(data)
        except OSError:  # the client left, or stopped reading for STALL_SECONDS
            self.disconnect()

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self.disconnect()
        self._server.close()


def open_link(kind: Literal["pty", "tcp"]) -> Link:
    return PtyLink() if kind == "pty" else TcpLink()
