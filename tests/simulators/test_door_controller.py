"""The door controller simulator: traffic only while a door is scheduled, incidents as
injected, and MQTT payloads in the documented format (docs/protocols/door-mqtt.md)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from simulators.base import ScheduleBook, epoch
from simulators.door_controller import DoorAct, door_schedule
from simulators.timeline import Night
from tests.support.scenarios import scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "door-mqtt.md"

CONTROLLER = {"type": "door_controller", "device": "ctl-gate", "room": "A-GATE", "doors": ["gate-main", "gate-side"],
              "traffic_per_hour": 40}


def test_everyday_traffic_stays_inside_each_doors_schedule() -> None:
    night = scenario(devices=[CONTROLLER], rules={"doors": {"doors": {"gate-side": {"schedule": "school-day"}}}})
    sim = Night(night).doors["ctl-gate"]
    book = ScheduleBook(night.site, epoch(night.start_utc), epoch(night.end_utc))
    assert door_schedule(night, "gate-main", "ctl-gate") == (True, "gate")  # the controller's room
    assert door_schedule(night, "gate-side", "ctl-gate") == (True, "school-day")  # the door's override
    for door in ("gate-main", "gate-side"):
        acts = [a for a in sim.acts if a.door == door]
        assert len(acts) > 50
        schedule = door_schedule(night, door, "ctl-gate")[1]
        assert all(book.scheduled(schedule, a.t) for a in acts), door
    actions = {a.action for a in sim.acts}
    assert actions <= {"granted", "opened", "closed", "denied"}
    for door in ("gate-main", "gate-side"):
        denied = sorted(a.t for a in sim.acts if a.action == "denied" and a.door == door)
        assert all(b - a > 20 * 60 for a, b in zip(denied, denied[1:]))  # never a run of refusals at a door
    opened = [a for a in sim.acts if a.action in ("opened", "closed")]
    for door in ("gate-main", "gate-side"):
        times = [(a.t, a.action) for a in opened if a.door == door]
        assert all(b[0] - a[0] < 60 for a, b in zip(times, times[1:]) if a[1] == "opened")  # never held open


def test_incidents_are_what_the_rules_must_see() -> None:
    night = scenario(
        devices=[CONTROLLER],
        incidents=[
            {"type": "door_held_open", "device": "ctl-gate", "door": "gate-side", "at": "22:40", "seconds": 360},
            {"type": "door_forced", "device": "ctl-gate", "door": "gate-main", "at": "01:30"},
            {"type": "door_denied", "device": "ctl-gate", "door": "gate-main", "at": "17:00", "count": 3, "card": "77"},
        ],
    )
    sim = Night(night).doors["ctl-gate"]
    held = epoch(night.instant(night.incidents[0].at))  # type: ignore[union-attr, arg-type]
    side = [(a.t - held, a.action) for a in sim.acts if a.door == "gate-side" and abs(a.t - held) < 3600]
    assert side == [(0, "granted"), (3, "opened"), (63, "held_open"), (363, "closed")]
    forced = epoch(night.instant(night.incidents[1].at))  # type: ignore[union-attr, arg-type]
    assert [(a.t - forced, a.action) for a in sim.acts if a.door == "gate-main" and 0 <= a.t - forced < 600] == [
        (0, "forced"), (45, "closed")
    ]
    denied = [a for a in sim.acts if a.action == "denied" and a.card == "77"]
    assert [a.t - denied[0].t for a in denied] == [0, 40, 80]


def test_mqtt_payloads_have_the_documented_shape() -> None:
    documented = [json.loads(line) for line in re.findall(r"^\{.*\}$", DOC.read_text(), re.MULTILINE)]
    sim = Night(scenario(devices=[{**CONTROLLER, "traffic_per_hour": 0}])).doors["ctl-gate"]
    made = [
        json.loads(sim.mqtt_payload(DoorAct(epoch(night_time), door, action, card), seq))
        for night_time, door, action, card, seq in [
            (_at("2026-11-17T19:12:00Z"), "gate-main", "granted", "004711", 118),
            (_at("2026-11-17T19:12:03Z"), "gate-main", "opened", None, 119),
            (_at("2026-11-17T19:15:00Z"), "", "heartbeat", None, 120),
        ]
    ]
    assert made == documented


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
