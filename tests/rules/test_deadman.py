from __future__ import annotations

import json
from datetime import datetime

import pytest

from rules.alerts import AlertSignal, Severity, SignalAction
from rules.config import RulesConfig
from rules.deadman import AGENT, DEVICE, DeadmanConfig, DeadmanRule
from rules.engine import RuleEngine
from tests.rules.helpers import actions, local
from warden.config import SiteConfig
from warden.events import DeviceState, DeviceStatus, DoorAction, DoorEvent, Event, Quantity, Reading, stable_event_id

RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

SITE = SiteConfig.model_validate(
    {
        "id": "school",
        "timezone": "Europe/Berlin",
        "buildings": [{"id": "A", "rooms": [{"id": "A-204", "devices": ["ac-1", "ac-2", "wm-1", "ctl-door"]}]}],
    }
)
#: An agent's offline status raises at once here (the default waits a few minutes).
AT_ONCE = {"agent_offline_minutes": 0}
AGENTS = DeadmanConfig.model_validate({"agents": {"agent-a": ["ac-1", "ac-2", "wm-1"]}, **AT_ONCE})


def at(hhmm: str) -> datetime:
    return local(f"2026-03-03 {hhmm}")


def power(device: str, when: datetime) -> Reading:
    return Reading(
        id=stable_event_id("school", device, when.isoformat()), site="school", device=device,
        event_time=when, quantity=Quantity.POWER, value=100, unit="W",
    )


def status(device: str, when: datetime, state: DeviceState) -> DeviceStatus:
    return DeviceStatus(id=stable_event_id("school", device, state, when.isoformat()), site="school", device=device, event_time=when, state=state)


def feed(rule: DeadmanRule, *events: Event) -> list[AlertSignal]:
    return [signal for event in events for signal in rule.on_event(event)]


def ticks(rule: DeadmanRule, *times: str) -> list[AlertSignal]:
    return [signal for hhmm in times for signal in rule.on_tick(at(hhmm))]


@pytest.fixture
def rule() -> DeadmanRule:
    deadman = DeadmanRule(SITE, DeadmanConfig.model_validate(AT_ONCE))
    deadman.on_tick(at("09:00"))
    return deadman


# --------------------------------------------------------------------------- one device


def test_a_silent_device_raises_once_at_its_deadline_and_resolves_when_it_speaks(rule: DeadmanRule) -> None:
    feed(rule, power("ac-1", at("10:00")))
    assert ticks(rule, "10:14:59") == []
    [raised] = ticks(rule, "10:20")
    assert (raised.rule, raised.subject, raised.action, raised.at) == (DEVICE, "ac-1", RAISE, at("10:15"))
    assert raised.severity is Severity.WARNING
    assert raised.message == "No data from device ac-1 since 10:00 (expected at least every 15 min)"
    assert (raised.details["building"], raised.details["room"]) == ("A", "A-204")
    assert ticks(rule, "10:30", "11:00") == []
    [resolved] = feed(rule, power("ac-1", at("10:40")))
    assert (resolved.action, resolved.at) == (RESOLVE, at("10:40"))
    assert resolved.message == "Device ac-1 spoke again at 10:40 after 40 min of silence"


def test_older_events_do_not_refresh_and_newer_late_ones_do(rule: DeadmanRule) -> None:
    feed(rule, power("ac-1", at("10:00")), power("ac-1", at("09:50")))
    assert actions(ticks(rule, "10:15")) == [RAISE]
    assert actions(feed(rule, power("ac-1", at("10:10")))) == [RESOLVE]  # late data: it was not silent after all


def test_the_interval_is_the_shortest_among_the_kinds_a_device_sends() -> None:
    rule = DeadmanRule(SITE, DeadmanConfig(heartbeats_count=True))
    rule.on_tick(at("09:00"))
    feed(rule, power("ac-1", at("10:00")), status("ac-1", at("10:00"), DeviceState.HEARTBEAT))
    [raised] = ticks(rule, "10:05")
    assert raised.message.endswith("(expected at least every 5 min)")


def test_door_controllers_are_not_watched_by_default(rule: DeadmanRule) -> None:
    door = DoorEvent(id="door-event-1", site="school", device="ctl-door", event_time=at("10:00"), action=DoorAction.OPENED, door="d1")
    feed(rule, door)
    assert ticks(rule, "18:00") == []


def test_per_device_intervals_and_exclusions() -> None:
    rule = DeadmanRule(SITE, DeadmanConfig.model_validate({"devices": {"ac-1": 60, "ac-2": None, "wm-1": 30}}))
    rule.on_tick(at("09:00"))
    feed(rule, power("ac-1", at("10:00")), power("ac-2", at("10:00")))
    [never] = ticks(rule, "10:59")  # wm-1 never spoke: configured, so watched from the first tick
    assert (never.subject, never.at) == ("wm-1", at("09:30"))
    assert never.message == "No data from device wm-1 at all (expected at least every 30 min)"
    assert [(s.subject, s.at) for s in ticks(rule, "11:00", "23:00")] == [("ac-1", at("11:00"))]


