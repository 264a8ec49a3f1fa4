"""Faults: what goes wrong on the wire without anything being wrong on the site.

Each fault rewrites one device's emissions: silences (a dropout, or a device going silent
for good, which is an incident), duplicates, reordering, malformed MQTT payloads, noise on
a serial line, and Modbus timeouts or exception answers (as controls of the simulated
meter, since the agent polls it). A fault keeps clear of the moments an incident on the
same device starts or ends, so it never blurs what the rules must see; everything else is
fair game, and the rules must stay quiet about it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from simulators.base import LINE, MODBUS, MQTT, Emission, device_rng, epoch, iso_z
from simulators.ground_truth import incident_span
from simulators.patrol_reader import encode_sentence
from simulators.scenario import (
    DeviceSilent,
    Dropout,
    Duplicates,
    LineNoise,
    ModbusFault,
    MqttMalformed,
    OutOfOrder,
    Scenario,
)

#: Faults keep this far (seconds) from an incident starting or ending on the same device.
CLEAR_OF_INCIDENTS = 10 * 60


def silences(scenario: Scenario, device: str) -> list[tuple[float, float]]:
    """When the device says nothing: its dropouts, and from a device_silent incident on."""
    spans = []
    for fault in scenario.faults:
        if isinstance(fault, Dropout) and fault.device == device:
            a = epoch(scenario.instant(fault.at))
            spans.append((a, a + fault.minutes * 60))
    for incident in scenario.incidents:
        if isinstance(incident, DeviceSilent) and incident.device == device:
            spans.append((epoch(scenario.instant(incident.at)), float("inf")))
    return spans


def apply_faults(scenario: Scenario, device: str, stream: Iterable[Emission], seed: int) -> Iterator[Emission]:
    """The device's emissions with its faults applied, still in time order."""
    faults = [f for f in scenario.faults if getattr(f, "device", None) == device]
    quiet = silences(scenario, device)
    if quiet:
        stream = (e for e in stream if not any(a <= e.t < b for a, b in quiet))
    rewriting = [f for f in faults if isinstance(f, (Duplicates, OutOfOrder, MqttMalformed, LineNoise))]
    if not rewriting:
        return iter(stream)
    emissions = list(stream)
    avoid = incident_moments(scenario, device)
    for n, fault in enumerate(rewriting):
        rng = device_rng(seed, "fault", device, n)
        marks = _marks(scenario, fault.every_minutes * 60, rng, avoid)
        if isinstance(fault, Duplicates):
            emissions = _duplicate(emissions, marks)
        elif isinstance(fault, OutOfOrder):
            emissions = _reorder(emissions, marks)
        elif isinstance(fault, MqttMalformed):
            emissions += _malformed(emissions, marks, rng)
        else:
            emissions += _noise(emissions, marks, fault.kinds, rng)
    return iter(sorted(emissions, key=lambda e: e.t))


def modbus_controls(scenario: Scenario, device: str) -> list[Emission]:
    """Timeouts and exception answers of a simulated Modbus meter, as controls at their times."""
    controls = []
    for fault in scenario.faults:
        if isinstance(fault, ModbusFault) and fault.device == device:
            a = epoch(scenario.instant(fault.at))
            action = "mute" if fault.mode == "timeout" else f"refuse:{fault.code}"
            controls += [
                Emission(a, device, MODBUS, kind="control", action=action),
                Emission(a + fault.minutes * 60, device, MODBUS, kind="control", action="clear"),
            ]
    for a, b in silences(scenario, device):
        controls.append(Emission(a, device, MODBUS, kind="control", action="mute"))
        if b != float("inf"):
            controls.append(Emission(b, device, MODBUS, kind="control", action="clear"))
    return sorted(controls, key=lambda e: e.t)


def incident_moments(scenario: Scenario, device: str) -> list[float]:
    """When incidents on the device start or end."""
    moments = []
    for incident in scenario.incidents:
        if getattr(incident, "device", None) == device:
            moments += [epoch(m) for m in incident_span(scenario, incident) if m is not None]
    return moments


# --------------------------------------------------------------------------- rewriting


