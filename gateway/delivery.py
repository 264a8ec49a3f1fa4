"""What every notification sink shares: the failure it raises, the change as JSON, and a
URL safe to log. Its own module so that the sinks of gateway/notify.py and the group bots
of gateway/bots.py both import it, and not each other."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from gateway.store import AlertChange
from warden.i18n import Message, Names, say


class DeliveryError(Exception):
    """A failed delivery; `retryable` when trying again later may succeed (a 503, a
    refused connection), not when the receiver said no for good (a 404, bad credentials)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def change_document(change: AlertChange) -> dict[str, Any]:
    """The change as JSON-ready data: what machine-facing sinks send, and what the
    outbox keeps (the alert as it was at the change, not as it is at delivery)."""
    document = {"change": change.action, "note": change.note, "alert": json.loads(json.dumps(asdict(change.alert), default=str))}
    if isinstance(change.note, Message):  # so a change read back from the outbox is told in any language
        document["note_message"] = {"id": change.note.id, "params": change.note.params}
    return document


def note_text(change: AlertChange, locale: str = "en", names: Names | None = None) -> str:
    """The change's note in `locale` where a message made it (an escalation's), else as written."""
    return say(change.note, locale, names) if isinstance(change.note, Message) else change.note


def safe_target(url: str) -> str:
    """scheme://host:port of a URL: enough to tell sinks apart, without path, query or
    user info, where webhook secrets live."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
