"""The serial hub: many patrol and door lines read on one thread, over real
pseudo-terminals and a TCP serial device server, with the drivers' noise handling,
unplug and replug, device server restarts, and the read on shutdown."""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import struct
import termios
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import serial

from agent.drivers.door_line import DoorLineDevice, DoorLineDriver
from agent.drivers.patrol_line import PatrolLineDevice, PatrolLineDriver
from agent.drivers.serial_hub import SerialHub
from simulators.patrol_reader import PatrolReaderSim, encode_sentence, utc_stamp
from tests.support.wait import wait_for
from warden.clock import ManualClock
from warden.events import DeviceStatus, DoorEvent, Event, PatrolTap

SITE = "riverside"
T0 = datetime(2026, 11, 17, 23, 0, tzinfo=timezone.utc)


class Hub:
    """A hub on its own thread; every driver's events on one queue, as (device, event),
    and every port it opened on another, as (device, the path the port resolved to)."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Event]] = queue.Queue()
        self.opens: queue.Queue[tuple[str, str]] = queue.Queue()
        self.settled = threading.Semaphore(0)  # released each time the hub settles a round
        self.gate = threading.Event()  # cleared: the hub waits in its next settle
        self.gate.set()
        self.hub = SerialHub(settle=self._settle)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.hub.run, args=(self.stop,), daemon=True)
        self.drivers: dict[str, PatrolLineDriver] = {}

    def patrol(self, device: str, port: str, factory: Callable[..., Any] = serial.serial_for_url) -> PatrolLineDriver:
        config = PatrolLineDevice(driver="patrol_line", id=device, port=port, reconnect_seconds=0.05)
        return self._add(PatrolLineDriver(config, SITE, self._emit(device), ManualClock(T0), self._recorded(device, factory)))

    def door(self, device: str, port: str) -> PatrolLineDriver:
        config = DoorLineDevice(driver="door_line", id=device, port=port, reconnect_seconds=0.05)
        return self._add(DoorLineDriver(config, SITE, self._emit(device), ManualClock(T0), self._recorded(device)))

    def wait_open(self, device: str, path: str | None = None) -> None:
        """Until `device` opens its port (resolving to `path`, if given)."""
        while True:
            opened, resolved = self.opens.get(timeout=10)
            if opened == device and path in (None, resolved):
                return

    def start(self) -> Hub:
        """Start, and wait until every port is open; `wait_open` then sees only reopens."""
        self.thread.start()
        for driver in self.drivers.values():
            assert driver.port_open.wait(10), f"{driver.config.port} never opened"
        while not self.opens.empty():
            self.opens.get_nowait()
        return self

    def take(self, count: int) -> list[tuple[str, Event]]:
        return [self.events.get(timeout=10) for _ in range(count)]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "hub did not stop"

    def _add(self, driver: PatrolLineDriver) -> PatrolLineDriver:
        self.hub.add(driver)
        self.drivers[driver.device_id] = driver
        return driver

    def _emit(self, device: str) -> Callable[[Event], None]:
        return lambda event: self.events.put((device, event))

    def _settle(self) -> None:
        self.settled.release()
        self.gate.wait()

    def _recorded(self, device: str, factory: Callable[..., Any] = serial.serial_for_url) -> Callable[..., Any]:
        def open_port(url: str, **kwargs: Any) -> Any:
            port = factory(url, **kwargs)
            self.opens.put((device, os.path.realpath(url)))
            return port

        return open_port


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub()
    yield h
    if h.thread.is_alive():
        h.close()


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def received(pty: str) -> int:
    """Bytes waiting in a pseudo-terminal's input, looked at through a second descriptor."""
    fd = os.open(pty, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        return struct.unpack("I", fcntl.ioctl(fd, termios.TIOCINQ, b"\0\0\0\0"))[0]
    finally:
        os.close(fd)


def test_takes_device_paths_and_raw_tcp_but_not_urls_read_through_threads_or_queues() -> None:
    assert SerialHub.takes("/dev/ttyUSB0") and SerialHub.takes("/dev/serial/by-id/usb-FTDI-if00")
    assert SerialHub.takes("socket://10.0.0.5:4001")
    assert not SerialHub.takes("rfc2217://10.0.0.5:4001") and not SerialHub.takes("loop://")


def test_many_lines_on_one_thread_each_through_its_own_driver(hub: Hub) -> None:
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(PatrolReaderSim(f"R{n}")) for n in range(5)]
        for n, reader in enumerate(readers):
            hub.patrol(f"line-{n}", reader.port)
        hub.start()
        threads_before = threading.active_count()
        for n, reader in enumerate(readers):
            reader.write_raw(b"\x00\xffnoise")
            reader.tap(f"cp-{n}", None, at(n))
        got = dict(hub.take(5))
        assert threading.active_count() == threads_before  # no thread per port
        for n in range(5):
            tap = got[f"line-{n}"]
            assert isinstance(tap, PatrolTap) and tap.tag == f"cp-{n}" and tap.reader == f"R{n}" and tap.event_time == at(n)
            assert hub.drivers[f"line-{n}"].counters.errors == {"garbage": 1}


def test_ports_on_descriptors_past_1023_are_read(hub: Hub) -> None:
    """A few hundred ports (pyserial opens two pipes beside each) push descriptors past
    select()'s limit of 1023; the hub must still read them."""
    fillers = []
    try:
        while not fillers or fillers[-1] < 1100:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        with PatrolReaderSim("R01") as reader:
            driver = hub.patrol("high-line", reader.port)
            hub.start()
            wait_for(lambda: all(line.fd > 1023 for line in hub.hub._lines), timeout=10, what="the port registered past fd 1023")
            reader.tap("cp-gate", "guard-lee", at(1))
            [(device, event)] = hub.take(1)
            assert device == "high-line" and isinstance(event, PatrolTap) and event.tag == "cp-gate"
            assert driver.counters.snapshot().get("error_port_error", 0) == 0
    finally:
        for fd in fillers:
            os.close(fd)


