"""The MQTT topic tree (docs/topics.md). Built and parsed only here."""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "warden/v1"
#: A site or agent id as the event schema allows it (warden.events.Identifier).
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

#: Events from every agent of every site (what the gateway account may read; docs/topics.md).
ALL_EVENTS = f"{ROOT}/+/+/events"
#: Availability of every agent (retained, last will "offline").
ALL_STATUS = f"{ROOT}/+/+/status"


def site_events(site: str) -> str:
    """What a gateway serving `site` ingests: events from every agent of that site only, so
    gateways of several sites share one broker without seeing each other's traffic."""
    return f"{ROOT}/{site}/+/events"


def site_status(site: str) -> str:
    return f"{ROOT}/{site}/+/status"


def events_topic(site: str, agent: str) -> str:
    return f"{ROOT}/{site}/{agent}/events"


def status_topic(site: str, agent: str) -> str:
    return f"{ROOT}/{site}/{agent}/status"


def ack_topic(site: str, agent: str) -> str:
    """The gateway's retained delivery acknowledgement to one agent (warden/acks.py)."""
    return f"{ROOT}/{site}/{agent}/ack"


def alerts_topic(site: str) -> str:
    return f"{ROOT}/{site}/alerts"


def gateway_sync_topic(client_id: str) -> str:
    """Where a gateway sends itself a marker behind its session's backlog (gateway/catch_up.py)."""
    return f"{ROOT}/_gateway/{client_id}/sync"


def bridge_state_topic(site: str) -> str:
    """A campus bridge's own state (deploy/bridge/edge-bridge.conf `notification_topic`):
    Mosquitto publishes "1" retained when the bridge connects and leaves "0" as its last will."""
    return f"{ROOT}/_bridge/{site}/state"


def parse_bridge_topic(topic: str) -> str | None:
    """The site of `warden/v1/_bridge/<site>/state`; None if the topic is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{ROOT}/_bridge" or parts[4] != "state":
        return None
    return parts[3] if _IDENTIFIER.fullmatch(parts[3]) else None


@dataclass(frozen=True)
class AgentTopic:
    site: str
    agent: str
    channel: str  # "events" or "status"


def parse_agent_topic(topic: str) -> AgentTopic | None:
    """Split `warden/v1/<site>/<agent>/<channel>`; None if the topic is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != ROOT or parts[4] not in ("events", "status"):
        return None
    if not (_IDENTIFIER.fullmatch(parts[2]) and _IDENTIFIER.fullmatch(parts[3])):
        return None  # e.g. a space: no agent's site or id (warden.events.Identifier), so bad_topic
    return AgentTopic(site=parts[2], agent=parts[3], channel=parts[4])
