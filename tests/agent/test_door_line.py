"""The door line driver: the documented vectors, and the simulated controller's line
output read through a real pseudo-terminal and a TCP serial device server."""

from __future__ import annotations

import ast
import queue
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.drivers.door_line import DoorFrame, DoorLineDevice, DoorLineDriver, decode_door_line
from agent.drivers.patrol_line import FrameError, HeartbeatFrame
from simulators.base import LINE
from simulators.door_controller import DoorAct, DoorControllerSim
from simulators.serial_link import open_link
from simulators.timeline import Night
from tests.support.scenarios import scenario
from warden.clock import ManualClock
from warden.events import DeviceStatus, DoorAction, DoorEvent, Event, stable_event_id

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "door-line.md"
TEXT = DOC.read_text()
VECTORS = [ast.literal_eval(m) for m in re.findall(r'^b"\$.*"$', TEXT, re.MULTILINE)]
REJECTED = [(ast.literal_eval(f'b"{line}"'), reason) for line, reason in re.findall(r"^\| `(\$.*?)` +\| `(\w+)` \|", TEXT, re.MULTILINE)]


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)


def test_the_doc_vectors_decode_to_what_it_says() -> None:
    assert [decode_door_line(line) for line in VECTORS] == [
        DoorFrame("CTL7", 41, "gate-main", DoorAction.GRANTED, "004711", utc(2026, 11, 17, 19, 12)),
        DoorFrame("CTL7", 42, "gate-main", DoorAction.OPENED, None, utc(2026, 11, 17, 19, 12, 3)),
        HeartbeatFrame("CTL7", 43, utc(2026, 11, 17, 19, 15)),
        DoorFrame("CTL7", 44, "door-back", DoorAction.FORCED, None, utc(2026, 11, 18, 0, 30)),
    ]


def test_the_doc_hex_dump_is_the_first_vector() -> None:
    dump = TEXT.split("The first line in hex:")[1].split("```")[1]
    assert bytes.fromhex(dump.replace("\n", " ")) == VECTORS[0]


@pytest.mark.parametrize(("line", "reason"), REJECTED)
def test_the_doc_rejections_are_named(line: bytes, reason: str) -> None:
    assert len(REJECTED) == 3
    with pytest.raises(FrameError) as refused:
        decode_door_line(line)
    assert refused.value.reason == reason


def test_the_simulator_encodes_the_doc_vectors() -> None:
    """Its own encoder, held to the same document as the decoder."""
    night = scenario(devices=[{"type": "door_controller", "device": "CTL7", "doors": ["gate-main", "door-back"],
                               "transport": "line", "traffic_per_hour": 0}])
    sim = Night(night).doors["CTL7"]
    acts = [
        (DoorAct(utc(2026, 11, 17, 19, 12).timestamp(), "gate-main", "granted", "004711"), 41),
        (DoorAct(utc(2026, 11, 17, 19, 12, 3).timestamp(), "gate-main", "opened"), 42),
        (DoorAct(utc(2026, 11, 17, 19, 15).timestamp(), "", "heartbeat"), 43),
        (DoorAct(utc(2026, 11, 18, 0, 30).timestamp(), "door-back", "forced"), 44),
    ]
    assert [sim.line(act, seq) for act, seq in acts] == VECTORS


class LineHarness:
    def __init__(self, port: str) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        config = DoorLineDevice(driver="door_line", id="ctl-gym", port=port, reconnect_seconds=0.1)
        self.driver = DoorLineDriver(config, "riverside", self.events.put, ManualClock(utc(2026, 11, 17, 0, 0)))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.driver.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def take(self, count: int) -> list[Event]:
        return [self.events.get(timeout=10) for _ in range(count)]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture(params=["pty", "tcp"])
def link(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def test_a_simulated_controller_night_through_the_real_driver(link: str) -> None:
    night = scenario(
        devices=[{"type": "door_controller", "device": "ctl-gym", "room": "A-GATE", "doors": ["door-gym"],
                  "transport": "line", "link": link, "traffic_per_hour": 20}],
        incidents=[{"type": "door_forced", "device": "ctl-gym", "door": "door-gym", "at": "01:30"}],
        faults=[{"type": "line_noise", "device": "ctl-gym", "every_minutes": 30}],
    )
    sim: DoorControllerSim = Night(night).doors["ctl-gym"]
    emissions = [e for e in Night(night).emissions() if e.channel == LINE]
    wire = open_link(link)  # type: ignore[arg-type]
    harness = LineHarness(wire.port)
    try:
        assert harness.driver.port_open.wait(10)
        for e in emissions:
            wire.write(e.payload)
        good = [e for e in emissions if e.events]
        events = harness.take(len(good))
    finally:
        harness.close()
        wire.close()
    doors = [e for e in events if isinstance(e, DoorEvent)]
    acts = [a for a in sim.acts if night.start_utc.timestamp() <= a.t <= night.end_utc.timestamp()]
    distinct = {e.id: e for e in doors}.values()  # re-sent lines come twice, with one id
    assert [(e.event_time.timestamp(), e.door, e.action.value, e.card) for e in distinct] == [
        (a.t, a.door, a.action, a.card) for a in acts
    ]
    assert any(e.action is DoorAction.FORCED for e in doors)
    assert all(isinstance(e, DeviceStatus) for e in events if not isinstance(e, DoorEvent))
    errors = harness.driver.counters.errors
    assert errors["garbage"] and errors["bad_checksum"] and errors["truncated"] and errors["too_long"]
    frame = decode_door_line(next(e.payload for e in good if e.payload.startswith(b"$WDOR")))
    assert isinstance(frame, DoorFrame)
    assert doors[0].id == stable_event_id("riverside", "ctl-gym", "door", frame.controller, frame.seq, frame.time.isoformat())
