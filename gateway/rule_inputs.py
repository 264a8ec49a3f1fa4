"""What the rules are fed from one batch, in one order, live and on replay.

The gateway persists the rules as a snapshot plus a journal of the batches since
(gateway/store.py). A journal entry is the batch's accepted messages as they arrived
(topic, payload, which of their events were fresh) and its tick. Replaying an entry runs
the same `feed()` as the live batch did, so the rules rebuilt after a crash or a failed
batch are exactly the rules that committed; their signals were committed then, so the
replay drops them.

Payloads are journalled as received (they passed validation once): an entry is a JSON
header line (tick; each message's topic, payload length and fresh events) followed by
the payloads' bytes, so the hot path neither re-encodes nor escapes them. Entries of
earlier releases, all JSON with the payloads as strings, replay as well.

A campus bridge's up/down (warden/v1/_bridge/<site>/state) is a message of the batch too,
journalled as the fact the rules heard: `{"up": ..., "at": <gateway clock>}`, so a replay
hears the link change at the time the live rules did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rules.alerts import AlertSignal
from rules.engine import RuleEngine
from rules.sites import SiteRules
from warden.events import Event, decode_events
from warden.topics import parse_agent_topic, parse_bridge_topic

#: The channel of a campus bridge's state, beside an agent's "events" and "status".
LINK = "link"


@dataclass(frozen=True)
class AcceptedMessage:
    """One valid MQTT message, and which of its events the gateway had not seen before."""

    topic: str
    payload: bytes
    agent: str
    channel: str  # "events", "status" or LINK (then agent is "" and the payload a link fact)
    events: list[Event]
    fresh: list[Event]


def link_message(topic: str, up: bool, at: datetime) -> AcceptedMessage:
    """A campus bridge's state as the rules hear it: up or down at `at` on the gateway's clock."""
    payload = json.dumps({"up": up, "at": at.isoformat()}).encode()
    return AcceptedMessage(topic, payload, "", LINK, [], [])


def bridge_up(payload: bytes) -> bool | None:
    """Mosquitto's bridge notification: b"1" up, b"0" down; None for anything else."""
    return {b"1": True, b"0": False}.get(payload.strip())


def feed(
    engine: RuleEngine | SiteRules, messages: Sequence[AcceptedMessage], tick_at: datetime | None
) -> list[AlertSignal]:
    """The batch's order: which agent forwards which device and the campus links' changes,
    then the fresh events, then time."""
    for message in messages:
        if message.channel == LINK:
            fact = json.loads(message.payload)
            site = parse_bridge_topic(message.topic)
            assert site is not None, message.topic
            engine.on_link(bool(fact["up"]), datetime.fromisoformat(fact["at"]), site)
        elif message.channel == "events":
            for site, device in {(event.site, event.device) for event in message.events}:
                engine.learn_agent(device, message.agent, site)  # one alert, not one per device, if it goes away
    signals = [signal for message in messages for event in message.fresh for signal in engine.on_event(event)]
    if tick_at is not None:
        signals += engine.on_tick(tick_at)
    return signals


def journal_entry(messages: Sequence[AcceptedMessage], tick_at: datetime | None) -> bytes:
    header = json.dumps({
        "tick": tick_at.isoformat() if tick_at else None,
        "messages": [[m.topic, len(m.payload), _fresh_positions(m)] for m in messages],
    })  # fmt: skip
    return b"\n".join([header.encode(), *(m.payload for m in messages)])


def replay(engine: RuleEngine | SiteRules, entry: bytes | str) -> None:
    """Feed a journalled batch to `engine` again; its signals were committed with it."""
    if isinstance(entry, str):  # an entry of an earlier release: payloads inside the JSON
        document = json.loads(entry)
        messages = [_message(topic, payload.encode(), fresh) for topic, payload, fresh in document["messages"]]
    else:
        header, _, payloads = entry.partition(b"\n")
        document = json.loads(header)
        messages, start = [], 0
        for topic, size, fresh in document["messages"]:
            messages.append(_message(topic, payloads[start : start + size], fresh))
            start += size + 1  # and the newline between payloads
    tick = document["tick"]
    feed(engine, messages, datetime.fromisoformat(tick) if tick else None)


def _fresh_positions(message: AcceptedMessage) -> list[int] | None:
    """None when every event was fresh (the usual case), else the fresh ones' positions."""
    if len(message.fresh) == len(message.events):
        return None
    fresh = {id(event) for event in message.fresh}
    return [i for i, event in enumerate(message.events) if id(event) in fresh]


def _message(topic: str, payload: bytes, fresh: list[int] | None) -> AcceptedMessage:
    if parse_bridge_topic(topic) is not None:
        return AcceptedMessage(topic, payload, "", LINK, [], [])
    where = parse_agent_topic(topic)
    if where is None:
        raise ValueError(f"journal holds a message on {topic!r}, which is not an agent topic")
    events = decode_events(payload)  # no clock check: it passed when it arrived
    chosen = events if fresh is None else [events[i] for i in fresh]
    return AcceptedMessage(topic, payload, where.agent, where.channel, events, chosen)
