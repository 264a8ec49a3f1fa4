"""Several sites' rules behind one entry point (rules/sites.py, issue 21): each event reaches
only its own site's rules, time reaches every site in its own zone, and a snapshot of
today's single-site gateway restores into the first site.

The scenario: two schools with the same room and device ids, school day 07:30-18:00
Monday to Friday, the AC's grace 10 minutes. Shanghai is UTC+8 all year; London is UTC+0
in early March (summer time starts on 29 March 2026).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from rules.alerts import AlertSignal, SignalAction
from rules.config import RulesConfig
from rules.engine import RuleEngine
from rules.sites import SiteRules, merge_rules
from tests.rules.test_engine import power
from warden.config import SiteConfig

CONFIG = RulesConfig.model_validate({"ac_after_hours": {"grace_minutes": 10}})


def school(site_id: str, zone: str) -> SiteConfig:
    return SiteConfig.model_validate({
        "id": site_id,
        "timezone": zone,
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "A", "rooms": [{"id": "A-204", "schedule": "school-day", "devices": ["ac-204"]}]}],
    })  # fmt: skip


SHANGHAI = school("shanghai-no3", "Asia/Shanghai")
LONDON = school("london-east", "Europe/London")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def feed(rules: SiteRules | RuleEngine, site: str, start: datetime, minutes: range) -> list[AlertSignal]:
    return [s for m in minutes for s in rules.on_event(power(start + timedelta(minutes=m), 1200, site=site))]


def both() -> SiteRules:
    return SiteRules([(SHANGHAI, CONFIG), (LONDON, CONFIG)])


def test_an_event_reaches_only_its_own_sites_rules() -> None:
    rules = both()
    # Tue 3 March 11:00 UTC is 19:00 in Shanghai (after school) and 11:00 in London (school hours).
    start = utc("2026-03-03 11:00")
    signals = feed(rules, "shanghai-no3", start, range(0, 11, 5)) + feed(rules, "london-east", start, range(0, 11, 5))
    # Shanghai's AC on since 19:00 local: raised after the 10-minute grace, 19:10 local = 11:10 UTC.
    assert [(s.site, s.action, s.at) for s in signals] == [
        ("shanghai-no3", SignalAction.RAISE, utc("2026-03-03 11:10"))
    ]
    assert feed(rules, "harbour", start, range(1)) == []  # a site not served: no rules
    stats = rules.stats()
    assert (stats["events"], stats["other_site"]) == (6, 1)
    assert (stats["sites"]["shanghai-no3"]["events"], stats["sites"]["london-east"]["events"]) == (3, 3)


def test_time_passing_reaches_every_site_in_its_own_zone() -> None:
    rules = both()
    feed(rules, "shanghai-no3", utc("2026-03-03 11:00"), range(0, 11, 5))  # 19:00-19:10 Shanghai: raised
    raised = feed(rules, "london-east", utc("2026-03-03 19:00"), range(0, 11, 5))  # 19:00-19:10 London: raised
    assert [(s.site, s.action, s.at) for s in raised] == [
        ("london-east", SignalAction.RAISE, utc("2026-03-03 19:10"))
    ]
    # 23:31 UTC is 07:31 on Wednesday in Shanghai, past the 07:30 school start that ends its
    # episode (07:30 local = 23:30 UTC); in London it is 23:31, still after hours.
    signals = rules.on_tick(utc("2026-03-03 23:31"))
    assert [(s.site, s.action, s.at) for s in signals] == [
        ("shanghai-no3", SignalAction.RESOLVE, utc("2026-03-03 23:30"))
    ]


def test_a_snapshot_of_several_sites_restores_each_site() -> None:
    rules = both()
    feed(rules, "shanghai-no3", utc("2026-03-03 11:00"), range(0, 6, 5))  # on since 11:00 UTC, in grace
    feed(rules, "london-east", utc("2026-03-03 19:00"), range(0, 6, 5))  # on since 19:00 UTC, in grace
    snapshot = json.loads(json.dumps(rules.snapshot()))
    assert set(snapshot) == {"sites"} and set(snapshot["sites"]) == {"shanghai-no3", "london-east"}
    restarted = both()
    restarted.restore(snapshot)
    # Each episode's start survived: 10 minutes after it, each site raises, with its own start.
    [shanghai] = feed(restarted, "shanghai-no3", utc("2026-03-03 11:10"), range(1))
    [london] = feed(restarted, "london-east", utc("2026-03-03 19:10"), range(1))
    assert (shanghai.action, shanghai.details["since"]) == (SignalAction.RAISE, "2026-03-03T11:00:00+00:00")
    assert (london.action, london.details["since"]) == (SignalAction.RAISE, "2026-03-03T19:00:00+00:00")


def test_a_single_site_gateways_snapshot_restores_into_the_first_site() -> None:
    """Upgrading from one site to several: today's snapshot (rule name -> state) is the
    first site's, so its timers carry on."""
    single = RuleEngine(SHANGHAI, CONFIG)
    feed(single, "shanghai-no3", utc("2026-03-03 11:00"), range(0, 6, 5))  # 19:00 and 19:05 local: in grace
    legacy = json.loads(json.dumps(single.snapshot()))
    assert "ac_after_hours" in legacy and "sites" not in legacy
    rules = both()
    rules.restore(legacy)
    # The grace started at 11:00 UTC before the upgrade: the reading at 11:10 raises.
    [signal] = feed(rules, "shanghai-no3", utc("2026-03-03 11:10"), range(1))
    assert (signal.action, signal.details["since"]) == (SignalAction.RAISE, "2026-03-03T11:00:00+00:00")
    assert rules.engines["london-east"].snapshot()["ac_after_hours"]["episodes"] == {}  # London starts empty


