"""Patrol rounds across a restart. The rule finds a round's next round among its own route's
rounds only (one tick would otherwise compare every followed round with every other): that
index must be rebuilt by restore, or a late round loses the tap it finished with in the next
round's early window. And a round opened under a schedule renamed since still restores."""

from __future__ import annotations

from rules.alerts import SignalAction
from rules.patrol import ROUND, PatrolConfig, PatrolRule
from tests.rules.test_new_nights import R2, hourly_rule
from tests.rules.test_patrol import R1, SITE, TAGS, states, walk
from tests.rules.test_patrol import config as patrol_config
from warden.config import SiteConfig


def test_a_late_round_keeps_its_last_tap_across_a_restart_in_the_next_rounds_window() -> None:
    """As test_new_nights' late round: 23:30 started 15 min late (23:55, 00:05, 00:15), cp-yard
    at 00:25, its deadline 00:10 moved by the 15 min delay; the 00:30 round opened at 00:20 and
    is walked in time 00:35 ... 01:05 (deadlines 00:40 ... 01:10). The gateway restarts at 00:30,
    between the two rounds' taps. Facts as without the restart: one warning, the first round
    started 15 min late (23:55 - 23:40); every checkpoint of it "late", of the second "visited"."""
    rule = hourly_rule()
    before = walk(rule, ("23:55", "cp-gate"), ("00:05", "cp-hall"), ("00:15", "cp-204"), ("00:25", "cp-yard"), "00:30")
    restarted = PatrolRule(SITE, patrol_config(rounds=["23:30", "00:30"]))
    restarted.restore(rule.state_snapshot())
    after = walk(restarted, ("00:35", "cp-gate"), ("00:45", "cp-hall"), ("00:55", "cp-204"), ("01:05", "cp-yard"), "03:00")
    signals = before + after
    assert [(s.rule, s.subject, s.action) for s in signals] == [(ROUND, R1, SignalAction.RAISE)]
    assert signals[0].details["minutes_late"] == 15
    assert states(restarted, R1) == dict.fromkeys(TAGS, "late")
    assert states(restarted, R2) == dict.fromkeys(TAGS, "visited")


def test_a_round_under_way_survives_a_restart_that_renames_its_routes_schedule() -> None:
    """Route north (23:30, bound to the site's 24x7 schedule "guards") is walked from 23:35
    (cp-gate). The restart at 23:40 renames the schedule "watch" (the same windows) and the
    route follows it. The round opened under the old config keeps its plan, with the old
    schedule read as none: restoring it must not fail on the name. Facts: cp-gate tapped at
    23:35, before its deadline 23:30 + 10 = 23:40, is visited; cp-hall is due 23:50, pending."""
    windows = [{"days": "mon-sun", "hours": "00:00-24:00"}]

    def site(schedule: str) -> SiteConfig:
        return SiteConfig.model_validate({"id": "school", "timezone": "Europe/Berlin", "schedules": {schedule: windows}})

    def config(schedule: str) -> PatrolConfig:
        route = {"id": "north", "checkpoints": ["cp-gate", "cp-hall"], "rounds": ["23:30"], "schedule": schedule}
        return PatrolConfig.model_validate({"routes": [route]})

    rule = PatrolRule(site("guards"), config("guards"))
    walk(rule, "22:00", ("23:35", "cp-gate"), "23:40")
    restarted = PatrolRule(site("watch"), config("watch"))
    restarted.restore(rule.state_snapshot())
    assert states(restarted, R1) == {"cp-gate": "visited", "cp-hall": "pending"}