def test_a_sentence_split_across_reads_and_lines_of_both_kinds(hub: Hub) -> None:
    with PatrolReaderSim("R01") as patrol, PatrolReaderSim("CTL7") as door_line:
        hub.patrol("gate-line", patrol.port)
        hub.door("ctl-gym", door_line.port)
        hub.start()
        sentence = encode_sentence("WTAP", "R01", "7", "cp-gate", "guard-lee", utc_stamp(at(1)))
        patrol.write_raw(sentence[:11])
        door_line.write_raw(encode_sentence("WDOR", "CTL7", "41", "door-gym", "FORCED", "", utc_stamp(at(2))))
        [(device, event)] = hub.take(1)
        assert device == "ctl-gym" and isinstance(event, DoorEvent) and event.action == "forced"
        patrol.write_raw(sentence[11:])
        [(device, event)] = hub.take(1)
        assert device == "gate-line" and isinstance(event, PatrolTap) and event.guard == "guard-lee"


def test_an_unplugged_line_is_reopened_while_the_others_keep_flowing(hub: Hub, tmp_path: Path) -> None:
    link = tmp_path / "ttyPATROL"  # like /dev/serial/by-id/..., which follows the adapter
    first = PatrolReaderSim("R01")
    link.symlink_to(first.port)
    with PatrolReaderSim("R02") as steady:
        pulled = hub.patrol("pulled", str(link))
        hub.patrol("steady", steady.port)
        hub.start()
        first.tap("cp-1", None, at(1))
        assert hub.take(1)[0][0] == "pulled"

        first.close()  # the USB adapter is pulled
        steady.tap("cp-2", None, at(2))
        assert hub.take(1)[0][0] == "steady"
        with PatrolReaderSim("R01") as second:  # ... and plugged in again
            (tmp_path / "next").symlink_to(second.port)
            os.replace(tmp_path / "next", link)
            hub.wait_open("pulled", second.port)
            assert pulled.counters.errors["port_error"] >= 1
            second.tap("cp-3", None, at(3))
            steady.tap("cp-4", None, at(4))
            got = dict(hub.take(2))
            assert hub.drivers["steady"].counters.errors == {}
    assert isinstance(got["pulled"], PatrolTap) and got["pulled"].tag == "cp-3"
    assert isinstance(got["steady"], PatrolTap) and got["steady"].tag == "cp-4"


def test_a_device_server_restart_is_reconnected(hub: Hub) -> None:
    with PatrolReaderSim("R01", link="tcp") as server:
        driver = hub.patrol("gate-line", server.port)
        hub.start()
        server.tap("cp-1", None, at(1))
        assert isinstance(hub.take(1)[0][1], PatrolTap)

        server.disconnect()  # the device server restarts; the driver sees the socket close
        hub.wait_open("gate-line")  # ... and is back
        server.heartbeat(at(2))
        [(_, event)] = hub.take(1)
        assert isinstance(event, DeviceStatus)
        assert driver.counters.errors["port_error"] == 1


def test_a_slow_connect_to_a_device_server_does_not_hold_up_the_other_lines(hub: Hub) -> None:
    """A device server that does not answer makes the connect wait seconds: it waits on a
    thread of its own, not on the one reading every line."""
    connecting, give_up = threading.Event(), threading.Event()

    def hanging_connect(url: str, **kwargs: Any) -> Any:
        connecting.set()
        give_up.wait(10)
        raise serial.SerialException("connect timed out")

    with PatrolReaderSim("R02") as steady:
        hub.patrol("far", "socket://192.0.2.1:4001", factory=hanging_connect)
        hub.patrol("steady", steady.port)
        hub.thread.start()
        assert connecting.wait(10) and hub.drivers["steady"].port_open.wait(10)
        steady.tap("cp-1", None, at(1))
        assert hub.take(1)[0][0] == "steady"  # read while the connect still hangs
        give_up.set()
    hub.close()
    far = hub.drivers["far"].counters.errors  # counted on the connect's own thread, which the hub does not wait for
    wait_for(lambda: far.get("port_error", 0) >= 1, what="the failed connect counted as a port error")


def test_on_stop_every_line_first_reads_what_its_port_already_received(hub: Hub) -> None:
    with PatrolReaderSim("R01") as a, PatrolReaderSim("R02") as b:
        hub.patrol("a", a.port)
        hub.patrol("b", b.port)
        hub.start()
        hub.gate.clear()
        a.tap("cp-0", None, at(0))
        assert hub.take(1)[0][0] == "a"
        assert hub.settled.acquire(timeout=10)  # the hub now waits for the disk: it reads nothing
        sent = {a.port: len(a.tap("cp-1", None, at(1)))}
        sent[b.port] = len(b.tap("cp-2", None, at(2)) + b.write_raw(b"$WTAP,R02,9,cp-"))  # the last still arriving
        for port, count in sent.items():  # a pseudo-terminal passes bytes on a moment later
            wait_for(lambda: received(port) == count, what=f"{count} bytes waiting in {port}")
        hub.stop.set()  # the agent is told to stop with these lines in the ports' buffers
        hub.gate.set()
        hub.close()
    got = [hub.events.get_nowait() for _ in range(hub.events.qsize())]
    assert sorted((device, e.tag) for device, e in got if isinstance(e, PatrolTap)) == [("a", "cp-1"), ("b", "cp-2")]
    assert hub.drivers["b"].counters.errors == {"truncated": 1}
    assert not any(d.port_open.is_set() for d in hub.drivers.values())
