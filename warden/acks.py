"""The gateway's delivery acknowledgement to an agent: one owner of its wire format.

After a batch is durably stored (state.db committed, its history written), the gateway
publishes, retained, on the sending agent's ack topic (`warden.topics.ack_topic`) the
ids of that agent's events it took: stored, already seen (a duplicate), or refused one
by one as dead letters. The agent deletes an outbox row only when its id comes back
(agent/uplink.py); anything unconfirmed is sent again, and the gateway drops copies by
event id. So acks are per event id, not a sequence watermark: they need nothing added
to the event or batch format (`warden.events.encode_events`), survive an agent's outbox
being recreated, and a lost ack only costs a resend (docs/events.md#acknowledgement).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class DeliveryAck(BaseModel):
    """`{"v": 1, "ids": [...]}`: event ids the gateway has durably taken in."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = 1
    ids: list[str]


def encode_ack(ids: list[str]) -> bytes:
    return DeliveryAck(ids=ids).model_dump_json().encode()


def decode_ack(payload: bytes) -> list[str]:
    """The acknowledged ids; empty for a payload that is not an ack (never raises: a
    bad ack must not stop the agent, it only leaves rows to be resent)."""
    try:
        return DeliveryAck.model_validate_json(payload).ids
    except ValidationError:
        return []
