"""Guards walk the gateway's own routes: taps in order, before each deadline, skips as
injected; a wand's batch, uploaded hours later, read by the real dock driver."""

from __future__ import annotations

from pathlib import Path

from agent.drivers.patrol_wand import PatrolWandDriver
from simulators.base import WAND
from simulators.guards import guard_taps, rounds_in_night, wand_upload
from simulators.patrol_wand import deliver
from simulators.timeline import Night
from tests.support.scenarios import ROUTE, scenario
from warden.clock import ManualClock
from warden.config import PatrolWandDevice
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
