"""Serial links a simulated device writes its line output to.

- `pty`: a pseudo-terminal; its slave side (`port`, /dev/pts/N) is what the agent opens,
  exactly like a USB serial adapter;
- `tcp`: a serial device server on loopback; `port` is `socket://127.0.0.1:PORT`, the
  pyserial URL real sites use for Moxa/Lantronix-style servers.
"""

from __future__ import annotations

import os
import socket
import tty
from typing import Literal, Protocol


class Link(Protocol):
    port: str

    def write(self, data: bytes) -> None: ...

    def disconnect(self) -> None: ...

    def close(self) -> None: ...


class PtyLink:
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


class TcpLink:
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


def open_link(kind: Literal["pty", "tcp"]) -> Link:
    return PtyLink() if kind == "pty" else TcpLink()
