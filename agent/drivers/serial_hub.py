"""One thread reads every serial line whose port can be selected (device paths and
`socket://` device servers), instead of a thread per port blocked in a read.

A thread per port costs a stack and wake-ups on every read timeout, for ports that
mostly send a line a second. Here a selector waits on all of them; each ready port is
read without blocking and its bytes go through the port's own driver (framing,
counters, logs), exactly as on a thread of its own. After each round the hub waits until
the round's events are on disk (`settle`), so a line is stored before more is read, and
the drivers can queue events without waiting for a transaction each.

A lost port is closed and reopened every `reconnect_seconds`, as by `run()`. Device paths
open without blocking (O_NONBLOCK); a `socket://` connect may take seconds against a
dead server, so it runs on a short-lived thread of its own while the other lines are
read. rfc2217://, loop:// and other pyserial URLs are not selectable: their drivers keep
a thread each (`takes()` says which).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import serial

from agent.drivers.patrol_line import LineFramer, PatrolLineDriver

log = logging.getLogger(__name__)

#: Bytes taken from a ready port per read; a line is at most 128.
READ_CHUNK = 4096
#: Longest wait in the selector: bounds how long `stop` can go unnoticed.
STOP_POLL_SECONDS = 0.5


@dataclass
class _Line:
    driver: PatrolLineDriver
    port: serial.SerialBase | None = None
    fd: int = -1  # the port's descriptor, as registered with the selector
    framer: LineFramer = field(default_factory=LineFramer)
    reopen_at: float = 0.0  # monotonic time of the next open attempt
    opening: bool = False  # a background connect is under way

    @property
    def background_open(self) -> bool:
        return self.driver.config.port.startswith("socket://")


class SerialHub:
    """Reads many serial lines on one thread; `settle()` waits until emitted events are stored."""

    def __init__(self, settle: Callable[[], None]) -> None:
        self._settle = settle
        self._lines: list[_Line] = []
        self._opened: list[tuple[_Line, serial.SerialBase | None]] = []  # from background connects
        self._opened_lock = threading.Lock()  # _opened, _closed
        self._closed = False
        self._selector = selectors.DefaultSelector()  # opened here, closed when run() ends
        self._wake_r, self._wake_w = -1, -1  # a pipe made by run(): a background connect finished

    @staticmethod
    def takes(port: str) -> bool:
        """Whether a port can be read here: a device path (POSIX) or a socket:// URL."""
        return os.name == "posix" and ("://" not in port or port.startswith("socket://"))

    def add(self, driver: PatrolLineDriver) -> None:
        """Before `run()`: read this driver's port here."""
        self._lines.append(_Line(driver))

    def __contains__(self, driver: object) -> bool:
        return any(line.driver is driver for line in self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def run(self, stop: threading.Event) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not stop.is_set():
                self._round()
        finally:
            self._shut_down()

    def _round(self) -> None:
        self._open_due(time.monotonic())
        ready = self._selector.select(self._select_timeout(time.monotonic()))
        read = [self._ready(key.data) for key, _ in ready]
        if any(read):
            self._settle()  # what this round read is on disk before more is read

    # ------------------------------------------------------------------ opening

    def _open_due(self, now: float) -> None:
        self._take_background_opens(now)
        for line in self._lines:
            if line.port is None and not line.opening and line.reopen_at <= now:
                if line.background_open:
                    line.opening = True
                    threading.Thread(target=self._open_in_background, args=(line,), name="agent-serial-open", daemon=True).start()
                else:
                    self._attach(line, line.driver.open_port(timeout=0), now)

    def _open_in_background(self, line: _Line) -> None:
        port = line.driver.open_port(timeout=0)
        with self._opened_lock:
            if not self._closed:
                self._opened.append((line, port))
                os.write(self._wake_w, b"\0")
                return
        if port is not None:  # the hub stopped meanwhile
            line.driver.close_port(port)

    def _take_background_opens(self, now: float) -> None:
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for line, port in opened:
            line.opening = False
            self._attach(line, port, now)

    def _attach(self, line: _Line, port: serial.SerialBase | None, now: float) -> None:
        if port is None:  # counted and logged by the driver
            line.reopen_at = now + line.driver.config.reconnect_seconds
            return
        line.port, line.framer = port, LineFramer()
        try:
            fd = port.fileno()
            self._selector.register(fd, selectors.EVENT_READ, line)
        except (OSError, ValueError, KeyError, serial.SerialException) as exc:
            line.driver.port_error("select", exc)
            self._detach(line, now)
        else:
            line.fd = fd

    def _detach(self, line: _Line, now: float) -> None:
        assert line.port is not None
        if line.fd >= 0:
            self._selector.unregister(line.fd)
        line.driver.close_port(line.port)
        line.port, line.fd = None, -1
        line.reopen_at = now + line.driver.config.reconnect_seconds

    def _select_timeout(self, now: float) -> float:
        waits = [line.reopen_at - now for line in self._lines if line.port is None and not line.opening]
        return max(0.0, min([STOP_POLL_SECONDS, *waits]))

    # ------------------------------------------------------------------ reading

    def _ready(self, line: _Line | None) -> bool:
        """Read a ready port; True if it was a port (its events may need settling)."""
        if line is None:  # a background connect finished
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
            return False
        assert line.port is not None
        try:
            alive = line.driver.read_from(line.port, line.framer, READ_CHUNK)
        except Exception:  # a driver bug must not stop the other lines
            log.exception("serial line %s: unexpected error; reopening", line.driver.config.port, extra={"device": line.driver.device_id})
            alive = False
        if not alive:
            self._detach(line, time.monotonic())
        return True

    def _shut_down(self) -> None:
        """Take what every open port already received, store it, release everything."""
        for line in self._lines:
            if line.port is not None:
                line.driver.drain(line.port, line.framer)
                self._detach(line, time.monotonic())
        self._settle()
        with self._opened_lock:
            self._closed = True
            late, self._opened = self._opened, []
            os.close(self._wake_r)
            os.close(self._wake_w)
        for line, port in late:  # connects that finished while stopping
            if port is not None:
                line.driver.close_port(port)
        self._selector.close()