def _marks(scenario: Scenario, every: float, rng: random.Random, avoid: list[float]) -> list[float]:
    start, end = epoch(scenario.start_utc), epoch(scenario.end_utc)
    t, marks = start + rng.uniform(0, every), []
    while t < end:
        if all(abs(t - a) > CLEAR_OF_INCIDENTS for a in avoid):
            marks.append(t)
        t += every
    return marks


def _next_data(emissions: list[Emission], t: float, after: int = 0) -> int | None:
    for i in range(after, len(emissions)):
        e = emissions[i]
        if e.t >= t and e.kind in ("data", "heartbeat") and e.channel in (MQTT, LINE):
            return i
    return None


def _duplicate(emissions: list[Emission], marks: list[float]) -> list[Emission]:
    """The same message again, byte for byte, a second later: a retry the device made."""
    copies = []
    for mark in marks:
        i = _next_data(emissions, mark)
        if i is not None:
            e = emissions[i]
            copies.append(replace(e, t=e.t + (1.0 if e.channel == MQTT else 0.001), kind="duplicate"))
    return emissions + copies


def _reorder(emissions: list[Emission], marks: list[float]) -> list[Emission]:
    """A message held back until after the next one (the network reordered them)."""
    out = list(emissions)
    for mark in marks:
        i = _next_data(out, mark)
        j = _next_data(out, mark, i + 1) if i is not None else None
        if i is not None and j is not None and out[i].kind == "data" and out[j].t - out[i].t < 300:
            out[i] = replace(out[i], t=out[j].t + 0.001)
    return out


def _malformed(emissions: list[Emission], marks: list[float], rng: random.Random) -> list[Emission]:
    """Payloads the device's driver must refuse whole: no reading may come of them."""
    made = []
    for n, mark in enumerate(marks):
        i = _next_data(emissions, mark)
        if i is None:
            continue
        e = emissions[i]
        stamp = iso_z(round(e.t))
        variants = [
            b"not json at all",
            b'["power_w", 812.5]',
            b'{"ts": "yesterday", "power_w": 1.0, "volume_m3": 1.0, "wet": 1, "event": "forced", "door": "x"}',
            f'{{"ts": "{stamp}", "power_w": "high", "volume_m3": "lots", "wet": "yes", "event": "exploded"}}'.encode(),
            e.payload[: max(1, len(e.payload) // 2)],
            f'{{"ts": "{stamp}", "battery_pct": 12}}'.encode(),
            b"\xff\xfe\x00garbage",
        ]
        made.append(Emission(e.t + 0.5, e.device, MQTT, variants[n % len(variants)], e.topic, kind="malformed"))
    return made


def _noise(emissions: list[Emission], marks: list[float], kinds: Sequence[str], rng: random.Random) -> list[Emission]:
    """Line noise just before a real sentence, which must still arrive intact."""
    made = []
    printable = bytes(b for b in range(0x20, 0x7F) if b != ord("$"))
    for n, mark in enumerate(marks):
        i = _next_data(emissions, mark)
        if i is None:
            continue
        e, kind = emissions[i], kinds[n % len(kinds)]
        if kind == "garbage":
            junk = bytes(rng.choice(printable + b"\x00\x07\xff\r\n") for _ in range(rng.randint(8, 60)))
            noise, events, label = junk, 0, "noise"
        elif kind == "bad_checksum":
            good = encode_sentence("WHBT", "noise", "1", "20240301T223000Z")
            noise, events, label = good[:-4] + (b"00" if good[-4:-2] != b"00" else b"11") + b"\r\n", 0, "noise"
        elif kind == "truncated":
            noise, events, label = e.payload[: max(2, len(e.payload) // 3)], 0, "noise"
        elif kind == "too_long":
            noise, events, label = b"$WTAP," + b"X" * 150 + b"\r\n", 0, "noise"
        else:  # resend: the reader sends a stored line again, byte for byte
            noise, events, label = e.payload, e.events, "duplicate"
        made.append(Emission(e.t - 0.002 if label == "noise" else e.t + 0.001, e.device, LINE, noise, kind=label, events=events))
    return made
