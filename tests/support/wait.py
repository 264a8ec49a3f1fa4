"""Waiting on a condition that has no event to block on (a file's row count, a counter)."""

from __future__ import annotations

import time
from typing import Callable

#: The first and the longest pause between two looks: a condition that holds within a few
#: milliseconds (most do, on a pipeline without Nagle stalls) is seen at once, a slow one is
#: asked no more often than every 20 ms, as before.
FIRST_INTERVAL, MAX_INTERVAL = 0.001, 0.02


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    interval = FIRST_INTERVAL
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling interval, not synchronisation: the condition decides
        interval = min(2 * interval, MAX_INTERVAL)
