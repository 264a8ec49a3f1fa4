"""The pausable simulated clock, on a fake monotonic clock: no real time passes in these tests."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

import simulators.clock as clock_module
from simulators.clock import PausableClock

T0 = datetime(2026, 11, 17, 15, 0, tzinfo=timezone.utc)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(clock_module.time, "monotonic", fake)
    return fake


def test_it_stands_still_until_run_then_runs_at_its_speed(mono: FakeMonotonic) -> None:
    clock = PausableClock(T0, speed=3600)
    mono.now += 5
    assert clock.now() == T0 and not clock.running
    clock.run()
    mono.now += 2
    assert clock.now() == T0 + timedelta(hours=2)


def test_a_pause_stops_it_without_a_jump_and_resume_goes_on_from_there(mono: FakeMonotonic) -> None:
    clock = PausableClock(T0, speed=60)
    clock.run()
    mono.now += 10
    assert clock.pause() == T0 + timedelta(minutes=10)
    mono.now += 1000  # a broker restart, say
    assert clock.now() == T0 + timedelta(minutes=10)
    clock.resume()
    mono.now += 1
    assert clock.now() == T0 + timedelta(minutes=11)


def test_a_wait_returns_at_once_when_stopped_or_when_no_time_is_asked(mono: FakeMonotonic) -> None:
    clock = PausableClock(T0, speed=1000)
    clock.run()
    stop = threading.Event()
    assert clock.wait(stop, 0) is False
    stop.set()
    assert clock.wait(stop, 3600) is True


def test_a_waiter_on_a_paused_clock_stays_until_it_resumes() -> None:
    clock = PausableClock(T0, speed=1_000_000)
    clock.run()
    clock.pause()
    done = threading.Event()
    def wait_a_minute() -> None:
        clock.wait(threading.Event(), 60)
        done.set()

    waiter = threading.Thread(target=wait_a_minute, daemon=True)
    waiter.start()
    assert not done.wait(0.3)  # paused: a simulated minute never passes
    clock.resume()
    assert done.wait(5)


def test_it_refuses_a_naive_start_or_a_speed_of_zero() -> None:
    with pytest.raises(ValueError):
        PausableClock(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        PausableClock(T0, speed=0)
