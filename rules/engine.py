"""One site's rules behind one entry point for the gateway.

The gateway feeds every validated event and a periodic tick; the engine hands an event
to the rules that read its kind (`Rule.reads`), a tick to every rule, and returns the
signals for the alert store. A rule that throws is counted and skipped for that input,
so one bad rule cannot stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from rules.ac_after_hours import AcAfterHoursRule
from rules.alerts import AlertSignal, Rule
from rules.cold_room import ColdRoomRule
from rules.config import RulesConfig
from rules.deadman import DeadmanRule
from rules.doors import DoorsRule
from rules.patrol import PatrolRule
from rules.water import WaterRule
from warden.config import SiteConfig
from warden.events import EVENT_KINDS, Event

log = logging.getLogger(__name__)

class StatefulRule(Rule, Protocol):
    """A rule whose state the gateway persists across restarts."""

    stats: dict[str, int]

    def state_snapshot(self) -> dict[str, Any]: ...

    def restore(self, snapshot: dict[str, Any]) -> None: ...


def build_rules(site: SiteConfig, config: RulesConfig) -> tuple[StatefulRule, ...]:
    """The enabled rule families for a site; ValueError names a setting the site cannot honour."""
    lateness = timedelta(seconds=config.allowed_lateness_seconds)
    candidates: list[tuple[bool, Callable[[], StatefulRule]]] = [
        (config.ac_after_hours.enabled, lambda: AcAfterHoursRule(site, config.ac_after_hours)),
        (config.water.enabled, lambda: WaterRule(site, config.water, lateness)),
        (config.doors.enabled, lambda: DoorsRule(site, config.doors)),
        (config.patrol.enabled, lambda: PatrolRule(site, config.patrol, lateness)),
        (config.deadman.enabled, lambda: DeadmanRule(site, config.deadman, lateness)),
        (config.cold_room.enabled and bool(config.cold_room.rooms), lambda: ColdRoomRule(site, config.cold_room)),
    ]
    return tuple(build() for enabled, build in candidates if enabled)


class RuleEngine:
    def __init__(self, site: SiteConfig, config: RulesConfig, rules: tuple[StatefulRule, ...] | None = None) -> None:
        """`rules`: the families to run; by default those `config` enables."""
        self.site = site
        self._config = config
        self.rules: tuple[StatefulRule, ...] = build_rules(site, config) if rules is None else rules
        self._route()
        self._counts = {"events": 0, "other_site": 0, "errors": 0}
        self._last_error = ""
        self.on_error: Callable[[str, Exception], None] | None = None  # told of each rule that raised

    def on_event(self, event: Event) -> list[AlertSignal]:
        """Signals caused by one event; events of other sites are ignored."""
        if event.site != self.site.id:
            self._counts["other_site"] += 1
            return []
        self._counts["events"] += 1
        signals: list[AlertSignal] = []
        for rule in self._readers[event.kind]:
            try:
                signals += rule.on_event(event)
            except Exception as exc:  # noqa: BLE001 - isolate rules from each other
                self._failed(rule, exc)
        return signals

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """Signals caused by time passing; `now` is aware UTC."""
        return self._each(lambda rule: rule.on_tick(now))

    def learn_agent(self, device: str, agent: str, site: str | None = None) -> None:
        """Tell the rules which agent forwards `device` (the gateway knows it from the topic);
        a device of another `site` is not this site's to learn."""
        if site is not None and site != self.site.id:
            return
        for rule in self.rules:
            learn = getattr(rule, "learn_agent", None)
            if learn is not None:
                learn(device, agent)

    def on_link(self, up: bool, at: datetime, site: str | None = None) -> None:
        """The site's campus bridge went up or down at `at` (the gateway's clock); rules that
        weigh silence (rules/deadman.py) hear it. Another `site`'s link is not this site's."""
        if site is not None and site != self.site.id:
            return
        for rule in self.rules:
            on_link = getattr(rule, "on_link", None)
            if on_link is not None:
                on_link(up, at)

    def rounds_state(self) -> list[dict[str, Any]]:
        """Patrol rounds being followed and each checkpoint's state, for the API."""
        return [r for rule in self.rules if isinstance(rule, PatrolRule) for r in rule.rounds_state()]

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state of every rule, keyed by rule name."""
        return {rule.name: rule.state_snapshot() for rule in self.rules}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Restore the rules found in `snapshot`; rules it does not mention start empty. A family
        whose state cannot be restored (a version it cannot read, a config changed under it) is
        counted, logged and started empty: the other families, and the site, are not left blind."""
        rules = list(self.rules)
        for index, rule in enumerate(rules):
            if rule.name not in snapshot:
                continue
            try:
                rule.restore(snapshot[rule.name])
            except Exception as exc:  # noqa: BLE001 - one family's state must not stop the rules
                log.error("rule state not restored; the family starts empty", exc_info=exc,
                          extra={"site": self.site.id, "rule": rule.name})
                self._failed(rule, exc)
                rules[index] = next(r for r in build_rules(self.site, self._config) if r.name == rule.name)
        self.rules = tuple(rules)
        self._route()

    def _route(self) -> None:
        """Routing by kind is on the hot path: a reading goes to 3 rule families, not 5."""
        self._readers = {kind: tuple(r for r in self.rules if kind in r.reads) for kind in EVENT_KINDS}

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
                self._failed(rule, exc)
        return signals

    def _failed(self, rule: StatefulRule, exc: Exception) -> None:
        self._counts["errors"] += 1
        self._last_error = f"{rule.name}: {exc!r}"
        if self.on_error is not None:
            self.on_error(rule.name, exc)
