"""The pausable simulated clock, on a fake monotonic clock (no real time passes in most of
these tests), and the file other processes read it from (warden.clock.FileClock)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import simulators.clock as clock_module
from simulators.clock import PausableClock
from warden.clock import FileClock

T0 = datetime(2026, 11, 17, 15, 0, tzinfo=timezone.utc)


class FakeSeconds:
    """Stands in for time.monotonic or time.time: moves only when a test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> FakeSeconds:
    fake = FakeSeconds(100.0)
    monkeypatch.setattr(clock_module.time, "monotonic", fake)
    return fake


def test_it_stands_still_until_run_then_runs_at_its_speed(mono: FakeSeconds) -> None:
    clock = PausableClock(T0, speed=3600)
    mono.now += 5
    assert clock.now() == T0 and not clock.running
    clock.run()
    mono.now += 2
    assert clock.now() == T0 + timedelta(hours=2)


def test_a_pause_stops_it_without_a_jump_and_resume_goes_on_from_there(mono: FakeSeconds) -> None:
    clock = PausableClock(T0, speed=60)
    clock.run()
    mono.now += 10
    assert clock.pause() == T0 + timedelta(minutes=10)
    mono.now += 1000  # a broker restart, say
    assert clock.now() == T0 + timedelta(minutes=10)
    clock.resume()
    mono.now += 1
    assert clock.now() == T0 + timedelta(minutes=11)


def test_a_wait_returns_at_once_when_stopped_or_when_no_time_is_asked(mono: FakeSeconds) -> None:
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


# --------------------------------------------------------------------------- the clock file


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeSeconds:
    """The wall clock: a published clock runs on it, so readers in other processes agree."""
    fake = FakeSeconds(1_800_000_000.0)
    monkeypatch.setattr(clock_module.time, "time", fake)
    return fake


def test_a_file_clock_follows_the_published_clock_through_runs_pauses_and_jumps(wall: FakeSeconds, tmp_path: Path) -> None:
    path = tmp_path / "night.clock"
    writer = PausableClock(T0, speed=60, publish=path)
    reader = FileClock(path, check_seconds=0)
    wall.now += 5
    assert reader.now() == T0  # published standing still
    writer.run()
    wall.now += 10
    assert reader.now() == writer.now() == T0 + timedelta(minutes=10)
    writer.pause()
    wall.now += 1000
    assert reader.now() == T0 + timedelta(minutes=10)
    later = T0 + timedelta(days=1)
    writer.jump(later)
    assert reader.now() == later and not writer.running
    writer.resume()
    writer.jump(T0)  # back, still running
    wall.now += 1
    assert reader.now() == writer.now() == T0 + timedelta(minutes=1)


def test_a_file_clock_waiter_stands_still_while_paused_and_goes_on_when_resumed(tmp_path: Path) -> None:
    writer = PausableClock(T0, speed=1_000_000, publish=tmp_path / "night.clock")
    reader = FileClock(tmp_path / "night.clock")
    done = threading.Event()

    def wait_a_minute() -> None:
        reader.wait(threading.Event(), 60)
        done.set()

    threading.Thread(target=wait_a_minute, daemon=True).start()
    assert not done.wait(0.3)  # paused: a simulated minute never passes
    writer.run()
    assert done.wait(5)


def test_a_file_clock_waiter_sees_a_jump_and_a_stop(tmp_path: Path) -> None:
    writer = PausableClock(T0, speed=1, publish=tmp_path / "night.clock")
    writer.run()
    reader = FileClock(tmp_path / "night.clock")
    read, done = threading.Event(), threading.Event()
    current = reader._current

    def spy() -> object:  # tells the test the waiter has read the time it waits from
        state = current()
        read.set()
        return state

    reader._current = spy  # type: ignore[method-assign]
    threading.Thread(target=lambda: reader.wait(threading.Event(), 3600) or done.set(), daemon=True).start()
    assert read.wait(5)
    writer.jump(T0 + timedelta(hours=2))  # an hour of real time is not waited for
    assert done.wait(5)
    stop = threading.Event()
    stop.set()
    writer.pause()
    assert reader.wait(stop, 3600) is True  # a paused clock does not hold up a shutdown


def test_a_file_clock_refuses_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no simulated clock file"):
        FileClock(tmp_path / "missing.clock")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a warden.sim-clock file"):
        FileClock(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not a simulated clock file"):
        FileClock(tmp_path / "broken.json")
