"""Guards walk the gateway's own routes: taps in order, before each deadline, skips and
late rounds as injected (across a daylight-saving change too); a wand's batches, uploaded
hours later at one docking or one per round, read by the real dock driver."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.drivers.patrol_wand import PatrolWandDevice, PatrolWandDriver
from simulators.base import WAND
from simulators.guards import guard_taps, rounds_in_night, wand_upload
from simulators.patrol_wand import deliver
from simulators.timeline import Night
from tests.support.scenarios import ROUTE, scenario
from warden.clock import ManualClock
from warden.events import Event, PatrolTap, TapSource

PERIMETER = {"id": "perimeter", "checkpoints": ["cp-a", "cp-b", "cp-c"], "rounds": ["03:30"]}


def night(**parts: object):  # type: ignore[no-untyped-def]
    return scenario(
        devices=[{"type": "patrol_reader", "device": "reader-1", "room": "A-GATE"},
                 {"type": "wand_dock", "device": "dock-1", "room": "A-GATE"}],
        guards=[{"id": "guard-lee", "route": "night-round", "reader": "reader-1"},
                {"id": "guard-kim", "route": "perimeter", "wand": "W07", "dock": "dock-1", "dock_at": "06:30"}],
        rules={"patrol": {"routes": [ROUTE, PERIMETER]}, "deadman": {"heartbeats_count": False}},
        **parts,
    )


def test_rounds_are_the_routes_own_and_taps_meet_every_deadline() -> None:
    s = night()
    rounds = rounds_in_night(s, s.route("night-round"))
    assert [r.key for r in rounds] == ["night-round:2026-11-17T23:30", "night-round:2026-11-18T02:00"]
    taps = guard_taps(s, s.guard("guard-lee"), seed=3)
    assert [t.tag for t in taps] == ["cp-1", "cp-2", "cp-3", "cp-4"] * 2
    for rnd, walked in zip(rounds, (taps[:4], taps[4:])):
        times = [t.t for t in walked]
        assert times == sorted(times)
        assert all(rnd.start - 600 < t <= deadline - 90 for t, deadline in zip(times, rnd.deadlines))


def test_skips_leave_out_a_checkpoint_or_a_round() -> None:
    s = night(incidents=[{"type": "skip_checkpoint", "guard": "guard-lee", "round": "02:00", "tag": "cp-3"},
                         {"type": "skip_round", "guard": "guard-kim", "round": "03:30"}])
    assert [t.tag for t in guard_taps(s, s.guard("guard-lee"), seed=3)] == ["cp-1", "cp-2", "cp-3", "cp-4", "cp-1", "cp-2", "cp-4"]
    assert guard_taps(s, s.guard("guard-kim"), seed=3) == []


def test_a_wand_batch_is_read_by_the_dock_driver_with_the_original_times(tmp_path: Path) -> None:
    s = night()
    taps = guard_taps(s, s.guard("guard-kim"), seed=3)
    upload = wand_upload(s, s.guard("guard-kim"), taps)
    assert upload in [e for e in Night(s, 3).emissions() if e.channel == WAND]
    assert upload.t - max(t.t for t in taps) > 2 * 3600  # docked hours after the round
    deliver(tmp_path, upload.topic, upload.payload)
    emitted: list[Event] = []
    config = PatrolWandDevice(driver="patrol_wand", id="dock-1", spool_dir=tmp_path)
    PatrolWandDriver(config, "riverside", emitted.append, ManualClock(s.end_utc)).scan()
    assert [(e.tag, e.event_time.timestamp(), e.source) for e in emitted if isinstance(e, PatrolTap)] == [
        (t.tag, t.t, TapSource.WAND) for t in taps
    ]


# --------------------------------------------------------------------------- late rounds, docks per round, several nights


def test_a_round_walked_40_minutes_late_has_every_tap_shifted_by_40_minutes() -> None:
    on_time = night()
    late = night(incidents=[{"type": "late_round", "guard": "guard-lee", "round": "23:30", "minutes": 40}])
    before = guard_taps(on_time, on_time.guard("guard-lee"), seed=3)
    after = guard_taps(late, late.guard("guard-lee"), seed=3)
    assert [t.tag for t in after] == [t.tag for t in before]
    # the 23:30 round: 40 min = 2 400 s later, tap for tap; the 02:00 round as it was
    assert [b.t - a.t for a, b in zip(before, after)] == [2400.0] * 4 + [0.0] * 4


def test_a_round_started_at_the_second_0230_of_the_fall_back_night() -> None:
    route = {"id": "night-round", "checkpoints": ["cp-1", "cp-2", "cp-3"], "rounds": ["23:30", "02:30"]}

    def walked(start_at: str) -> list[float]:
        s = scenario(start="2026-10-24T16:00:00", end="2026-10-25T08:00:00",
                     devices=[{"type": "patrol_reader", "device": "reader-1", "room": "A-GATE"}],
                     guards=[{"id": "guard-lee", "route": "night-round", "reader": "reader-1", "jitter_seconds": 0}],
                     incidents=[{"type": "late_round", "guard": "guard-lee", "round": "02:30", "start_at": start_at}],
                     rules={"patrol": {"routes": [route]}, "deadman": {"heartbeats_count": False}})
        rnd = rounds_in_night(s, s.route("night-round"))[1]
        # the round is due at the first 02:30, CEST (+02:00): 00:30 UTC
        assert (rnd.key, rnd.start) == ("night-round:2026-10-25T02:30", utc_ts(2026, 10, 25, 0, 30))
        return [t.t for t in guard_taps(s, s.guard("guard-lee"), seed=3)][3:]

    first, second = walked("2026-10-25T02:30:00+02:00"), walked("2026-10-25T02:30:00+01:00")
    # the second 02:30 (CET, +01:00) is 01:30 UTC, one hour after the first
    assert [b - a for a, b in zip(first, second)] == [3600.0] * 3
    # no jitter: the first checkpoint 2 min after the start, then every 4 min
    assert second == [utc_ts(2026, 10, 25, 1, 32), utc_ts(2026, 10, 25, 1, 36), utc_ts(2026, 10, 25, 1, 40)]


def test_each_round_is_uploaded_at_its_own_dock_time(tmp_path: Path) -> None:
    s = scenario(
        devices=[{"type": "wand_dock", "device": "dock-1", "room": "A-GATE"}],
        guards=[{"id": "guard-kim", "route": "night-round", "wand": "W07", "dock": "dock-1",
                 "dock_at": {"23:30": "00:40", "02:00": "06:10"}}],
        rules={"patrol": {"routes": [ROUTE]}, "deadman": {"heartbeats_count": False}},
    )
    taps = guard_taps(s, s.guard("guard-kim"), seed=3)
    uploads = [e for e in Night(s, 3).emissions() if e.channel == WAND]
    # 00:40 and 06:10 local (CET, +01:00) are 23:40 and 05:10 UTC
    assert [e.t for e in uploads] == [utc_ts(2026, 11, 17, 23, 40), utc_ts(2026, 11, 18, 5, 10)]
    assert [e.events for e in uploads] == [4, 4]
    for upload in uploads:
        deliver(tmp_path, upload.topic, upload.payload)
    emitted: list[Event] = []
    config = PatrolWandDevice(driver="patrol_wand", id="dock-1", spool_dir=tmp_path)
    PatrolWandDriver(config, "riverside", emitted.append, ManualClock(s.end_utc)).scan()
    read = [(e.tag, e.event_time.timestamp()) for e in emitted if isinstance(e, PatrolTap)]
    assert sorted(read, key=lambda r: r[1]) == [(t.tag, t.t) for t in taps]
    assert [json.loads(u.payload)["taps"][0]["seq"] for u in uploads] == [1, 5]  # the wand counts on


def test_a_docking_uploads_everything_on_the_wand_whichever_round_it_was_meant_for() -> None:
    s = scenario(
        devices=[{"type": "wand_dock", "device": "dock-1", "room": "A-GATE"}],
        guards=[{"id": "guard-kim", "route": "night-round", "wand": "W07", "dock": "dock-1",
                 "dock_at": {"23:30": "03:00", "02:00": "05:30"}}],
        rules={"patrol": {"routes": [ROUTE]}, "deadman": {"heartbeats_count": False}},
    )
    uploads = [e for e in Night(s, 3).emissions() if e.channel == WAND]
    # docked at 03:00 local (02:00 UTC), after both rounds were walked: all 8 taps go then,
    # and at 05:30 the wand is empty: no batch
    assert [(e.t, e.events) for e in uploads] == [(utc_ts(2026, 11, 18, 2, 0), 8)]


def test_a_wand_docked_every_morning_of_a_three_night_scenario() -> None:
    s = night(start="2026-11-16T16:00:00", end="2026-11-19T08:00:00")  # Monday to Thursday morning
    uploads = [e for e in Night(s, 3).emissions() if e.channel == WAND]
    # the perimeter round at 03:30 each night, docked at 06:30 local (05:30 UTC) the same morning
    assert [e.t for e in uploads] == [utc_ts(2026, 11, d, 5, 30) for d in (17, 18, 19)]
    assert [e.events for e in uploads] == [3, 3, 3]


def utc_ts(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()


def test_a_round_shifted_out_of_the_night_is_refused() -> None:
    s = night(end="2026-11-18T02:30:00",
              incidents=[{"type": "late_round", "guard": "guard-lee", "round": "02:00", "minutes": 30}])
    with pytest.raises(ValueError, match="guard-lee: round night-round:2026-11-18T02:00 shifted out of the night"):
        guard_taps(s, s.guard("guard-lee"), seed=3)
