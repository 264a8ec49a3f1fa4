"""The rule journal: a batch journalled and replayed feeds the rules exactly as it did live."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from gateway.rule_inputs import AcceptedMessage, feed, journal_entry, replay
from rules.config import RulesConfig
from rules.engine import RuleEngine
from warden.config import SiteConfig
from warden.events import Reading, decode_events, encode_events, stable_event_id

EVENING = datetime(2026, 11, 17, 18, 0, tzinfo=timezone.utc)  # 19:00 in Berlin, after school
SITE = SiteConfig.model_validate({
    "id": "riverside", "timezone": "Europe/Berlin",
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [{"id": "A", "rooms": [{"id": "A-204", "schedule": "school-day", "devices": ["ac-a204"]}]}],
})  # fmt: skip
TOPIC = "warden/v1/riverside/agent-a/events"


def message(payload: bytes, fresh_from: int = 0) -> AcceptedMessage:
    events = decode_events(payload)
    return AcceptedMessage(TOPIC, payload, "agent-a", "events", events, events[fresh_from:])


def readings(minutes: range) -> list[Reading]:
    return [
        Reading(id=stable_event_id("ac-a204", m), site="riverside", device="ac-a204",
                event_time=EVENING + timedelta(minutes=m), quantity="power", value=1500.0, unit="W")
        for m in minutes
    ]  # fmt: skip


def test_a_replayed_entry_rebuilds_the_live_rules() -> None:
    pretty = json.dumps(json.loads(encode_events(readings(range(0, 20, 5)))), indent=2).encode()  # newlines inside
    messages = [message(pretty), message(encode_events(readings(range(20, 40, 5))), fresh_from=1)]
    tick = EVENING + timedelta(minutes=45)
    live = RuleEngine(SITE, RulesConfig())
    signals = feed(live, messages, tick)

    rebuilt = RuleEngine(SITE, RulesConfig())
    replay(rebuilt, journal_entry(messages, tick))

    assert signals, "the AC left on raised an alert live"
    assert rebuilt.snapshot() == live.snapshot()


def test_an_entry_of_an_earlier_release_still_replays() -> None:
    payload = encode_events(readings(range(0, 30, 5)))
    live = RuleEngine(SITE, RulesConfig())
    feed(live, [message(payload)], None)
    old_entry = json.dumps({"tick": None, "messages": [[TOPIC, payload.decode(), None]]})  # all JSON, payload as text

    rebuilt = RuleEngine(SITE, RulesConfig())
    replay(rebuilt, old_entry)

    assert rebuilt.snapshot() == live.snapshot()
    assert live.snapshot() != RuleEngine(SITE, RulesConfig()).snapshot()
