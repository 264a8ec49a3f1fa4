"""End-to-end delivery acknowledgements from the gateway to its agents (issue 17, item 8).

The broker's PUBACK only says the broker has a message; a broker that loses its state
(killed with no persistence, replaced, or holding no session for a gateway that never
started) loses what agents had already deleted. So after each batch is committed
(state.db, and the history it waited for), the gateway tells each agent which of its
event ids it has taken in, retained on `warden/v1/<site>/<agent>/ack`, and the agent
keeps its outbox rows until then (agent/uplink.py). Wire format: warden/acks.py.

Acknowledged: every event of the agent's events topic that the batch took in, whether
stored, already seen before (a resend), or refused and kept as a dead letter (resending
it would be refused again). Status messages are not acknowledged: the agent publishes
them directly, not from its outbox.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import paho.mqtt.client as mqtt

from gateway.store import DeadLetter
from warden import topics
from warden.acks import encode_ack
from warden.events import MAX_PAYLOAD_BYTES
from warden.topics import AgentTopic

log = logging.getLogger(__name__)

#: Ids per ack message: bounds what the broker keeps retained per agent (about 40 KB) when
#: a catch-up batch holds tens of thousands of one agent's events.
ACK_CHUNK_IDS = 1000


class DeliveryAcks:
    """Collects a committed batch's event ids per agent and publishes them."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        #: Off only for benchmarks measuring what acknowledging costs (bench/ingest.py).
        self.enabled = True
        self.published = 0  # ack messages handed to the client

    def acknowledge(self, taken: Iterable[tuple[AgentTopic, Iterable[str]]], refused: Iterable[DeadLetter]) -> None:
        """Collect and publish; never raises: the batch is committed whatever happens
        here, and an ack that is not sent only costs the agent a resend."""
        try:
            self.publish(self.collect(taken, refused))
        except Exception:
            log.exception("could not publish delivery acknowledgements; the agents will resend")

    def collect(self, taken: Iterable[tuple[AgentTopic, Iterable[str]]], refused: Iterable[DeadLetter]) -> dict[str, list[str]]:
        """Ack topic -> ids, for the events channel of each sending agent."""
        acks: dict[str, list[str]] = {}
        for where, ids in taken:
            if where.channel == "events":
                acks.setdefault(topics.ack_topic(where.site, where.agent), []).extend(ids)
        for letter in refused:
            where = topics.parse_agent_topic(letter.topic)
            if where is not None and where.channel == "events":
                ids = _ids_in(letter.payload)
                if ids:
                    acks.setdefault(topics.ack_topic(where.site, where.agent), []).extend(ids)
        return acks

    def publish(self, acks: dict[str, list[str]]) -> None:
        """Call only once the batch they name is committed. QoS 1 and retained: an agent
        that (re)subscribes gets the latest; one that missed earlier acks resends, and
        the copies are acknowledged again."""
        if not self.enabled:
            return
        for topic, ids in acks.items():
            chunks = [ids[n : n + ACK_CHUNK_IDS] for n in range(0, len(ids), ACK_CHUNK_IDS)]
            for n, chunk in enumerate(chunks):  # only the last is retained: the broker keeps one per agent
                self.client.publish(topic, encode_ack(chunk), qos=1, retain=n == len(chunks) - 1)
                self.published += 1
        if acks:
            log.debug("delivery acknowledged", extra={"agents": len(acks), "events": sum(map(len, acks.values()))})


def _ids_in(payload: bytes) -> list[str]:
    """The event ids a refused payload names, best effort: a batch refused whole (e.g. a
    site mismatch) is acknowledged too, or its agent would resend it for ever."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return []
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth (a fuzzer's favourite)
        return []
    items = body.get("events") if isinstance(body, dict) and "events" in body else [body]
    if not isinstance(items, list):
        return []
    return [item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
