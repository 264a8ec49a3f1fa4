"""A simulated door-access controller: its doors' traffic and incidents, over MQTT JSON
(docs/protocols/door-mqtt.md) or a card-reader-style serial line (docs/protocols/door-line.md).

People swipe while a door is scheduled (the same schedule the door rule judges it by:
its override in `rules.doors.doors`, else its room's): a granted card, the door opens a
second or two later and closes a few seconds after that; some leave by the exit button
(opened and closed, no card); now and then a card is refused once. Incidents add what the
rules must catch: a door held open, forced, a run of refused cards, use after hours.
The controller reports a heartbeat every few minutes, since it is otherwise silent
whenever nobody passes.

It encodes both formats itself, without the agent's decoders, on purpose: a bug shared by
both sides would go unnoticed. Tests hold both to the protocol documents.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import time, timedelta

from simulators.base import LINE, MQTT, Emission, ScheduleBook, device_rng, epoch, iso_z, utc
from simulators.calendar import local_instant
from simulators.patrol_reader import SEQ_MODULUS, encode_sentence, utc_stamp
from simulators.scenario import (
    DoorAfterHours,
    DoorControllerSpec,
    DoorDenied,
    DoorForced,
    DoorHeldOpen,
    Scenario,
)
from warden.config import Room, SiteConfig

_CONTROLLER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}")
#: Traffic keeps this far from an incident on the same door, so the two never mix.
_QUIET_AROUND_INCIDENT = 15 * 60
#: Traffic keeps this far inside the door's scheduled period.
_SCHEDULE_MARGIN = 3 * 60
#: Unscheduled doors (not judged after hours) see traffic in the day, local time.
_DAY_HOURS = (7, 19)


@dataclass(frozen=True)
class DoorAct:
    """One thing a door did, at its true time."""

    t: float
    door: str
    action: str  # granted, denied, opened, closed, held_open, forced
    card: str | None = None


def door_schedule(scenario: Scenario, door: str, controller: str) -> tuple[bool, str | None]:
    """(judged after hours?, schedule) of a door, as docs/rules.md#doors describes it
    (read from the documentation, not from rules/doors.py, so traffic and truth do not
    share a mistake with the rule): not judged if after-hours checks are off for it; its
    override schedule if it has one; else the room the site lists the door in, else its
    controller's room (a room without a schedule: never scheduled); a door in no room
    and with no override is not judged."""
    config = scenario.rules.doors
    override = config.doors.get(door)
    if not config.after_hours or (override is not None and not override.after_hours):
        return False, None
    if override is not None and override.schedule is not None:
        return True, override.schedule
    for device in (door, controller):
        room = _room_listing(scenario.site, device)
        if room is not None:
            return True, room.schedule
    return False, None


def _room_listing(site: SiteConfig, device: str) -> Room | None:
    """The first room (in file order) whose `devices` list names `device`."""
    for building in site.buildings:
        for room in building.rooms:
            if device in room.devices:
                return room
    return None


class DoorControllerSim:
    def __init__(self, spec: DoorControllerSpec, scenario: Scenario, seed: int, book: ScheduleBook) -> None:
        self.spec = spec
        self.device = spec.device
        self.scenario = scenario
        if spec.transport == "line" and not _CONTROLLER.fullmatch(spec.device):
            raise ValueError(f"controller id {spec.device!r} does not fit the door line protocol (16 characters)")
        rng = device_rng(seed, "doors", spec.device)
        self.cards = [f"{rng.randint(1000, 999999):06d}" for _ in range(40)]
        incidents = self._incidents()
        quiet = {door: [a.t for a in incidents if a.door == door] for door in spec.doors}
        acts = list(incidents)
        for door in spec.doors:
            acts += self._traffic(door, book, rng, quiet[door])
        self.acts = sorted(acts, key=lambda a: a.t)

    # ----------------------------------------------------------------- what happens

    def _traffic(self, door: str, book: ScheduleBook, rng: random.Random, quiet: list[float]) -> list[DoorAct]:
        checked, schedule = door_schedule(self.scenario, door, self.device)
        spans = book.intervals(schedule) if checked else _day_spans(self.scenario.site, book)
        start, end = epoch(self.scenario.start_utc), epoch(self.scenario.end_utc)
        rate = self.spec.traffic_per_hour / 3600
        acts: list[DoorAct] = []
        last_denied = -1e18
        for a, b in spans:
            a, b = max(a, start) + _SCHEDULE_MARGIN, min(b, end) - _SCHEDULE_MARGIN
            t = a
            while rate > 0:
                t += rng.expovariate(rate)
                if t >= b:
                    break
                if any(abs(t - q) < _QUIET_AROUND_INCIDENT for q in quiet):
                    continue
                t = float(round(t))
                kind = rng.random()
                if kind < 0.03 and t - last_denied > 20 * 60:
                    last_denied = t
                    acts.append(DoorAct(t, door, "denied", rng.choice(self.cards)))
                    continue
                opened = t
                if kind < 0.7:
                    acts.append(DoorAct(t, door, "granted", rng.choice(self.cards)))
                    opened = t + rng.randint(1, 4)
                acts.append(DoorAct(opened, door, "opened"))
                acts.append(DoorAct(opened + rng.randint(3, 12), door, "closed"))
                t = opened + 15
        return acts

    def _incidents(self) -> list[DoorAct]:
        scenario, acts = self.scenario, []
        report = self.spec.held_open_report_seconds
        for incident in scenario.incidents:
            if getattr(incident, "device", None) != self.device:
                continue
            if isinstance(incident, DoorHeldOpen):
                t = epoch(scenario.instant(incident.at))
                acts += [DoorAct(t, incident.door, "granted", self.cards[0]), DoorAct(t + 3, incident.door, "opened")]
                if report is not None and report < incident.seconds:
                    acts.append(DoorAct(t + 3 + report, incident.door, "held_open"))
                acts.append(DoorAct(t + 3 + incident.seconds, incident.door, "closed"))
            elif isinstance(incident, DoorForced):
                t = epoch(scenario.instant(incident.at))
                acts += [DoorAct(t, incident.door, "forced"), DoorAct(t + 45, incident.door, "closed")]
            elif isinstance(incident, DoorDenied):
                t = epoch(scenario.instant(incident.at))
                acts += [DoorAct(t + 40 * k, incident.door, "denied", incident.card) for k in range(incident.count)]
            elif isinstance(incident, DoorAfterHours):
                t = epoch(scenario.instant(incident.at))
                acts += [
                    DoorAct(t, incident.door, "granted", incident.card),
                    DoorAct(t + 3, incident.door, "opened"),
                    DoorAct(t + 9, incident.door, "closed"),
                ]
        return acts

    # ----------------------------------------------------------------- what it says

    def emissions(self, topic: str, skew: float = 0.0) -> Iterator[Emission]:
        """Door events and heartbeats in time order, one sequence counter for both."""
        start, end = epoch(self.scenario.start_utc), epoch(self.scenario.end_utc)
        period = self.spec.heartbeat_minutes * 60
        beats = [DoorAct(start + n * period, "", "heartbeat") for n in range(int((end - start) // period) + 1)]
        items = sorted([a for a in self.acts if start <= a.t <= end] + beats, key=lambda a: (a.t, a.action == "heartbeat"))
        channel = MQTT if self.spec.transport == "mqtt" else LINE
        for seq, act in enumerate(items):
            seq %= SEQ_MODULUS
            payload = self.mqtt_payload(act, seq, skew) if channel == MQTT else self.line(act, seq, skew)
            kind = "heartbeat" if act.action == "heartbeat" else "data"
            yield Emission(act.t, self.device, channel, payload, topic if channel == MQTT else "", kind=kind, events=1)

    def mqtt_payload(self, act: DoorAct, seq: int, skew: float = 0.0) -> bytes:
        document: dict[str, object] = {"ts": iso_z(act.t + skew), "seq": seq}
        if act.action != "heartbeat":
            document["door"] = act.door
        document["event"] = act.action
        if act.card is not None:
            document["card"] = act.card
        return json.dumps(document, separators=(",", ":")).encode()

    def line(self, act: DoorAct, seq: int, skew: float = 0.0) -> bytes:
        stamp = utc_stamp(utc(act.t + skew))
        if act.action == "heartbeat":
            return encode_sentence("WHBT", self.device, str(seq), stamp)
        return encode_sentence("WDOR", self.device, str(seq), act.door, act.action.upper(), act.card or "", stamp)


def _day_spans(site: SiteConfig, book: ScheduleBook) -> list[tuple[float, float]]:
    """Daytime on every day of the night's margin, for doors with no schedule to keep to."""
    zone = site.zone
    first = utc(book.t0).astimezone(zone).date()
    spans = []
    for n in range(int((book.t1 - book.t0) // 86400) + 1):
        day = first + timedelta(days=n)
        spans.append((epoch(local_instant(zone, day, time(_DAY_HOURS[0]))), epoch(local_instant(zone, day, time(_DAY_HOURS[1])))))
    return spans
