"""What rules say about the world: signals that raise, update or resolve an alert.

A rule never holds the alert itself. It emits AlertSignals keyed by (site, rule,
subject); the gateway's alert store applies them so that there is at most one open
alert per key, however many signals arrive and however close together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

from warden.events import Event
from warden.i18n import Message


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Order of seriousness: info 0 < warning 1 < critical 2."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(Severity)}


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


#: What can happen to an alert, as its history and notifications name it.
AlertChangeKind = Literal["opened", "updated", "acknowledged", "escalated", "resolved"]


class SignalAction(StrEnum):
    RAISE = "raise"  # open an alert, or update the open one for the same key
    UPDATE = "update"  # refresh details of the open alert (no-op if none is open)
    RESOLVE = "resolve"  # the condition cleared


@dataclass(frozen=True)
class AlertSignal:
    site: str
    rule: str
    subject: str  # what the alert is about: a room, device, route or door id
    action: SignalAction
    at: datetime  # event time that produced the signal (UTC)
    severity: Severity = Severity.WARNING
    message: str = ""  # English; a warden.i18n.Message also fills message_id and params
    details: dict[str, float | str] = field(default_factory=dict)
    message_id: str = ""  # the gettext msgid (English template) the message was built from
    params: dict[str, object] = field(default_factory=dict)  # its parameters: facts, shown in any locale later

    def __post_init__(self) -> None:
        if isinstance(self.message, Message) and not self.message_id:
            object.__setattr__(self, "message_id", self.message.id)
            object.__setattr__(self, "params", dict(self.message.params))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.site, self.rule, self.subject)


class Rule(Protocol):
    """A rule family: pure logic over events and time, no I/O."""

    name: str
    reads: frozenset[str]  # the event kinds on_event() looks at; the engine sends it no others

    def on_event(self, event: Event) -> list[AlertSignal]:
        """React to one validated event (in event time)."""
        ...

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """React to the passing of time with no event (timeouts, windows closing)."""
        ...
