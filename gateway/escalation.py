"""When a live alert climbs the ladder of people (docs/rules.md#alert-lifecycle).

First-responder ownership: an open alert belongs to level 0 until someone acknowledges
it. Not acknowledged within its rule's `ack_minutes`, it escalates: the next level is
notified. Escalation raises who is told, never the severity: that is the rule's judgement
of the condition, and a note left unread is no more dangerous for it. Acknowledged but not resolved within `response_hours` (the
24-hour response promise), it escalates too. Each level restarts the clock, so every
rung of the ladder gets the full deadline to react, also after a gateway outage.

Deadlines are judged on the gateway's clock (processing time), not event time: they
measure how long people have known about an alert, and people learn of it when the
gateway raises it, however old the data behind it. The decision is a pure function of
the stored alert and the time; the store applies it once per level (gateway/store.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

from gateway.config import EscalationConfig
from gateway.store import Alert, Escalation
from rules.alerts import AlertState
from warden.i18n import N_, Message

if TYPE_CHECKING:
    from gateway.workorders import WorkOrder


#: Why an alert or a repair request went up the ladder: message ids (warden/locales) whose
#: English is the text the history and the notifications always carried.
NOT_ACKNOWLEDGED = N_("not acknowledged within {minutes} min: escalated to level {level}")
NOT_RESOLVED = N_("not resolved within {hours} h of acknowledgement: escalated to level {level}")
NOT_TAKEN = N_("not taken within {hours} h: escalated to level {level}")
NOT_DONE = N_("not done within {hours} h: escalated to level {level}")
_TEMPLATES = {"taken": NOT_TAKEN, "done": NOT_DONE}


class EscalationPolicy:
    def __init__(self, config: EscalationConfig) -> None:
        self.config = config

    def due(self, alert: Alert, now: datetime) -> Escalation | None:
        """The escalation `alert` has earned by `now`, or None."""
        if not self.config.enabled or alert.escalation_level >= self.config.top_level:
            return None
        ack_minutes, response_hours = self.config.deadlines(alert.rule)
        if alert.state is AlertState.OPEN and ack_minutes is not None:
            since = _latest(alert.raised_at or alert.opened_at, alert.escalated_at)
            if now >= since + timedelta(minutes=ack_minutes):
                return Escalation("not_acknowledged", Message(NOT_ACKNOWLEDGED, minutes=_minutes(ack_minutes), level=alert.escalation_level + 1))
        if alert.state is AlertState.ACKNOWLEDGED and response_hours is not None and alert.acknowledged_at:
            since = _latest(alert.acknowledged_at, alert.escalated_at)
            if now >= since + timedelta(hours=response_hours):
                return Escalation("not_resolved", Message(NOT_RESOLVED, hours=_minutes(response_hours), level=alert.escalation_level + 1))
        return None

    def due_work_order(self, order: WorkOrder, now: datetime) -> Escalation | None:
        """The escalation an open work order has earned by `now`: not taken by its `take_by`,
        or not done by its `resolve_by` (deadlines fixed on the order, gateway/workorders.py);
        on the same ladder as alerts, each level again getting the order's full time."""
        from gateway.workorders import ACTIVE, UNTAKEN

        if not self.config.enabled or order.escalation_level >= self.config.top_level:
            return None
        if order.state in UNTAKEN:
            hours, reason, what = order.take_hours, "not_taken", "taken"
        elif order.state in ACTIVE:
            hours, reason, what = order.resolve_hours, "not_resolved", "done"
        else:
            return None
        due = datetime.fromisoformat(str(deadline_of(order)))
        if order.escalated_at and datetime.fromisoformat(order.escalated_at) >= due:  # escalated for this deadline
            due = datetime.fromisoformat(order.escalated_at) + timedelta(hours=hours)
        if now < due:
            return None
        return Escalation(reason, Message(_TEMPLATES[what], hours=_minutes(hours), level=order.escalation_level + 1))

    def decider(self, now: datetime) -> Callable[[Alert], Escalation | None]:
        """`due` at a fixed `now`, in the shape StateStore.escalate takes."""
        return lambda alert: self.due(alert, now)


def deadline_of(order: WorkOrder) -> str | None:
    """The deadline an order runs against: `take_by` until someone takes it, then `resolve_by`;
    None once nobody has to act (done, closed, cancelled)."""
    from gateway.workorders import ACTIVE, UNTAKEN

    return order.take_by if order.state in UNTAKEN else order.resolve_by if order.state in ACTIVE else None


def overdue(order: WorkOrder, now: datetime) -> bool:
    """Past the deadline it runs against now (escalated or not): what the overdue gauge
    counts. (The daily report judges a past instant from the order's times: workorders.overdue_at.)"""
    deadline = deadline_of(order)
    return deadline is not None and now >= datetime.fromisoformat(deadline)


def _latest(first: str, second: str | None) -> datetime:
    times = [datetime.fromisoformat(t) for t in (first, second) if t]
    return max(times)


def _minutes(value: float) -> str:
    return f"{value:g}"
