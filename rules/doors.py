"""Doors: held open too long, forced open, used outside their schedule, repeated denied cards.

Each condition is its own alert rule with the door id as subject, so one door can have a
held-open and an after-hours alert at once. Door events are acted on as they arrive (a
forced door must not wait for late data); a tick lets a held-open timer or a quiet spell
expire without a further event. See docs/rules.md#doors.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from rules import state
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import ScheduleSpans, wall_clock
from warden.config import SiteConfig, StrictModel
from warden.events import DoorAction, DoorEvent, Event, Identifier
from warden.i18n import Message
from warden.names import door_label

SNAPSHOT_VERSION = 1

HELD_OPEN = "door_held_open"
FORCED = "door_forced"
AFTER_HOURS = "door_after_hours"
DENIED = "door_denied"


#: The alert rules this family emits (rules/config.py: ALERT_RULES).
RULE_NAMES = (HELD_OPEN, FORCED, AFTER_HOURS, DENIED)


class DoorOverride(StrictModel):
    """Settings of one door that differ from the door rule's defaults."""

    name: str = Field(default="", description="Display name (any Unicode), e.g. 东门; default: the id (warden/names.py)")
    schedule: str | None = Field(default=None, description="Site schedule instead of the room's")
    after_hours: bool = True
    held_open_seconds: float | None = Field(default=None, gt=0)


class DoorsConfig(StrictModel):
    """Door held open, forced, used after hours, denied cards (rules/doors.py)."""

    enabled: bool = True
    held_open_seconds: float = Field(default=60.0, gt=0)
    denied_count: int = Field(default=3, ge=1)
    denied_minutes: float = Field(default=5.0, gt=0)
    after_hours: bool = True
    after_hours_quiet_hours: float | None = Field(
        default=16.0, gt=0, description="No use after hours this long ends the after-hours alert, so the next use "
        "raises a new one (a Saturday visit after Friday evening's); none: only the schedule's start ends it",
    )
    doors: dict[Identifier, DoorOverride] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Policy:
    """What applies to one door: its held-open limit and whether and how after hours is judged."""

    held_open: timedelta
    checked: bool  # False: after-hours use is not judged (no schedule known, or switched off)
    schedule: str | None  # None with checked: the door's room is never scheduled


@dataclass
class _Door:
    device: str = ""  # the controller that reported it, to find its room
    open_since: datetime | None = None
    last_closed: datetime | None = None
    held_raised: bool = False
    forced_since: datetime | None = None
    forced_count: int = 0
    denied: list[datetime] = field(default_factory=list)  # recent denials, oldest first
    denied_raised: bool = False
    denied_since: datetime | None = None
    denied_count: int = 0
    denied_card: str = ""
    after_since: datetime | None = None
    after_ends: datetime | None = None  # the schedule start that ends the episode; None: never
    after_granted: int = 0
    after_opened: int = 0
    after_settled: datetime | None = None  # end of the last finished after-hours period
    after_last: datetime | None = None  # the episode's latest use


