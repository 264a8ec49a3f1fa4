"""Display names in alert messages (issue 19): a room, device, door, checkpoint or route
with a name reads "name (id)"; without one, the id alone, as before. Expected messages are
written out by hand from the scenario."""

from __future__ import annotations

from datetime import datetime, timedelta

from rules.config import RulesConfig
from rules.deadman import DeadmanConfig, DeadmanRule
from rules.doors import DoorsConfig, DoorsRule
from rules.patrol import PatrolConfig, PatrolRule
from tests.rules.helpers import local
from warden.config import SiteConfig
from warden.events import DoorAction, DoorEvent, Quantity, Reading, stable_event_id
from warden.i18n import localise, site_names
from warden.names import checkpoint_label, device_label, label, room_label, route_label

SITE = SiteConfig.model_validate({
    "id": "school", "timezone": "Europe/Berlin",
    "buildings": [{"id": "A", "name": "教学楼", "rooms": [
        {"id": "A-204", "name": "科学实验室", "devices": ["ac-1", "ac-2"], "device_names": {"ac-1": "空调"}},
        {"id": "A-GATE", "devices": ["ctl-gate"]},
    ]}],
})  # fmt: skip


def at(hhmm: str) -> datetime:
    return local(f"2026-03-03 {hhmm}")


def test_labels_fall_back_to_the_id() -> None:
    assert label("科学实验室", "A-204") == "科学实验室 (A-204)"
    assert label("", "A-204") == label("  ", "A-204") == label("A-204", "A-204") == "A-204"
    assert room_label(SITE, "A-204") == "科学实验室 (A-204)"
    assert room_label(SITE, "A-GATE") == "A-GATE"  # no name given
    assert device_label(SITE, "ac-1") == "空调 (ac-1) in 科学实验室"
    assert device_label(SITE, "ac-2") == "ac-2 in 科学实验室"  # the room's name still says where
    assert device_label(SITE, "ctl-gate") == "ctl-gate"  # neither has a name
    assert device_label(SITE, "not-listed") == "not-listed"


def test_a_silent_device_is_named_with_its_room() -> None:
    rule = DeadmanRule(SITE, DeadmanConfig())
    rule.on_tick(at("09:00"))
    rule.on_event(Reading(id=stable_event_id("school", "ac-1", "10:00"), site="school", device="ac-1",
                          event_time=at("10:00"), quantity=Quantity.POWER, value=100, unit="W"))  # fmt: skip
    [raised] = rule.on_tick(at("10:20"))  # power readings: every 15 min expected, so due at 10:15
    # The rule keeps the id in its message; readers see the name beside it (warden.i18n.localise).
    assert raised.message == "No data from device ac-1 since 10:00 (expected at least every 15 min)"
    shown = localise(raised.message, raised.message_id, raised.params, "en", site_names(SITE))
    assert shown == "No data from device 空调 (ac-1) since 10:00 (expected at least every 15 min)"
    assert raised.subject == "ac-1"  # ids stay the alert's key


def test_a_named_door() -> None:
    doors = DoorsConfig.model_validate({"doors": {"gate-main": {"name": "东门"}}})
    rule = DoorsRule(SITE, doors)
    forced = at("10:00:05")
    [raised] = rule.on_event(DoorEvent(id=stable_event_id("school", "ctl-gate", "f", forced.isoformat()), site="school",
                                       device="ctl-gate", event_time=forced, action=DoorAction.FORCED, door="gate-main"))  # fmt: skip
    assert raised.message == "Door gate-main forced open at 10:00:05"
    rules = RulesConfig(doors=doors)
    shown = localise(raised.message, raised.message_id, raised.params, "en", site_names(SITE, rules))
    assert shown == "Door 东门 (gate-main) forced open at 10:00:05"
    assert raised.subject == "gate-main"


def test_a_named_route_and_checkpoint() -> None:
    config = PatrolConfig.model_validate({"routes": [{
        "id": "north", "name": "夜间巡逻", "rounds": ["23:30"], "allowance_minutes": 10,
        "checkpoints": [{"tag": "cp-gate", "name": "东门岗"}, "cp-hall"],
    }]})  # fmt: skip
    route = config.routes[0]
    assert route_label(route) == "夜间巡逻 (north)"
    assert checkpoint_label(route, "cp-gate") == "东门岗 (cp-gate)"
    assert checkpoint_label(route, "cp-hall") == "cp-hall"
    rule = PatrolRule(SITE, config)
    rule.on_tick(at("23:00"))
    signals = rule.on_tick(at("23:00") + timedelta(hours=1))  # 00:00: past both deadlines (23:40, 23:50)
    names = site_names(SITE, RulesConfig(patrol=config))
    messages = " | ".join(localise(s.message, s.message_id, s.params, "en", names) for s in signals)
    assert "on route 夜间巡逻 (north)" in messages, messages
