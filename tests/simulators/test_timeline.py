"""Same scenario, same seed, same night: byte for byte, in this process and in another
one with a different hash seed; another seed gives another night."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from simulators.catalogue import load_scenario, shipped_scenarios
from simulators.timeline import Night, tally

DIGEST = """
import hashlib, sys
from simulators.catalogue import load_scenario
from simulators.timeline import Night
digest = hashlib.sha256()
for e in Night(load_scenario(sys.argv[1]), int(sys.argv[2])).emissions():
    digest.update(repr((e.t, e.device, e.channel, e.topic, e.kind, e.events, e.action)).encode() + e.payload)
print(digest.hexdigest())
"""


def digest(name: str, seed: int) -> str:
    h = hashlib.sha256()
    for e in Night(load_scenario(name), seed).emissions():
        h.update(repr((e.t, e.device, e.channel, e.topic, e.kind, e.events, e.action)).encode() + e.payload)
    return h.hexdigest()


@pytest.mark.parametrize("name", shipped_scenarios())
def test_same_seed_same_night_and_another_seed_another(name: str) -> None:
    assert digest(name, 11) == digest(name, 11)
    assert digest(name, 11) != digest(name, 12)


def test_same_seed_same_night_in_another_process() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", DIGEST, "normal-night", "4"], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == digest("normal-night", 4)


def test_the_stream_is_in_time_order_and_within_the_night() -> None:
    scenario = load_scenario("normal-night")
    times = [e.t for e in Night(scenario).emissions()]
    assert times == sorted(times)
    assert scenario.start_utc.timestamp() - 1 <= times[0] and times[-1] <= scenario.end_utc.timestamp() + 60


def test_every_device_of_the_campus_emits() -> None:
    scenario = load_scenario("normal-night")
    counted = tally(Night(scenario).emissions())
    assert counted.by_channel.keys() >= {"mqtt", "line", "wand", "modbus"}
    emitting = {e.device for e in Night(scenario).emissions()}
    assert emitting == {d.device for d in scenario.devices}


@pytest.mark.parametrize("name", ["school-week", "dst-fall-back", "dst-spring-forward", "holiday-day"])
def test_nights_off_the_november_tuesday_stream_in_order_within_their_span(name: str) -> None:
    scenario = load_scenario(name)
    times = [e.t for e in Night(scenario).emissions()]
    start, end = scenario.start_utc.timestamp(), scenario.end_utc.timestamp()
    assert times == sorted(times) and start <= times[0] and times[-1] <= end
    # hours of the night by the sun, not by the wall clock: a week is 7 x 24 h less 8 h,
    # the fall-back night (19:00-08:00) 13 wall hours + 1, the spring-forward night 13 - 1, a day 24
    assert (end - start) / 3600 == {"school-week": 160, "dst-fall-back": 14, "dst-spring-forward": 12, "holiday-day": 24}[name]


def test_a_week_walks_every_round_of_every_night() -> None:
    scenario = load_scenario("school-week")
    taps = [e for e in Night(scenario).emissions() if e.device == "patrol-reader-1" and e.kind == "data"]
    # 7 nights (Monday to Sunday night) x 2 rounds x 4 checkpoints
    assert len(taps) == 7 * 2 * 4