class DoorsRule:
    """Held open, forced, after-hours use and denied cards, one alert each per door."""

    name = "doors"
    reads = frozenset({"door"})

    def __init__(self, site: SiteConfig, config: DoorsConfig) -> None:
        for door, override in config.doors.items():
            if override.schedule is not None and override.schedule not in site.schedules:
                raise ValueError(f"rules.doors.doors.{door}.schedule: unknown schedule {override.schedule!r}")
        self._site = site
        self._schedules = ScheduleSpans(site)
        self._config = config
        self._denied_window = timedelta(minutes=config.denied_minutes)
        hours = config.after_hours_quiet_hours
        self._after_quiet = None if hours is None else timedelta(hours=hours)
        self._doors: dict[str, _Door] = {}
        self._policies: dict[str, _Policy] = {}
        self.stats: dict[str, int] = {"out_of_order": 0, "unscheduled": 0}

    # ----------------------------------------------------------------- Rule protocol

    def on_event(self, event: Event) -> list[AlertSignal]:
        if not isinstance(event, DoorEvent):
            return []
        door = self._doors.setdefault(event.door, _Door())
        door.device = door.device or event.device
        policy = self._policy(event.door, event.device)
        at = event.event_time
        signals = self._expire(event.door, door, policy, at)
        match event.action:
            case DoorAction.OPENED:
                signals += self._opened(door, at)
                signals += self._after_hours(event, door, policy)
            case DoorAction.GRANTED:
                signals += self._after_hours(event, door, policy)
            case DoorAction.CLOSED:
                signals += self._closed(event.door, door, at)
            case DoorAction.HELD_OPEN:
                signals += self._held_open(event.door, door, policy, at)
            case DoorAction.FORCED:
                signals += self._forced(event.door, door, at)
            case DoorAction.DENIED:
                signals += self._denied(event, door)
        return signals

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        signals: list[AlertSignal] = []
        for door_id, door in sorted(self._doors.items()):
            signals += self._expire(door_id, door, self._policy(door_id, door.device), now)
        return signals

    def _expire(self, door_id: str, door: _Door, policy: _Policy, now: datetime) -> list[AlertSignal]:
        """Conditions that time alone settles: a door open too long, a quiet spell after
        denials, an after-hours period ended by the schedule starting."""
        signals = []
        if door.open_since and not door.held_raised and now >= door.open_since + policy.held_open:
            door.held_raised = True
            due = door.open_since + policy.held_open
            signals.append(self._held_signal(SignalAction.RAISE, door_id, door.open_since, due, "timer"))
        if door.denied_raised and door.denied and now >= door.denied[-1] + self._denied_window:
            quiet = door.denied[-1] + self._denied_window
            signals.append(self._denied_signal(SignalAction.RESOLVE, door_id, door, quiet))
            door.denied_raised, door.denied_count, door.denied = False, 0, []
        quiet = door.after_last + self._after_quiet if door.after_last and self._after_quiet else None
        ends = min((t for t in (door.after_ends, quiet) if t is not None), default=None)
        if door.after_since and ends is not None and now >= ends:
            signals.append(self._after_signal(SignalAction.RESOLVE, door_id, door, ends))
            door.after_settled, door.after_since, door.after_ends, door.after_last = ends, None, None, None
            door.after_granted = door.after_opened = 0
        return signals

    # ----------------------------------------------------------------- held open

    def _opened(self, door: _Door, at: datetime) -> list[AlertSignal]:
        if door.last_closed is not None and at <= door.last_closed:
            self.stats["out_of_order"] += 1  # an opening before the last close we saw: already over
        elif door.open_since is None or at < door.open_since:
            door.open_since = at
        return []

    def _held_open(self, door_id: str, door: _Door, policy: _Policy, at: datetime) -> list[AlertSignal]:
        """The controller's own held-open alarm: raise at once, its timer already ran."""
        if door.held_raised or (door.last_closed is not None and at <= door.last_closed):
            return []
        door.open_since = door.open_since or door.forced_since or at  # a forced door stood open from the force
        door.held_raised = True
        return [self._held_signal(SignalAction.RAISE, door_id, door.open_since, at, "controller")]

    def _closed(self, door_id: str, door: _Door, at: datetime) -> list[AlertSignal]:
        signals = []
        if door.forced_since is not None and at >= door.forced_since:
            forced = wall_clock(self._site, door.forced_since, seconds=True, ref=at)
            message = Message("Door {door} forced open at {forced}, closed again at {closed}", door=door_id, forced=forced,
                              closed=wall_clock(self._site, at, seconds=True, ref=at))
            signals.append(self._forced_signal(SignalAction.UPDATE, door_id, door, at, message, closed=at))
            door.forced_since = None
        if door.open_since is not None and at >= door.open_since:
            if door.held_raised:
                signals.append(self._held_signal(SignalAction.RESOLVE, door_id, door.open_since, at, "closed"))
            door.open_since, door.held_raised = None, False
        door.last_closed = at if door.last_closed is None else max(door.last_closed, at)
        return signals

    def _held_signal(
        self, action: SignalAction, door_id: str, since: datetime, at: datetime, source: str
    ) -> AlertSignal:
        seconds = (at - since).total_seconds()
        if source == "timer":
            message = Message("Door {door} held open for {seconds:.0f} s (opened {opened})", door=door_id, seconds=seconds,
                              opened=wall_clock(self._site, since, seconds=True, ref=at))
        elif source == "controller":
            message = Message("Door {door} held open (reported by the controller at {time})", door=door_id,
                              time=wall_clock(self._site, at, seconds=True, ref=at))
        else:
            message = Message("Door {door} closed at {time} after {seconds:.0f} s open", door=door_id, seconds=seconds,
                              time=wall_clock(self._site, at, seconds=True, ref=at))
        details: dict[str, float | str] = {"since": since.isoformat(), "seconds": seconds, "source": source}
        return self._signal(HELD_OPEN, action, door_id, at, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- forced

    def _forced(self, door_id: str, door: _Door, at: datetime) -> list[AlertSignal]:
        """Critical, and left open for a person: closing the door does not undo a break-in."""
        if door.forced_since is not None:
            door.forced_count += 1
            message = Message("Door {door} forced again at {time} ({count} times)", door=door_id, count=door.forced_count,
                              time=wall_clock(self._site, at, seconds=True, ref=at))
            return [self._forced_signal(SignalAction.UPDATE, door_id, door, at, message)]
        door.forced_count = 1
        if door.last_closed is None or at > door.last_closed:
            door.forced_since = at
        message = Message("Door {door} forced open at {time}", door=door_id,
                          time=wall_clock(self._site, at, seconds=True, ref=at))
        return [self._forced_signal(SignalAction.RAISE, door_id, door, at, message, since=at)]

    def _forced_signal(
        self, action: SignalAction, door_id: str, door: _Door, at: datetime, message: str,
        since: datetime | None = None, closed: datetime | None = None,
    ) -> AlertSignal:
        started = since or door.forced_since or at
        details: dict[str, float | str] = {"count": door.forced_count, "since": started.isoformat()}
        if closed is not None:
            details["closed"] = closed.isoformat()
        return self._signal(FORCED, action, door_id, at, Severity.CRITICAL, message, details)

    # ----------------------------------------------------------------- denied cards

    def _denied(self, event: DoorEvent, door: _Door) -> list[AlertSignal]:
        """N denials within M minutes raise; each further one updates; M quiet minutes resolve."""
        at, window = event.event_time, self._denied_window
        insort(door.denied, at)
        door.denied = [t for t in door.denied if t >= door.denied[-1] - window]  # the rest can never count again
        door.denied_card = event.card or door.denied_card
        if door.denied_raised:
            door.denied_count += 1
            return [self._denied_signal(SignalAction.UPDATE, event.door, door, at)]
        first_full = _first_full_window(door.denied, window, self._config.denied_count)
        if first_full is None:
            return []
        door.denied_raised, door.denied_since, door.denied_count = True, door.denied[0], len(door.denied)
        return [self._denied_signal(SignalAction.RAISE, event.door, door, first_full)]

    def _denied_signal(self, action: SignalAction, door_id: str, door: _Door, at: datetime) -> AlertSignal:
        minutes = self._config.denied_minutes
        if action is SignalAction.RESOLVE:
            message = Message("No denied card at door {door} for {minutes:g} min ({count} denied in all)", door=door_id,
                              minutes=minutes, count=door.denied_count)
        else:
            message = Message("{count} denied cards at door {door} since {time}", door=door_id, count=door.denied_count,
                              time=wall_clock(self._site, door.denied_since or at, seconds=True, ref=at))
        since = door.denied_since or at
        details: dict[str, float | str] = {"count": door.denied_count, "since": since.isoformat()}
        if door.denied_card:
            details["last_card"] = door.denied_card
        return self._signal(DENIED, action, door_id, at, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- after hours

    def _after_hours(self, event: DoorEvent, door: _Door, policy: _Policy) -> list[AlertSignal]:
        """One alert per unscheduled period: raised by the first use, updated by the next ones,
        resolved when the schedule starts, or after_hours_quiet_hours after the last use (a
        weekend, a holiday week or a room never scheduled is not one alert for every use)."""
        if not policy.checked:
            self.stats["unscheduled"] += 1
            return []
        at = event.event_time
        if self._schedules.is_scheduled(policy.schedule, at):
            return []
        opened = event.action is DoorAction.OPENED
        if door.after_since is not None:
            if at < door.after_since:
                if self._schedules.next_change(policy.schedule, at) != door.after_ends:
                    self.stats["out_of_order"] += 1
                    return []
                door.after_since = at
            door.after_opened += opened
            door.after_granted += not opened
            door.after_last = max(door.after_last or at, at)
            return [self._after_signal(SignalAction.UPDATE, event.door, door, at)]
        if door.after_settled is not None and at < door.after_settled:
            self.stats["out_of_order"] += 1
            return []
        door.after_since, door.after_ends = at, self._schedules.next_change(policy.schedule, at)
        door.after_opened, door.after_granted, door.after_last = int(opened), int(not opened), at
        return [self._after_signal(SignalAction.RAISE, event.door, door, at)]

    def _after_signal(self, action: SignalAction, door_id: str, door: _Door, at: datetime) -> AlertSignal:
        assert door.after_since is not None
        uses = door.after_granted + door.after_opened
        quiet = action is SignalAction.RESOLVE and at != door.after_ends
        if quiet:
            last = door.after_last or door.after_since
            message = Message("Door {door} not used after hours since {time}; {count} door events after hours",
                              door=door_id, time=wall_clock(self._site, last, seconds=True, ref=at), count=uses)
        elif action is SignalAction.RESOLVE:
            message = Message("Schedule of door {door} started at {time}; {count} door events after hours", door=door_id,
                              time=wall_clock(self._site, at, ref=at), count=uses)
        elif uses == 1:
            message = Message("Door {door} used after hours at {time}", door=door_id,
                              time=wall_clock(self._site, at, seconds=True, ref=at))
        else:
            message = Message("Door {door} used after hours: {count} door events since {time}", door=door_id, count=uses,
                              time=wall_clock(self._site, door.after_since, seconds=True, ref=at))
        details: dict[str, float | str] = {
            "since": door.after_since.isoformat(),
            "granted": door.after_granted,
            "opened": door.after_opened,
            "count": uses,
        }
        if action is SignalAction.RESOLVE:
            details["reason"] = "quiet" if quiet else "schedule_started"
        return self._signal(AFTER_HOURS, action, door_id, at, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- helpers

    def _door(self, door_id: str) -> str:
        """The door as messages name it: '东门 (door-back)', or the id without a name."""
        return door_label(self._config.doors, door_id)

    def _policy(self, door_id: str, device: str) -> _Policy:
        """The door's settings; its room is found by the door id, else by its controller."""
        if door_id in self._policies:
            return self._policies[door_id]
        override = self._config.doors.get(door_id)
        held = (override and override.held_open_seconds) or self._config.held_open_seconds
        checked = self._config.after_hours and (override is None or override.after_hours)
        schedule = override.schedule if override else None
        if schedule is None:
            place = self._site.locate(door_id) or self._site.locate(device)
            checked = checked and place is not None
            schedule = place.schedule if place else None
        policy = _Policy(held_open=timedelta(seconds=held), checked=checked, schedule=schedule)
        self._policies[door_id] = policy
        return policy

    def _signal(
        self, rule: str, action: SignalAction, door_id: str, at: datetime, severity: Severity, message: str,
        details: dict[str, float | str],
    ) -> AlertSignal:
        details = {**details, "door": door_id}
        return AlertSignal(self._site.id, rule, door_id, action, at, severity, message, details)

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        """Plain JSON per door: open and forced since when, recent denials, after-hours episode."""
        return {"version": SNAPSHOT_VERSION, "doors": state.dump(self._doors)}

    def restore(self, snapshot: dict[str, Any]) -> None:
        state.check_version(snapshot, self.name, (SNAPSHOT_VERSION,))
        self._doors = {d: state.load(_Door, s) for d, s in snapshot["doors"].items()}
        self._policies = {}


def _first_full_window(times: list[datetime], window: timedelta, count: int) -> datetime | None:
    """The first time at which `count` of the sorted `times` fall within `window`, or None."""
    for i in range(count - 1, len(times)):
        if times[i] - times[i - count + 1] <= window:
            return times[i]
    return None
