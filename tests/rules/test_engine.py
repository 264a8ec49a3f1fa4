from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rules.alerts import AlertSignal, SignalAction
from rules.config import RulesConfig
from rules.engine import RuleEngine, build_rules
from warden.config import SiteConfig
from warden.events import (
    DeviceState,
    DeviceStatus,
    DoorAction,
    DoorEvent,
    Event,
    PatrolTap,
    Quantity,
    Reading,
    stable_event_id,
)

BERLIN = ZoneInfo("Europe/Berlin")

SITE = SiteConfig.model_validate(
    {
        "id": "school",
        "timezone": "Europe/Berlin",
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "A", "rooms": [{"id": "A-204", "schedule": "school-day", "devices": ["ac-204"]}]}],
    }
)
CONFIG = RulesConfig.model_validate({"ac_after_hours": {"grace_minutes": 10}})


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(timezone.utc)


def power(at: datetime, watts: float, site: str = "school") -> Reading:
    return Reading(
        id=stable_event_id(site, "ac-204", at.isoformat()),
        site=site,
        device="ac-204",
        event_time=at,
        quantity=Quantity.POWER,
        value=watts,
        unit="W",
    )


def run(engine: RuleEngine, start: datetime, minutes: range, watts: float = 1200) -> list[AlertSignal]:
    signals: list[AlertSignal] = []
    for minute in minutes:
        signals += engine.on_event(power(start + timedelta(minutes=minute), watts))
    return signals


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(SITE, CONFIG)


def test_builds_ac_after_hours_with_the_configured_parameters(engine: RuleEngine) -> None:
    assert [rule.name for rule in engine.rules] == ["ac_after_hours", "water", "doors", "patrol", "deadman"]
    signals = run(engine, local("2026-03-03 19:00"), range(0, 11, 5))
    assert [s.action for s in signals] == [SignalAction.RAISE]  # grace 10 min, not the default 15
    assert signals[0].at == local("2026-03-03 19:10")


def test_events_of_other_sites_are_ignored(engine: RuleEngine) -> None:
    start = local("2026-03-03 19:00")
    for minute in range(0, 30, 5):
        assert engine.on_event(power(start + timedelta(minutes=minute), 1200, site="other")) == []
    assert engine.stats()["other_site"] == 6
    assert engine.stats()["events"] == 0


def test_tick_resolves_at_schedule_start(engine: RuleEngine) -> None:
    run(engine, local("2026-03-04 07:00"), range(0, 16, 5))
    assert engine.on_tick(local("2026-03-04 07:29")) == []
    [signal] = engine.on_tick(local("2026-03-04 07:31"))
    assert signal.action is SignalAction.RESOLVE
    assert signal.at == local("2026-03-04 07:30")


def test_snapshot_is_json_and_restores_into_a_new_engine(engine: RuleEngine) -> None:
    start = local("2026-03-03 19:00")
    run(engine, start, range(0, 11, 5))
    snapshot = json.loads(json.dumps(engine.snapshot()))
    assert set(snapshot) == {"ac_after_hours", "water", "doors", "patrol", "deadman"}

    restarted = RuleEngine(SITE, CONFIG)
    restarted.restore(snapshot)
    [signal] = run(restarted, start, range(15, 16))
    assert signal.action is SignalAction.UPDATE
    assert signal.details["since"] == start.isoformat()
    assert signal.details["wasted_kwh"] == pytest.approx(0.3)


def test_restore_ignores_rules_it_does_not_know(engine: RuleEngine) -> None:
    engine.restore({"retired_rule": {"anything": 1}})
    assert engine.snapshot()["ac_after_hours"]["episodes"] == {}


