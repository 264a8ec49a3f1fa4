"""Door-access controllers on a serial line, card-reader style (docs/protocols/door-line.md).

Many access controllers (and Wiegand-to-serial converters) print one line per card or
door event. This driver reads a line protocol framed exactly like the patrol reader's
(`$`, comma-separated fields, `*` and an XOR checksum, CR LF), so it reuses that driver's
port handling, framing, resynchronisation, counters and logs, and only decodes its own
sentences:

    $WDOR,<controller>,<seq>,<door>,<ACTION>,<card>,<time>*CS   a door event
    $WHBT,<controller>,<seq>,<time>*CS                          a heartbeat
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from agent.drivers.base import Driver, DriverHost
from agent.drivers.patrol_line import (
    FrameError,
    HeartbeatFrame,
    PatrolLineDriver,
    SerialLineDevice,
    _match,
    _seq,
    _time,
    decode_line,
)
from agent.drivers.registry import DriverSpec
from warden.events import DoorAction, DoorEvent, Event, stable_event_id

_CONTROLLER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}")
_DOOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}")
_CARD = re.compile(r"[A-Za-z0-9]{1,32}")
_ACTIONS = {action.value.upper(): action for action in DoorAction}


class DoorLineDevice(SerialLineDevice):
    """A door-access controller writing card-reader-style lines on a serial port
    (docs/protocols/door-line.md); framed like the patrol line protocol."""

    driver: Literal["door_line"]


@dataclass(frozen=True)
class DoorFrame:
    controller: str
    seq: int
    door: str
    action: DoorAction
    card: str | None  # None: no card (opened, closed, forced...)
    time: datetime  # UTC, from the controller's clock


def decode_door_line(line: bytes) -> DoorFrame | HeartbeatFrame:
    """Decode one door-line sentence; raise FrameError naming the first fault.

    The shared checks (length, characters, checksum) and heartbeats are the patrol line
    decoder's; a checked line of another type is a door event or unknown.
    """
    try:
        frame = decode_line(line)
    except FrameError as exc:
        if exc.reason != "unknown_sentence":
            raise
    else:
        if isinstance(frame, HeartbeatFrame):
            return frame
        raise FrameError("unknown_sentence")  # a patrol tap on a door line
    body = line.rstrip(b"\r\n")[1:].partition(b"*")[0].decode("ascii")
    sentence, *fields = body.split(",")
    if sentence != "WDOR":
        raise FrameError("unknown_sentence")
    if len(fields) != 6:
        raise FrameError("bad_field")
    controller, seq, door, action, card, time = fields
    if action not in _ACTIONS:
        raise FrameError("bad_field")
    return DoorFrame(
        controller=_match(_CONTROLLER, controller),
        seq=_seq(seq),
        door=_match(_DOOR, door),
        action=_ACTIONS[action],
        card=_match(_CARD, card) if card else None,
        time=_time(time),
    )


class DoorLineDriver(PatrolLineDriver):
    """Reads one serial line of a door controller and emits a DoorEvent per door sentence."""

    label = "door line"

    def decode(self, line: bytes) -> object:
        return decode_door_line(line)

    def _event(self, frame: object, now: datetime) -> Event:
        if isinstance(frame, HeartbeatFrame):
            return self._status_event(frame, now)
        assert isinstance(frame, DoorFrame)
        return DoorEvent(
            id=stable_event_id(
                self.site, self.device_id, "door", frame.controller, frame.seq, frame.time.isoformat()
            ),
            site=self.site,
            device=self.device_id,
            event_time=frame.time,
            receive_time=now,
            action=frame.action,
            door=frame.door,
            card=frame.card,
        )


def _build(device: DoorLineDevice, host: DriverHost) -> Driver:
    return host.serial_line(lambda emit: DoorLineDriver(device, host.site, emit, host.clock), device.port)


DRIVER = DriverSpec(model=DoorLineDevice, build=_build)
