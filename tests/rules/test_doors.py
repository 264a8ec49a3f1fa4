from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from rules.alerts import AlertSignal, Severity, SignalAction
from rules.config import RulesConfig
from rules.doors import AFTER_HOURS, DENIED, FORCED, HELD_OPEN, DoorsConfig, DoorsRule
from rules.engine import RuleEngine
from tests.rules.helpers import actions, local, of_rule
from warden.config import SiteConfig
from warden.events import DoorAction, DoorEvent, stable_event_id

RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

SITE = SiteConfig.model_validate(
    {
        "id": "school",
        "timezone": "Europe/Berlin",
        "holidays": ["2026-03-05"],
        "schedules": {
            "school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}],
            "deliveries": [{"days": "mon-sat", "hours": "06:00-20:00"}],
        },
        "buildings": [
            {
                "id": "A",
                "rooms": [
                    {"id": "A-GATE", "schedule": "school-day", "devices": ["ctl-gate"]},
                    {"id": "A-SRV", "devices": ["door-srv"]},
                ],
            }
        ],
    }
)
TUESDAY = "2026-03-03"  # a school day; Thursday 2026-03-05 is a holiday


def door(at: datetime, action: DoorAction, door_id: str = "gate-main", device: str = "ctl-gate", card: str | None = None) -> DoorEvent:
    return DoorEvent(
        id=stable_event_id("school", device, door_id, action, at.isoformat()),
        site="school",
        device=device,
        event_time=at,
        action=action,
        door=door_id,
        card=card,
    )


def feed(rule: DoorsRule, *events: DoorEvent) -> list[AlertSignal]:
    return [signal for event in events for signal in rule.on_event(event)]


@pytest.fixture
def rule() -> DoorsRule:
    return DoorsRule(SITE, DoorsConfig())


# --------------------------------------------------------------------------- held open


def test_open_without_close_raises_on_tick_at_exactly_the_limit(rule: DoorsRule) -> None:
    assert feed(rule, door(local(f"{TUESDAY} 10:00:00"), DoorAction.OPENED)) == []
    assert rule.on_tick(local(f"{TUESDAY} 10:00:59")) == []
    [raised] = rule.on_tick(local(f"{TUESDAY} 10:01:30"))
    assert (raised.rule, raised.subject, raised.action) == (HELD_OPEN, "gate-main", RAISE)
    assert raised.at == local(f"{TUESDAY} 10:01:00")
    assert raised.message == "Door gate-main held open for 60 s (opened 10:00:00)"
    assert rule.on_tick(local(f"{TUESDAY} 10:02:00")) == []
    [resolved] = feed(rule, door(local(f"{TUESDAY} 10:03:30"), DoorAction.CLOSED))
    assert (resolved.action, resolved.at) == (RESOLVE, local(f"{TUESDAY} 10:03:30"))
    assert resolved.details["seconds"] == 210
    assert resolved.message == "Door gate-main closed at 10:03:30 after 210 s open"


@pytest.mark.parametrize(("closed_after", "expected"), [(59.999, []), (60, [RAISE, RESOLVE])])
def test_the_next_event_beyond_the_limit_settles_it_without_a_tick(
    rule: DoorsRule, closed_after: float, expected: list[SignalAction]
) -> None:
    opened = local(f"{TUESDAY} 10:00:00")
    signals = feed(rule, door(opened, DoorAction.OPENED), door(opened + timedelta(seconds=closed_after), DoorAction.CLOSED))
    assert actions(signals) == expected


def test_controller_held_open_alarm_raises_at_once_and_once(rule: DoorsRule) -> None:
    feed(rule, door(local(f"{TUESDAY} 10:00:00"), DoorAction.OPENED))
    [raised] = feed(rule, door(local(f"{TUESDAY} 10:00:30"), DoorAction.HELD_OPEN))
    assert (raised.action, raised.details["source"], raised.details["seconds"]) == (RAISE, "controller", 30)
    assert feed(rule, door(local(f"{TUESDAY} 10:00:45"), DoorAction.HELD_OPEN)) == []
    assert rule.on_tick(local(f"{TUESDAY} 10:05:00")) == []
    assert actions(feed(rule, door(local(f"{TUESDAY} 10:06:00"), DoorAction.CLOSED))) == [RESOLVE]


def test_held_open_limit_per_door() -> None:
    rule = DoorsRule(SITE, DoorsConfig.model_validate({"doors": {"gate-main": {"held_open_seconds": 300}}}))
    feed(rule, door(local(f"{TUESDAY} 10:00:00"), DoorAction.OPENED))
    assert rule.on_tick(local(f"{TUESDAY} 10:04:59")) == []
    [raised] = rule.on_tick(local(f"{TUESDAY} 10:05:00"))
    assert raised.at == local(f"{TUESDAY} 10:05:00")