def test_a_single_site_writes_the_snapshot_of_a_single_site_gateway() -> None:
    """So a gateway of one site can be rolled back, and its snapshot read as before."""
    rules = SiteRules([(SHANGHAI, CONFIG)])
    feed(rules, "shanghai-no3", utc("2026-03-03 11:00"), range(0, 6, 5))
    snapshot = json.loads(json.dumps(rules.snapshot()))
    single = RuleEngine(SHANGHAI, CONFIG)
    single.restore(snapshot)
    [signal] = feed(single, "shanghai-no3", utc("2026-03-03 11:10"), range(1))
    assert (signal.action, signal.details["since"]) == (SignalAction.RAISE, "2026-03-03T11:00:00+00:00")


def test_an_agent_is_learnt_only_by_its_own_sites_rules() -> None:
    rules = both()
    rules.learn_agent("ac-204", "agent-sh", "shanghai-no3")
    assert "agent-sh" in json.dumps(rules.engines["shanghai-no3"].snapshot()["deadman"])
    assert "agent-sh" not in json.dumps(rules.engines["london-east"].snapshot()["deadman"])


def test_patrol_rounds_carry_their_site() -> None:
    """Both schools walk route "north" at 23:30 local; a round opens 10 minutes before its
    start (23:20) and is followed if the rules saw time before it opened (rules/patrol.py).
    15:00 UTC is 23:00 in Shanghai; 15:25 UTC is 23:25 there (its round open) and 15:25 in
    London (its round hours away)."""
    route = {"id": "north", "checkpoints": ["cp-gate"], "rounds": ["23:30"]}
    patrol = RulesConfig.model_validate({"patrol": {"routes": [route]}})
    rules = SiteRules([(SHANGHAI, patrol), (LONDON, patrol)])
    rules.on_tick(utc("2026-03-03 15:00"))
    rules.on_tick(utc("2026-03-03 15:25"))
    assert [(r["site"], r["round"]) for r in rules.rounds_state()] == [("shanghai-no3", "north:2026-03-03T23:30")]


def test_a_sites_rules_merge_per_family_and_key_as_written() -> None:
    """Families merge key by key; a key's value, list or map, replaces the top level's whole;
    a key outside the families is replaced; the top level's own document is not changed."""
    top = {"tick_seconds": 2, "water": {"night_start": "01:00", "meters": ["wm-1", "wm-2"], "overrides": {"wm-1": {}}},
           "doors": {"held_open_seconds": 90}}
    site = {"tick_seconds": 2, "water": {"meters": ["wm-9"], "overrides": {"wm-9": {"burst_l_per_min": 80}}},
            "ac_after_hours": {"grace_minutes": 30}}
    assert merge_rules(top, site) == {
        "tick_seconds": 2,
        "water": {"night_start": "01:00", "meters": ["wm-9"], "overrides": {"wm-9": {"burst_l_per_min": 80}}},
        "doors": {"held_open_seconds": 90},
        "ac_after_hours": {"grace_minutes": 30},
    }
    assert top["water"]["meters"] == ["wm-1", "wm-2"]


def test_the_latest_campus_cut_of_each_site_is_what_its_deadman_keeps() -> None:
    """Shanghai cut from 10:00 to 10:25 UTC, London cut at 11:00 and still down; deadman at defaults."""
    rules = SiteRules([(SHANGHAI, RulesConfig()), (LONDON, RulesConfig())])
    assert rules.latest_cuts() == {}
    rules.on_link(False, utc("2026-03-02T10:00"), "shanghai-no3")
    rules.on_link(True, utc("2026-03-02T10:25"), "shanghai-no3")
    rules.on_link(False, utc("2026-03-02T11:00"), "london-east")
    assert rules.latest_cuts() == {"shanghai-no3": (utc("2026-03-02T10:00"), utc("2026-03-02T10:25")),
                                   "london-east": (utc("2026-03-02T11:00"), None)}