def test_heartbeats_do_not_count_by_default() -> None:
    """The agent heartbeats for every device it serves, so by default a heartbeat is no
    sign that the device itself spoke: a silent meter is still found."""
    rule = DeadmanRule(SITE, DeadmanConfig())
    rule.on_tick(at("09:00"))
    feed(rule, power("ac-1", at("10:00")), status("ac-1", at("10:10"), DeviceState.HEARTBEAT))
    [raised] = rule.on_tick(at("10:15"))
    assert raised.at == at("10:15")


def test_a_fresh_rule_fed_old_data_gives_every_device_one_interval_first() -> None:
    rule = DeadmanRule(SITE, DeadmanConfig())
    feed(rule, power("ac-1", at("00:00")))  # replayed from long ago
    assert rule.on_tick(at("12:00")) == []
    [raised] = rule.on_tick(at("12:15"))
    assert raised.at == at("12:15")


# --------------------------------------------------------------------------- agents: no storms


def test_an_offline_agent_is_one_alert_and_holds_back_its_devices() -> None:
    rule = DeadmanRule(SITE, AGENTS)
    rule.on_tick(at("09:00"))
    feed(rule, *[power(d, at("10:00")) for d in ("ac-1", "ac-2", "wm-1")])
    [offline] = feed(rule, status("agent-a", at("10:02"), DeviceState.OFFLINE))
    assert (offline.rule, offline.subject, offline.action, offline.severity) == (AGENT, "agent-a", RAISE, Severity.CRITICAL)
    assert offline.details["reason"] == "offline" and offline.details["devices"] == 3
    assert ticks(rule, "10:30", "11:00") == []
    assert rule.stats["held_back"] > 0
    [back] = feed(rule, status("agent-a", at("11:05"), DeviceState.ONLINE))
    assert (back.action, back.at) == (RESOLVE, at("11:05"))
    feed(rule, power("ac-1", at("11:06")), power("ac-2", at("11:06")))  # its buffer is replayed
    # ... and they read on every minute: had they too fallen silent after 11:06, all three would
    # be silent together, the agent's silence (one agent alert at 11:21), not wm-1's.
    feed(rule, *[power(d, at(f"11:{m:02d}")) for m in range(7, 20) for d in ("ac-1", "ac-2")])
    assert ticks(rule, "11:19") == []
    [silent] = ticks(rule, "11:20")  # wm-1 still silent 15 min after the agent came back
    assert (silent.subject, silent.at) == ("wm-1", at("11:20"))


def test_all_devices_of_an_agent_silent_together_is_one_alert() -> None:
    rule = DeadmanRule(SITE, AGENTS)
    rule.on_tick(at("09:00"))
    feed(rule, *[power(d, at("10:00")) for d in ("ac-1", "ac-2", "wm-1")])
    [agent] = ticks(rule, "10:15", "10:20")
    assert (agent.rule, agent.subject, agent.at) == (AGENT, "agent-a", at("10:15"))
    assert agent.message == "All 3 devices of agent agent-a silent since 10:15"
    feed(rule, power("ac-1", at("10:30")))
    # Only ac-1 is back: the agent's alert stays open and names the two still silent at once
    # (before: resolved "back" at 10:30, then ac-2 and wm-1 paged on their own at 10:45).
    [partial] = ticks(rule, "10:31")
    assert (partial.rule, partial.action, partial.at) == (AGENT, UPDATE, at("10:30"))
    assert partial.message == "2 of 3 devices of agent agent-a still silent, some back at 10:30: ac-2, wm-1"
    feed(rule, power("ac-1", at("10:40")))
    assert ticks(rule, "10:44", "10:45", "10:50") == []  # no device page under the open agent alert
    feed(rule, power("ac-2", at("10:51")), power("wm-1", at("10:52")))
    [back] = ticks(rule, "10:53")
    assert (back.rule, back.action, back.at) == (AGENT, RESOLVE, at("10:52"))  # the last of them spoke at 10:52


def test_one_silent_device_of_a_live_agent_is_its_own_alert() -> None:
    rule = DeadmanRule(SITE, AGENTS)
    rule.on_tick(at("09:00"))
    feed(rule, power("ac-1", at("10:00")), power("ac-2", at("10:10")), power("wm-1", at("10:10")))
    [device] = ticks(rule, "10:15")
    assert (device.rule, device.subject) == (DEVICE, "ac-1")