def test_a_stale_opened_before_the_last_close_is_ignored(rule: DoorsRule) -> None:
    feed(rule, door(local(f"{TUESDAY} 10:00:00"), DoorAction.OPENED), door(local(f"{TUESDAY} 10:00:20"), DoorAction.CLOSED))
    assert feed(rule, door(local(f"{TUESDAY} 10:00:10"), DoorAction.OPENED)) == []
    assert rule.on_tick(local(f"{TUESDAY} 11:00")) == []
    assert rule.stats["out_of_order"] == 1


# --------------------------------------------------------------------------- forced


def test_forced_is_critical_repeats_update_and_a_person_resolves_it(rule: DoorsRule) -> None:
    [raised] = feed(rule, door(local(f"{TUESDAY} 02:10:00"), DoorAction.FORCED))
    assert (raised.rule, raised.action, raised.severity) == (FORCED, RAISE, Severity.CRITICAL)
    assert raised.message == "Door gate-main forced open at 02:10:00"
    [again] = feed(rule, door(local(f"{TUESDAY} 02:10:05"), DoorAction.FORCED))
    assert (again.action, again.details["count"]) == (UPDATE, 2)
    [closed] = of_rule(feed(rule, door(local(f"{TUESDAY} 02:12:00"), DoorAction.CLOSED)), FORCED)
    assert closed.action is UPDATE
    assert closed.details["closed"] == local(f"{TUESDAY} 02:12:00").isoformat()
    assert closed.message == "Door gate-main forced open at 02:10:00, closed again at 02:12:00"  # in the order it happened
    [next_time] = feed(rule, door(local(f"{TUESDAY} 03:00:00"), DoorAction.FORCED))
    assert (next_time.action, next_time.details["count"]) == (RAISE, 1)


# --------------------------------------------------------------------------- after hours


def test_use_after_hours_is_one_alert_per_night_resolved_when_the_schedule_starts(rule: DoorsRule) -> None:
    [raised] = feed(rule, door(local(f"{TUESDAY} 19:12:00"), DoorAction.GRANTED, card="0042"))
    assert (raised.rule, raised.action, raised.subject) == (AFTER_HOURS, RAISE, "gate-main")
    assert raised.message == "Door gate-main used after hours at 19:12:00"
    [update] = feed(rule, door(local(f"{TUESDAY} 19:12:04"), DoorAction.OPENED))
    assert (update.action, update.details["granted"], update.details["opened"]) == (UPDATE, 1, 1)
    assert of_rule(rule.on_tick(local("2026-03-04 07:29:59")), AFTER_HOURS) == []
    [resolved] = of_rule(rule.on_tick(local("2026-03-04 07:30")), AFTER_HOURS)
    assert (resolved.action, resolved.at) == (RESOLVE, local("2026-03-04 07:30"))
    assert resolved.message == "Schedule of door gate-main started at 07:30; 2 door events after hours"


def test_use_during_the_schedule_is_fine(rule: DoorsRule) -> None:
    assert of_rule(feed(rule, door(local(f"{TUESDAY} 07:30"), DoorAction.GRANTED)), AFTER_HOURS) == []
    assert of_rule(feed(rule, door(local(f"{TUESDAY} 17:59:59"), DoorAction.GRANTED)), AFTER_HOURS) == []
    assert actions(feed(rule, door(local(f"{TUESDAY} 18:00"), DoorAction.GRANTED))) == [RAISE]


def test_a_holiday_is_after_hours_all_day(rule: DoorsRule) -> None:
    [raised] = feed(rule, door(local("2026-03-05 10:00"), DoorAction.GRANTED))
    assert raised.rule == AFTER_HOURS
    assert of_rule(rule.on_tick(local("2026-03-05 23:00")), AFTER_HOURS) == []
    [resolved] = of_rule(rule.on_tick(local("2026-03-06 07:30")), AFTER_HOURS)  # Friday morning
    # changed with after_hours_quiet_hours: 16 h after the only use (10:00), not at 07:30
    assert resolved.at == local("2026-03-06 02:00")


def test_a_door_in_a_room_without_schedule_is_always_after_hours(rule: DoorsRule) -> None:
    [raised] = feed(rule, door(local(f"{TUESDAY} 10:00"), DoorAction.GRANTED, door_id="door-srv", device="ctl-x"))
    assert raised.rule == AFTER_HOURS


def test_an_unlocated_door_is_not_judged_unless_configured() -> None:
    rule = DoorsRule(SITE, DoorsConfig())
    assert feed(rule, door(local(f"{TUESDAY} 23:00"), DoorAction.GRANTED, door_id="side", device="ctl-x")) == []
    assert rule.stats["unscheduled"] == 1
    configured = DoorsRule(SITE, DoorsConfig.model_validate({"doors": {"side": {"schedule": "deliveries"}}}))
    assert feed(configured, door(local(f"{TUESDAY} 19:00"), DoorAction.GRANTED, door_id="side", device="ctl-x")) == []
    assert actions(feed(configured, door(local(f"{TUESDAY} 20:00"), DoorAction.GRANTED, door_id="side", device="ctl-x"))) == [RAISE]


