"""Test helpers shared by the rule families: local times, a model of the alert store, and
arrival orders within a lateness bound."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from rules.alerts import AlertSignal, SignalAction
from warden.events import Event

BERLIN = ZoneInfo("Europe/Berlin")


def local(text: str) -> datetime:
    """A Europe/Berlin wall-clock time (first occurrence if repeated) as aware UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(timezone.utc)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def actions(signals: Iterable[AlertSignal]) -> list[SignalAction]:
    return [s.action for s in signals]


def of_rule(signals: Iterable[AlertSignal], rule: str) -> list[AlertSignal]:
    return [s for s in signals if s.rule == rule]


@dataclass
class AlertBook:
    """What the gateway's store makes of signals: one open alert per key at most."""

    open: dict[tuple[str, str, str], AlertSignal] = field(default_factory=dict)
    closed: list[AlertSignal] = field(default_factory=list)
    opened: list[tuple[str, str, str]] = field(default_factory=list)

    def apply(self, signals: Iterable[AlertSignal]) -> None:
        for signal in signals:
            live = self.open.get(signal.key)
            if signal.action is SignalAction.RAISE and live is None:
                self.opened.append(signal.key)
                self.open[signal.key] = signal
            elif live is not None and signal.action is SignalAction.RESOLVE:
                del self.open[signal.key]
                self.closed.append(signal)
            elif live is not None:
                self.open[signal.key] = signal

    def summary(self) -> tuple[object, ...]:
        """Everything a person would see: keys ever opened, and each alert's last word (whether
        it came as a raise or an update depends on how often time was let pass, not on the data)."""
        def word(s: AlertSignal) -> tuple[object, ...]:
            return (s.key, s.severity.value, s.message, tuple(sorted(s.details.items())))

        return (
            sorted(self.opened),
            sorted(word(s) for s in self.open.values()),
            sorted(word(s) for s in self.closed),
        )


def arrival_order(events: Sequence[Event], lateness: timedelta, seed: int) -> list[tuple[datetime, Event]]:
    """Events as they might arrive: each delayed by less than `lateness` past its event time."""
    rng = random.Random(seed)
    spread = lateness.total_seconds()
    delayed = [(e.event_time + timedelta(seconds=rng.uniform(0, spread * 0.99)), i, e) for i, e in enumerate(events)]
    return [(arrival, e) for arrival, _, e in sorted(delayed, key=lambda item: (item[0], item[1]))]


def replay(
    on_event: Callable[[Event], list[AlertSignal]],
    on_tick: Callable[[datetime], list[AlertSignal]],
    arrivals: Sequence[tuple[datetime, Event]],
    lateness: timedelta,
    tick_every: timedelta | None,
    end: datetime,
) -> AlertBook:
    """Feed events at their arrival times and, like the gateway, tick at (arrival clock - lateness)."""
    book = AlertBook()
    next_tick = arrivals[0][0] if arrivals and tick_every else None
    for arrival, event in arrivals:
        while next_tick is not None and tick_every is not None and next_tick <= arrival:
            book.apply(on_tick(next_tick - lateness))
            next_tick += tick_every
        book.apply(on_event(event))
    book.apply(on_tick(end))
    return book