def test_a_family_whose_state_cannot_be_read_starts_empty_and_the_others_carry_on(engine: RuleEngine) -> None:
    # 19:00-19:10 at 1.2 kW after the 18:00 end: the 10-minute grace has passed, an episode is open.
    start = local("2026-03-03 19:00")
    run(engine, start, range(0, 11, 5))
    snapshot = json.loads(json.dumps(engine.snapshot()))
    snapshot["doors"] = {"version": 999, "doors": {}}  # written by a newer release, say
    restarted = RuleEngine(SITE, CONFIG)
    restarted.restore(snapshot)
    assert restarted.stats()["errors"] == 1 and "doors" in restarted.stats()["last_error"]
    assert restarted.snapshot()["doors"]["doors"] == {}  # started empty, and working
    [signal] = run(restarted, start, range(15, 16))  # the AC's episode carried over: an update, not a new raise
    assert signal.action is SignalAction.UPDATE


def test_stats_include_rule_counters(engine: RuleEngine) -> None:
    start = local("2026-03-03 19:00")
    run(engine, start, range(0, 11, 5))
    engine.on_event(power(start, 1200))  # older than the last reading
    stats = engine.stats()
    assert stats["events"] == 4
    assert stats["rules"]["ac_after_hours"]["out_of_order"] == 1


class _Broken:
    name = "broken"
    reads = frozenset({"reading"})
    stats: dict[str, int] = {}

    def on_event(self, event: Event) -> list[AlertSignal]:
        raise RuntimeError("bug")

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        raise RuntimeError("bug")

    def state_snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, snapshot: dict[str, Any]) -> None:
        pass


def test_a_failing_rule_does_not_stop_the_others() -> None:
    engine = RuleEngine(SITE, CONFIG, rules=(_Broken(), *build_rules(SITE, CONFIG)))
    signals = run(engine, local("2026-03-03 19:00"), range(0, 11, 5))
    assert [s.action for s in signals] == [SignalAction.RAISE]
    assert engine.on_tick(local("2026-03-03 19:20")) == []
    stats = engine.stats()
    assert stats["errors"] == 4
    assert stats["last_error"] == "broken: RuntimeError('bug')"


class _Recorder(_Broken):
    """Keeps the kinds of the events it was given."""

    reads = frozenset({"door"})

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_event(self, event: Event) -> list[AlertSignal]:
        self.seen.append(event.kind)
        return []


def test_an_event_goes_only_to_the_rules_that_read_its_kind() -> None:
    recorder = _Recorder()
    engine = RuleEngine(SITE, CONFIG, rules=(recorder,))
    at = local("2026-03-03 19:00")
    door = DoorEvent(id=stable_event_id("door-1", at), site="school", device="door-1", event_time=at, door="A-main", action=DoorAction.OPENED)
    engine.on_event(power(at, 1200))
    engine.on_event(door)
    assert recorder.seen == ["door"]
    assert engine.stats()["events"] == 2


def test_every_family_snapshots_to_json_and_restores_the_same_state() -> None:
    config = RulesConfig.model_validate(
        {"patrol": {"routes": [{"id": "north", "checkpoints": ["cp-1", "cp-2"], "rounds": ["23:30"]}]}}
    )
    engine = RuleEngine(SITE, config)
    start = local("2026-03-03 23:00")
    engine.on_tick(start)
    common = {"site": "school", "event_time": start + timedelta(minutes=35)}
    events: list[Event] = [
        power(start, 1200),
        Reading(id="flow-event-1", device="wm-1", quantity=Quantity.FLOW, value=3.0, unit="L/min", **common),
        Reading(id="wet-event-1", device="wet-1", quantity=Quantity.WET, value=1, unit="1", **common),
        DoorEvent(id="door-event-1", device="ctl-1", action=DoorAction.FORCED, door="gate", **common),
        PatrolTap(id="tap-event-1", device="reader-1", reader="reader-1", tag="cp-1", **common),
        DeviceStatus(id="status-event-1", device="agent-a", state=DeviceState.OFFLINE, **common),
    ]
    for event in events:
        engine.on_event(event)
    engine.on_tick(start + timedelta(hours=1))
    snapshot = json.loads(json.dumps(engine.snapshot()))
    assert set(snapshot) == {"ac_after_hours", "water", "doors", "patrol", "deadman"}

    restarted = RuleEngine(SITE, config)
    restarted.restore(snapshot)
    assert json.loads(json.dumps(restarted.snapshot())) == snapshot
    assert restarted.rounds_state() == engine.rounds_state()
