"""One site's rules behind one entry point for the gateway.

The gateway feeds every validated event and a periodic tick; the engine hands each to
every rule and returns the signals for the alert store. A rule that throws is counted
and skipped for that input, so one bad rule cannot stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from rules.ac_after_hours import AcAfterHoursRule
from rules.alerts import AlertSignal, Rule
from warden.config import RulesConfig, SiteConfig
from warden.events import Event


class StatefulRule(Rule, Protocol):
    """A rule whose state the gateway persists across restarts."""

    stats: dict[str, int]

    def state_snapshot(self) -> dict[str, Any]: ...

    def restore(self, snapshot: dict[str, Any]) -> None: ...


def build_rules(site: SiteConfig, config: RulesConfig) -> tuple[StatefulRule, ...]:
    """The enabled rules for a site (every configured rule family is enabled)."""
    return (AcAfterHoursRule(site, config.ac_after_hours),)


class RuleEngine:
    def __init__(self, site: SiteConfig, config: RulesConfig) -> None:
        self.site = site
        self.rules: tuple[StatefulRule, ...] = build_rules(site, config)
        self._counts = {"events": 0, "other_site": 0, "errors": 0}
        self._last_error = ""

    def on_event(self, event: Event) -> list[AlertSignal]:
        """Signals caused by one event; events of other sites are ignored."""
        if event.site != self.site.id:
            self._counts["other_site"] += 1
            return []
        self._counts["events"] += 1
        return self._each(lambda rule: rule.on_event(event))

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """Signals caused by time passing; `now` is aware UTC."""
        return self._each(lambda rule: rule.on_tick(now))

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state of every rule, keyed by rule name."""
        return {rule.name: rule.state_snapshot() for rule in self.rules}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Restore the rules found in `snapshot`; rules it does not mention start empty."""
        for rule in self.rules:
            if rule.name in snapshot:
                rule.restore(snapshot[rule.name])

    def stats(self) -> dict[str, Any]:
        return {
            **self._counts,
            "last_error": self._last_error,
            "rules": {rule.name: dict(rule.stats) for rule in self.rules},
        }

    def _each(self, call: Callable[[StatefulRule], list[AlertSignal]]) -> list[AlertSignal]:
        signals: list[AlertSignal] = []
        for rule in self.rules:
            try:
                signals += call(rule)
            except Exception as exc:  # noqa: BLE001 - isolate rules from each other
                self._counts["errors"] += 1
                self._last_error = f"{rule.name}: {exc!r}"
        return signals