def test_after_hours_can_be_switched_off_per_door() -> None:
    rule = DoorsRule(SITE, DoorsConfig.model_validate({"doors": {"gate-main": {"after_hours": False}}}))
    assert feed(rule, door(local(f"{TUESDAY} 23:00"), DoorAction.GRANTED)) == []


def test_unknown_schedule_in_a_door_override_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'night'"):
        DoorsRule(SITE, DoorsConfig.model_validate({"doors": {"side": {"schedule": "night"}}}))


# --------------------------------------------------------------------------- denied cards


def test_three_denied_cards_within_five_minutes(rule: DoorsRule) -> None:
    t0 = local(f"{TUESDAY} 10:00")
    assert feed(rule, door(t0, DoorAction.DENIED, card="1"), door(t0 + timedelta(minutes=2), DoorAction.DENIED, card="2")) == []
    [raised] = feed(rule, door(t0 + timedelta(minutes=5), DoorAction.DENIED, card="3"))
    assert (raised.rule, raised.action, raised.at) == (DENIED, RAISE, t0 + timedelta(minutes=5))
    assert raised.details["count"] == 3 and raised.details["last_card"] == "3"
    [update] = feed(rule, door(t0 + timedelta(minutes=6), DoorAction.DENIED))
    assert (update.action, update.details["count"]) == (UPDATE, 4)
    assert rule.on_tick(t0 + timedelta(minutes=10, seconds=59)) == []
    [resolved] = rule.on_tick(t0 + timedelta(minutes=11))
    assert (resolved.action, resolved.at) == (RESOLVE, t0 + timedelta(minutes=11))


def test_denied_cards_spread_wider_than_the_window_do_not_raise(rule: DoorsRule) -> None:
    t0 = local(f"{TUESDAY} 10:00")
    minutes = [0, 2, 5.01, 8, 11]
    assert feed(rule, *[door(t0 + timedelta(minutes=m), DoorAction.DENIED) for m in minutes]) == []


def test_a_late_denial_completes_the_window(rule: DoorsRule) -> None:
    t0 = local(f"{TUESDAY} 10:00")
    feed(rule, door(t0, DoorAction.DENIED), door(t0 + timedelta(minutes=4), DoorAction.DENIED))
    [raised] = feed(rule, door(t0 + timedelta(minutes=2), DoorAction.DENIED))
    assert raised.at == t0 + timedelta(minutes=4)


# --------------------------------------------------------------------------- restart and engine


def test_snapshot_restore_continues_the_held_open_timer_and_the_night(rule: DoorsRule) -> None:
    feed(rule, door(local(f"{TUESDAY} 19:00:00"), DoorAction.OPENED))
    restored = DoorsRule(SITE, DoorsConfig())
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    [held] = of_rule(restored.on_tick(local(f"{TUESDAY} 19:05")), HELD_OPEN)
    assert held.at == local(f"{TUESDAY} 19:01:00")
    [after] = of_rule(restored.on_tick(local("2026-03-04 08:00")), AFTER_HOURS)
    assert (after.action, after.at) == (RESOLVE, local("2026-03-04 07:30"))


def test_restore_refuses_an_unknown_version(rule: DoorsRule) -> None:
    with pytest.raises(ValueError, match="version"):
        rule.restore({"version": 99})


def test_engine_builds_doors_and_can_disable_them() -> None:
    engine = RuleEngine(SITE, RulesConfig())
    [signal] = engine.on_event(door(local(f"{TUESDAY} 02:10"), DoorAction.FORCED))
    assert signal.rule == FORCED
    assert "doors" not in [r.name for r in RuleEngine(SITE, RulesConfig.model_validate({"doors": {"enabled": False}})).rules]


def test_worked_example_from_the_docs(rule: DoorsRule) -> None:
    steps = [
        (door(local(f"{TUESDAY} 19:12:00"), DoorAction.GRANTED, card="0042"), [(AFTER_HOURS, RAISE)]),
        (door(local(f"{TUESDAY} 19:12:04"), DoorAction.OPENED), [(AFTER_HOURS, UPDATE)]),
        (local(f"{TUESDAY} 19:13:04"), [(HELD_OPEN, RAISE)]),
        (door(local(f"{TUESDAY} 19:15:34"), DoorAction.CLOSED), [(HELD_OPEN, RESOLVE)]),
        (local("2026-03-04 07:30"), [(AFTER_HOURS, RESOLVE)]),
        (door(local("2026-03-05 10:00"), DoorAction.GRANTED), [(AFTER_HOURS, RAISE)]),
        # changed with after_hours_quiet_hours (16): resolved 16 h after the holiday's only
        # use, Friday 02:00, before the schedule starts at 07:30 (it used to wait for 07:30)
        (local("2026-03-06 07:30"), [(AFTER_HOURS, RESOLVE)]),
    ]
    for step, expected in steps:
        signals = rule.on_tick(step) if isinstance(step, datetime) else rule.on_event(step)
        assert [(s.rule, s.action) for s in signals] == expected, step
    assert signals[0].at == local("2026-03-06 02:00")