def test_without_a_mapping_an_offline_agent_holds_back_devices_of_no_known_agent(rule: DeadmanRule) -> None:
    feed(rule, power("ac-1", at("10:00")))
    [offline] = feed(rule, status("agent-x", at("10:05"), DeviceState.OFFLINE))  # not a site device: an agent
    assert offline.subject == "agent-x"
    assert ticks(rule, "11:00") == []
    feed(rule, status("agent-x", at("11:30"), DeviceState.ONLINE))
    [silent] = ticks(rule, "11:45")
    assert (silent.subject, silent.at) == ("ac-1", at("11:45"))


def test_a_learned_mapping_scopes_the_hold_back() -> None:
    engine = RuleEngine(SITE, RulesConfig.model_validate({"deadman": AT_ONCE}))
    engine.on_tick(at("09:00"))
    engine.learn_agent("ac-1", "agent-x")
    engine.learn_agent("ac-2", "agent-y")
    for device in ("ac-1", "ac-2"):
        engine.on_event(power(device, at("10:00")))
    engine.on_event(status("agent-x", at("10:05"), DeviceState.OFFLINE))
    signals = engine.on_tick(at("10:20"))
    assert [(s.rule, s.subject) for s in signals] == [(DEVICE, "ac-2")]  # ac-1 is agent-x's


# --------------------------------------------------------------------------- restart


def test_snapshot_restore_continues_the_silence(rule: DeadmanRule) -> None:
    feed(rule, power("ac-1", at("10:00")), power("ac-2", at("10:00")))
    ticks(rule, "10:10")
    restored = DeadmanRule(SITE, DeadmanConfig())
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    assert sorted(s.subject for s in ticks(restored, "10:15")) == ["ac-1", "ac-2"]
    again = DeadmanRule(SITE, DeadmanConfig())
    again.restore(json.loads(json.dumps(restored.state_snapshot())))
    assert ticks(again, "10:30") == []  # raised once, not again after a restart
    assert actions(feed(again, power("ac-1", at("10:31")))) == [RESOLVE]


def test_restore_refuses_an_unknown_version(rule: DeadmanRule) -> None:
    with pytest.raises(ValueError, match="version"):
        rule.restore({"version": 99})


def test_deadman_can_be_disabled() -> None:
    engine = RuleEngine(SITE, RulesConfig.model_validate({"deadman": {"enabled": False}}))
    assert "deadman" not in [r.name for r in engine.rules]


# --------------------------------------------------------------------------- broker restarts


def test_an_offline_status_within_agent_offline_minutes_is_no_alert() -> None:
    """A broker restart fires every agent's will (Mosquitto sends wills when it shuts
    down); the agents are back seconds later, so with a grace period that is no alert."""
    config = DeadmanConfig.model_validate({"agents": {"agent-a": ["ac-1", "ac-2"]}, "agent_offline_minutes": 5})
    rule = DeadmanRule(SITE, config)
    rule.on_tick(at("09:00"))
    feed(rule, power("ac-1", at("10:00")), power("ac-2", at("10:00")))
    will = status("agent-a", at("08:00"), DeviceState.OFFLINE)  # a will carries the time it was set
    assert feed(rule, will) == []
    assert ticks(rule, "10:04") == []
    assert feed(rule, status("agent-a", at("10:02"), DeviceState.ONLINE)) == []
    assert ticks(rule, "10:10", "10:14") == []


def test_an_agent_offline_past_agent_offline_minutes_raises_at_the_end_of_the_grace() -> None:
    config = DeadmanConfig.model_validate({"agents": {"agent-a": ["ac-1", "ac-2"]}, "agent_offline_minutes": 5})
    rule = DeadmanRule(SITE, config)
    rule.on_tick(at("09:00"))
    feed(rule, power("ac-1", at("10:00")), power("ac-2", at("10:00")))
    assert feed(rule, status("agent-a", at("08:00"), DeviceState.OFFLINE)) == []
    assert ticks(rule, "10:04") == []
    [offline] = ticks(rule, "10:05")
    assert (offline.rule, offline.action, offline.at, offline.details["reason"]) == (AGENT, RAISE, at("10:05"), "offline")
    assert ticks(rule, "10:30") == []  # its devices are held back meanwhile
    [back] = feed(rule, status("agent-a", at("10:40"), DeviceState.ONLINE))
    assert back.action == RESOLVE


def test_without_a_grace_a_lagging_tick_does_not_undo_an_offline_alert() -> None:
    rule = DeadmanRule(SITE, AGENTS)
    rule.on_tick(at("09:00"))
    feed(rule, power("ac-1", at("10:00")))
    [offline] = feed(rule, status("agent-a", at("10:02"), DeviceState.OFFLINE))
    assert offline.action == RAISE
    assert ticks(rule, "09:58") == []  # the gateway ticks behind the newest event
