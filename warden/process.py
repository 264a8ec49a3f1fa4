"""What every long-running warden process does at start-up (stop cleanly on a signal,
take its time from the system clock or from a simulation's clock file), and how a parent
stops a child process (the broker, a time-series server, a gateway under test)."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

from warden.clock import Clock
from warden.config import ConfigError


def stop_on_signal() -> threading.Event:
    """Installed first thing, so a SIGTERM during start-up still shuts down cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def clock_from(sim_clock: Path | None) -> Clock | None:
    """None (the system clock), or the simulated clock another process publishes to
    `sim_clock` (docs/simulators.md); ConfigError if that file cannot be used."""
    if sim_clock is None:
        return None
    from warden.clock import FileClock

    try:
        return FileClock(sim_clock)
    except ValueError as exc:
        raise ConfigError(f"--sim-clock: {exc}") from None


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, so the child can flush and say goodbye; SIGKILL if it has not exited
    within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
