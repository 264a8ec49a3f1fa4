"""A noisy serial line (issue 17, hole 7): every drop is counted by reason, exactly, but the
log gets the first drop of each reason and then one summary per interval, not a WARNING a
line (11 MB of noise gave 41 538 WARNING lines before)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from agent.drivers.patrol_line import NOISE_SUMMARY_SECONDS, NoiseLog
from simulators.patrol_reader import PatrolReaderSim
from tests.agent.test_patrol_line import LINES, Harness, harness  # noqa: F401 - fixture

GOOD = LINES[0]  # a valid tap, checksum *23
BAD_CHECKSUM = GOOD.replace(b"*23", b"*24")
NOISE = b"noise \x07\xff\r\n"  # no `$`: one garbage run, ended by the `$` of the next frame


def test_a_flood_of_noise_on_a_real_pty_is_counted_exactly_and_logged_a_bounded_number_of_times(
    harness: Callable[..., Harness], caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.drivers.patrol_line")
    pairs = 20_000
    with PatrolReaderSim("R01") as sim:
        h = harness(sim.port)
        h.wait_open()
        sim.write_raw((NOISE + BAD_CHECKSUM) * pairs)  # about 1.3 MB
        sim.write_raw(GOOD)  # the marker: once it is an event, everything before was handled
        assert h.next_event().event_time == datetime(2024, 3, 1, 22, 15, 7, tzinfo=timezone.utc)
        # Each pair is one garbage run and one bad frame.
        assert h.driver.counters.errors == {"garbage": pairs, "bad_checksum": pairs}
        h.close()  # closing the port writes the summary of what was not logged yet
    records = [r for r in caplog.records if r.name == "agent.drivers.patrol_line"]
    firsts = [r for r in records if r.reason != "summary"]
    summaries = [r for r in records if r.reason == "summary"]
    assert sorted(r.reason for r in firsts) == ["bad_checksum", "garbage"]
    # The run takes far less than the summary interval: only the closing summary, unless
    # a slow machine crossed one interval boundary.
    assert 1 <= len(summaries) <= 2, [r.getMessage() for r in summaries]
    summed: dict[str, int] = {}
    for record in summaries:
        for reason, n in record.dropped.items():
            summed[reason] = summed.get(reason, 0) + n
    assert summed == {"garbage": pairs - 1, "bad_checksum": pairs - 1}  # all but the first of each


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.drivers.patrol_line")
    clock = _Clock()
    noise = NoiseLog("patrol line", "/dev/ttyX", "gate-line", monotonic=clock)
    # 5 intervals of 60 s, 1 000 drops a second, all `garbage`.
    for second in range(5 * int(NOISE_SUMMARY_SECONDS)):
        clock.now = float(second)
        for _ in range(1000):
            noise.dropped("garbage", b"x")
    clock.now = 300.0
    noise.flush()
    records = caplog.records
    # The first drop, then a summary on the first drop at t = 60, 120, 180, 240, and the flush at 300.
    assert [r.reason for r in records] == ["garbage"] + ["summary"] * 5
    assert sum(r.dropped["garbage"] for r in records[1:]) == 300 * 1000 - 1
