"""Several sites' rules behind the one entry point of a site's RuleEngine (issue 21).

A gateway serving several sites keeps one RuleEngine per site: each site is judged by its
own rules, schedules, calendar and zone, and an event only reaches its own site's rules.
Time passing reaches every site.

Snapshots: a gateway of one site writes the snapshot a single-site gateway always wrote
(rule name -> state), so either can read the other's; with several sites the snapshot is
{"sites": {site id: that site's snapshot}}. A snapshot of the older single-site form is
restored into the first site: add new sites after the one the gateway served before.

A site's own `rules:` merge over the gateway's top-level ones (merge_rules), except the keys
that time the gateway process (PROCESS_KEYS), which stay the top-level's for every site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rules.alerts import AlertSignal
from rules.config import RulesConfig
from rules.deadman import DeadmanRule
from rules.engine import RuleEngine
from warden.config import SiteConfig
from warden.events import Event

#: The key of a several-sites snapshot; no rule family is called this.
SITES_KEY = "sites"

#: Keys of `rules:` that time the gateway process, not a site's judgement: one tick loop
#: ticks every site, one MQTT session waits for one backlog, and a tick acts on the clock
#: less one lateness. A site may repeat the top-level value, not change it.
PROCESS_KEYS = ("tick_seconds", "catch_up_max_seconds", "allowed_lateness_seconds")


def merge_rules(top: Mapping[str, Any], site: Mapping[str, Any]) -> dict[str, Any]:
    """A site's `rules:` over the top-level ones, as written, per family and key: a family the
    site names keeps the top-level family's other keys; a key's value (a number, a list, a
    map such as water.overrides) replaces the top-level one whole, so a site's list of
    routes or meters is its own, not the district's plus its own."""
    merged = dict(top)
    for key, value in site.items():
        below = top.get(key)
        merged[key] = {**below, **value} if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return merged


def check_process_keys(top: RulesConfig, site: RulesConfig, key: str) -> None:
    """ValueError naming `key`.<name> when a site's rules change a key of PROCESS_KEYS: it
    would be silently ignored (the gateway runs one tick loop and one catch-up for all)."""
    for name in PROCESS_KEYS:
        own, gateway = getattr(site, name), getattr(top, name)
        if own != gateway:
            raise ValueError(
                f"{key}.{name}: {own:g} differs from the top-level rules.{name} ({gateway:g}); it times the "
                f"gateway process, which serves every site alike: set it under the top-level rules:"
            )


class SiteRules:
    """One RuleEngine per site, dispatched by each event's site."""

    def __init__(self, sites: Sequence[tuple[SiteConfig, RulesConfig]]) -> None:
        """`sites`: each site with the rules it is judged by, in configured order (at least one)."""
        if not sites:
            raise ValueError("sites: expected at least one site")
        self.engines: dict[str, RuleEngine] = {site.id: RuleEngine(site, rules) for site, rules in sites}
        self._first = next(iter(self.engines))
        self._other_site = 0
        self._on_error: Callable[[str, Exception], None] | None = None

    @property
    def on_error(self) -> Callable[[str, Exception], None] | None:
        return self._on_error

    @on_error.setter
    def on_error(self, callback: Callable[[str, Exception], None] | None) -> None:
        """Told of each rule that raised, whichever site's."""
        self._on_error = callback
        for engine in self.engines.values():
            engine.on_error = callback

    def on_event(self, event: Event) -> list[AlertSignal]:
        """Signals caused by one event, from its own site's rules; another site's: none."""
        engine = self.engines.get(event.site)
        if engine is None:
            self._other_site += 1
            return []
        return engine.on_event(event)

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """Time passing, in every site (each judges it in its own zone)."""
        return [signal for engine in self.engines.values() for signal in engine.on_tick(now)]

    def learn_agent(self, device: str, agent: str, site: str | None = None) -> None:
        """Which agent forwards `device` of `site` (None: every site's rules hear it)."""
        for site_id, engine in self.engines.items():
            if site is None or site == site_id:
                engine.learn_agent(device, agent)

    def on_link(self, up: bool, at: datetime, site: str) -> None:
        """`site`'s campus bridge went up or down at `at`; a site not served: ignored."""
        engine = self.engines.get(site)
        if engine is not None:
            engine.on_link(up, at)

    def latest_cuts(self) -> dict[str, tuple[datetime, datetime | None]]:
        """Each site's latest campus cut as its dead-man rule keeps it (start, end; None while
        down): what a restart keeps of a link. Sites never cut, or not watched: absent."""
        cuts = {}
        for site_id, engine in self.engines.items():
            found = [cut for rule in engine.rules if isinstance(rule, DeadmanRule) and (cut := rule.latest_cut())]
            if found:
                cuts[site_id] = found[0]
        return cuts

    def rounds_state(self) -> list[dict[str, Any]]:
        """Every site's patrol rounds, each with its site."""
        return [{**rnd, "site": site_id} for site_id, engine in self.engines.items() for rnd in engine.rounds_state()]

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state; one site: its engine's own form (see the module's docstring)."""
        if len(self.engines) == 1:
            return self.engines[self._first].snapshot()
        return {SITES_KEY: {site_id: engine.snapshot() for site_id, engine in self.engines.items()}}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Restore each site found in `snapshot`; a single-site snapshot is the first site's.
        Sites it does not mention (new ones, or a partition's new share) start empty."""
        by_site = snapshot.get(SITES_KEY)
        if not isinstance(by_site, dict):
            self.engines[self._first].restore(snapshot)
            return
        for site_id, engine in self.engines.items():
            if site_id in by_site:
                engine.restore(by_site[site_id])

    def stats(self) -> dict[str, Any]:
        """Counts summed over the sites, and each site's own."""
        per_site = {site_id: engine.stats() for site_id, engine in self.engines.items()}
        errors = [s["last_error"] for s in per_site.values() if s["last_error"]]
        return {
            "events": sum(s["events"] for s in per_site.values()),
            "other_site": self._other_site,
            "errors": sum(s["errors"] for s in per_site.values()),
            "last_error": errors[-1] if errors else "",
            "sites": per_site,
        }
