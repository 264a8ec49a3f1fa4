"""The patrol wand driver: the documented format, and the driver against the wand simulator."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.patrol_wand import PatrolWandDevice, PatrolWandDriver, parse_batch, tap_event_id
from simulators.patrol_wand import PatrolWandSim
from tests.support.wait import wait_for
from warden.clock import ManualClock
from warden.events import Event, PatrolTap, TapSource, stable_event_id

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "patrol-wand.md"
SITE = "riverside"
ROUND = datetime(2026, 11, 17, 23, 30, tzinfo=timezone.utc)
DOCKED = datetime(2026, 11, 18, 6, 55, 12, tzinfo=timezone.utc)  # hours after the round


def documented_example() -> bytes:
    match = re.search(r"## Document\n\n```json\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, "docs/protocols/patrol-wand.md lost its example"
    return match.group(1).encode()


def test_the_documented_example_parses_to_the_documented_taps() -> None:
    batch = parse_batch(documented_example())
    assert batch.wand == "W07" and batch.bad_taps == []
    assert [(t.seq, t.tag, t.guard, t.time.isoformat()) for t in batch.taps] == [
        (41, "CP-NORTH-03", "G007", "2026-11-17T23:31:05+00:00"),
        (42, "CP-GATE", None, "2026-11-18T00:02:40+00:00"),
    ]
    assert tap_event_id(SITE, "W07", batch.taps[0]) == stable_event_id(SITE, "wand", "W07", 41, "2026-11-17T23:31:05+00:00")


def test_the_simulator_writes_what_the_doc_describes() -> None:
    wand = PatrolWandSim("W07", first_seq=41)
    wand.tap("CP-NORTH-03", "G007", datetime(2026, 11, 17, 23, 31, 5, tzinfo=timezone.utc))
    wand.tap("CP-GATE", None, datetime(2026, 11, 18, 0, 2, 40, tzinfo=timezone.utc))
    assert json.loads(wand.batch(DOCKED)) == json.loads(documented_example())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[]", "bad_batch"),
        (b'{"format": "warden.wand-batch", "version": 2, "wand": "W07", "taps": []}', "bad_batch"),
        (b'{"format": "other", "version": 1, "wand": "W07", "taps": []}', "bad_batch"),
        (b'{"format": "warden.wand-batch", "version": 1, "taps": []}', "bad_batch"),
        (b'{"format": "warden.wand-batch", "version": 1, "wand": "W 07", "taps": []}', "bad_batch"),
        (b'{"format": "warden.wand-batch", "version": 1, "wand": "W07", "taps": {}}', "bad_batch"),
    ],
)
def test_whole_file_faults_are_named(data: bytes, reason: str) -> None:
    from agent.drivers.patrol_wand import BatchError

    with pytest.raises(BatchError) as caught:
        parse_batch(data)
    assert caught.value.reason == reason


def test_bad_taps_are_listed_and_the_good_ones_kept() -> None:
    document = {
        "format": "warden.wand-batch",
        "version": 1,
        "wand": "W07",
        "firmware": "2.1",  # unknown fields are a vendor's business
        "taps": [
            {"seq": 1, "tag": "CP-1", "time": "2026-11-17T23:31:05Z"},
            {"seq": 2, "tag": "CP-2", "time": "2026-11-17T23:32:05"},  # no zone
            {"seq": -1, "tag": "CP-3", "time": "2026-11-17T23:33:05Z"},
            {"seq": 4, "tag": "", "time": "2026-11-17T23:34:05Z"},
            {"seq": 5, "tag": "CP-5", "time": "2026-11-17T23:35:05+01:00"},
        ],
    }
    batch = parse_batch(json.dumps(document).encode())
    assert [t.seq for t in batch.taps] == [1, 5]
    assert batch.taps[1].time == datetime(2026, 11, 17, 22, 35, 5, tzinfo=timezone.utc)
    assert [index for index, _ in batch.bad_taps] == [1, 2, 3]
    assert "time" in batch.bad_taps[0][1]


# --------------------------------------------------------------------------- driver


class Harness:
    """The driver scanning in a thread on a hand-moved clock: one advance, one scan."""

    def __init__(self, spool: Path, **overrides: Any) -> None:
        self.config = PatrolWandDevice.model_validate(
            {"driver": "patrol_wand", "id": "dock-1", "spool_dir": str(spool), "poll_seconds": 2, **overrides}
        )
        self.clock = ManualClock(DOCKED + timedelta(seconds=30))
        self.events: queue.Queue[Event] = queue.Queue()
        self.driver = PatrolWandDriver(self.config, SITE, self.events.put, self.clock)
        self.stop = threading.Event()
        self.scans = 0
        self.thread = threading.Thread(target=self.driver.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def taps(self, count: int) -> list[PatrolTap]:
        """Advance the clock (one scan) until `count` taps came out."""
        got: list[PatrolTap] = []
        deadline = 50
        while len(got) < count and deadline:
            self.clock.advance(timedelta(seconds=2))
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                deadline -= 1
                continue
            assert isinstance(event, PatrolTap)
            got.append(event)
        assert len(got) == count, f"got {len(got)} of {count} taps"
        return got

    def wait_handled(self, batches: int) -> None:
        def handled() -> bool:
            self.clock.advance(timedelta(seconds=2))
            return self.driver.batches + sum(self.driver.counters.errors.values()) >= batches

        wait_for(handled, what=f"{batches} batch files handled")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "driver did not stop"


@pytest.fixture
def harness() -> Iterator[Any]:
    started: list[Harness] = []

    def start(spool: Path, **overrides: Any) -> Harness:
        started.append(Harness(spool, **overrides))
        return started[-1]

    yield start
    for h in started:
        h.close()


def test_a_late_batch_keeps_the_original_tap_times(harness: Any, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    h = harness(spool)
    wand = PatrolWandSim("W07", first_seq=100)
    stored = [wand.tap(f"CP-{n}", "G007", ROUND + timedelta(minutes=7 * n)) for n in range(5)]
    path = wand.dock(spool, DOCKED)

    taps = h.taps(5)
    assert [t.event_time for t in taps] == [s.time for s in stored]  # hours before the upload
    assert len({t.receive_time for t in taps}) == 1 and taps[0].receive_time > DOCKED  # read in one scan, after docking
    first = taps[0]
    assert (first.site, first.device, first.reader, first.tag, first.guard, first.source) == (
        SITE, "dock-1", "W07", "CP-0", "G007", TapSource.WAND
    )
    assert [t.id for t in taps] == [stable_event_id(SITE, "wand", "W07", s.seq, s.time.isoformat()) for s in stored]
    wait_for(lambda: (spool / "done" / path.name).exists() and not path.exists(), what="batch moved to done/")
    assert h.driver.counters.events == 5 and h.driver.counters.errors == {}


def test_a_re_upload_gives_the_same_ids(harness: Any, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    h = harness(spool, keep_files=False)
    wand = PatrolWandSim("W07")
    for n in range(3):
        wand.tap(f"CP-{n}", None, ROUND + timedelta(minutes=n))
    first_upload = wand.dock(spool, DOCKED, clear=False)  # the dock did not confirm: memory kept
    first = h.taps(3)
    wait_for(lambda: not first_upload.exists(), what="first batch deleted")

    wand.tap("CP-3", None, ROUND + timedelta(minutes=3))
    wand.dock(spool, DOCKED + timedelta(minutes=5))
    second = h.taps(4)
    assert [t.id for t in second[:3]] == [t.id for t in first]  # duplicates carry the same ids
    assert second[3].id not in {t.id for t in first}
    assert list((spool / "done").iterdir()) == []  # keep_files: false deletes handled batches


def test_unfinished_and_foreign_files_are_left_alone_and_bad_ones_rejected(
    harness: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.drivers.patrol_wand")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / ".W07-upload.json.tmp").write_text("{half a fi")  # still being written by the dock
    (spool / "README.txt").write_text("not a batch")
    (spool / "a-broken.json").write_text("{half a fi")
    (spool / "b-too-big.json").write_bytes(b" " * 2048)
    wand = PatrolWandSim("W07")
    wand.tap("CP-1", None, ROUND)
    good = wand.dock(spool, DOCKED)
    h = harness(spool, max_file_bytes=1024)

    [tap] = h.taps(1)
    assert tap.tag == "CP-1"
    h.wait_handled(3)
    assert h.driver.counters.errors == {"not_json": 1, "too_large": 1}
    assert sorted(p.name for p in (spool / "rejected").iterdir()) == ["a-broken.json", "b-too-big.json"]
    assert sorted(p.name for p in spool.iterdir() if p.is_file()) == [".W07-upload.json.tmp", "README.txt"]
    assert (spool / "done" / good.name).exists()
    logged = {r.reason: r for r in caplog.records if hasattr(r, "reason")}
    assert logged["not_json"].file == str(spool / "a-broken.json")


def test_a_file_is_only_put_away_once_its_taps_are_queued(tmp_path: Path) -> None:
    """An emit that fails (the outbox disk is full, the agent is killed) leaves the batch
    in the spool folder, so the next run forwards it again."""
    spool = tmp_path / "spool"
    wand = PatrolWandSim("W07")
    for n in range(3):
        wand.tap(f"CP-{n}", None, ROUND + timedelta(minutes=n))
    path = wand.dock(spool, DOCKED)
    config = PatrolWandDevice(driver="patrol_wand", id="dock-1", spool_dir=spool)
    queued: list[Event] = []

    def disk_full_after_two(event: Event) -> None:
        if len(queued) == 2:
            raise OSError(28, "No space left on device")
        queued.append(event)

    failing = PatrolWandDriver(config, SITE, disk_full_after_two, ManualClock(DOCKED))
    assert failing.scan() == 0
    assert failing.counters.errors == {"queue_error": 1}
    assert path.exists()

    retried: list[Event] = []
    assert PatrolWandDriver(config, SITE, retried.append, ManualClock(DOCKED)).scan() == 1
    assert [e.id for e in retried[:2]] == [e.id for e in queued]
    assert len(retried) == 3 and not path.exists()


def test_an_unreadable_spool_is_counted_and_retried(tmp_path: Path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the folder should be")
    config = PatrolWandDevice(driver="patrol_wand", id="dock-1", spool_dir=blocker)
    driver = PatrolWandDriver(config, SITE, lambda e: None, ManualClock(DOCKED))
    assert driver.scan() == 0 and driver.scan() == 0
    assert driver.counters.errors == {"spool_error": 2}
    os.remove(blocker)
    assert driver.scan() == 0 and (blocker / "done").is_dir()
