"""A campus bridge cut (rules/deadman.py, `on_link`): silence is not judged while the link
is down, counts from its return once it is back, and the cut itself is one warning.

A manual clock: each step is a minute of the gateway's clock; ticks reach the rule at that
clock less the allowed lateness (5 min), as the gateway ticks. Events reach it when they
arrive (the backlog of the cut only after the link's return). Expected times are worked out
by hand in the comments.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from rules.alerts import SignalAction
from rules.deadman import AGENT, DEVICE, LINK, DeadmanConfig, DeadmanRule
from tests.rules.helpers import local
from tests.rules.test_deadman import SITE, power
from warden.i18n import localise

RAISE, RESOLVE = SignalAction.RAISE, SignalAction.RESOLVE
LATENESS = timedelta(minutes=5)
Row = tuple[str, str, str, SignalAction, str]  # clock, rule, subject, action, signal time (Berlin hh:mm)


def at(hhmm: str) -> datetime:
    return local(f"2026-03-03 {hhmm}")


def _berlin(when: datetime) -> str:
    return when.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M")


def minutes(start: str, end: str) -> list[str]:
    first, last = at(start), at(end)
    return [_berlin(first + timedelta(minutes=m)) for m in range(int((last - first).total_seconds() // 60) + 1)]


def run(rule: DeadmanRule, start: str, end: str, arrivals: dict[str, Callable[[], None]]) -> list[Row]:
    """Each clock minute from `start` to `end`: what arrives then (events, link facts), then a
    tick at the clock less the lateness. Returns every signal with the clock that produced it."""
    rows: list[Row] = []
    for clock in minutes(start, end):
        if clock in arrivals:
            arrivals[clock]()
        for s in rule.on_tick(at(clock) - LATENESS):
            rows.append((clock, s.rule, s.subject, s.action, _berlin(s.at)))
    return rows


def fed(rule: DeadmanRule, device: str, *times: str) -> Callable[[], None]:
    return lambda: [rule.on_event(power(device, at(t))) for t in times] and None


def link(rule: DeadmanRule, up: bool, clock: str) -> Callable[[], None]:
    return lambda: rule.on_link(up, at(clock))


def both(*calls: Callable[[], None]) -> Callable[[], None]:
    return lambda: [call() for call in calls] and None


def fresh(config: DeadmanConfig | None = None) -> DeadmanRule:
    rule = DeadmanRule(SITE, config or DeadmanConfig(), LATENESS)
    rule.on_tick(at("09:00"))  # the rule first sees time at 09:00: nothing silent before 09:15
    return rule


def test_silence_of_the_cut_waits_for_the_link_and_the_cut_is_one_warning() -> None:
    rule = fresh()
    arrivals = {
        "09:46": fed(rule, "ac-1", "09:46"),  # then silent: due 09:46 + 15 = 10:01, before the cut
        "10:00": both(fed(rule, "ac-2", "10:00"), fed(rule, "wm-1", "10:00")),  # due 10:15, inside the cut
        "10:02": link(rule, False, "10:02"),  # the WAN is cut at 10:02
        "10:40": both(link(rule, True, "10:40"), fed(rule, "wm-1", "10:10", "10:20")),  # back; the backlog
        "10:45": fed(rule, "wm-1", "10:45"),  # wm-1 speaks once after the return, then stays silent
    }
    rows = run(rule, "09:01", "11:20", arrivals)
    assert rows == [
        # ac-1: due 10:01 (<= the cut's 10:02): judged at its own time, the tick of clock 10:06.
        ("10:06", DEVICE, "ac-1", RAISE, "10:01"),
        # The cut: 10:02 + 10 min grace = 10:12 on the clock (the tick's 10:07 + 5 min lateness).
        ("10:12", LINK, "school", RAISE, "10:12"),
        # Back at 10:40: resolved on the tick that follows the fact, at the return's time.
        ("10:40", LINK, "school", RESOLVE, "10:40"),
        # ac-2: due 10:15 fell in the cut: counts from the return, 10:40 + 15 = 10:55, judged on
        # the tick of clock 10:55 + 5 = 11:00.
        ("11:00", DEVICE, "ac-2", RAISE, "10:55"),
        # wm-1: its own last event after the return, 10:45 + 15 = 11:00; clock 11:05.
        ("11:05", DEVICE, "wm-1", RAISE, "11:00"),
    ]
    # Nothing paged about silence during the cut (10:02-10:40) but the silence that began before it.
    assert [r for r in rows if "10:02" <= r[0] < "10:40" and r[1] == DEVICE] == [("10:06", DEVICE, "ac-1", RAISE, "10:01")]


def test_an_agent_silent_through_the_cut_pages_only_from_the_link_s_return() -> None:
    config = DeadmanConfig.model_validate({"agents": {"agent-a": ["ac-1", "ac-2"]}})
    rule = fresh(config)
    # Both devices last spoke at 10:00: all silent at 10:15, inside the cut (10:02-10:40).
    arrivals = {"10:00": both(fed(rule, "ac-1", "10:00"), fed(rule, "ac-2", "10:00")),
                "10:02": link(rule, False, "10:02"), "10:40": link(rule, True, "10:40")}  # fmt: skip
    rows = run(rule, "09:01", "11:05", arrivals)
    # One agent alert from the return: 10:40 + 15 = 10:55, on the tick of clock 11:00; its
    # devices are held back by it.
    assert [r for r in rows if r[1] != LINK] == [("11:00", AGENT, "agent-a", RAISE, "10:55")]


def test_a_site_without_a_bridge_pages_as_always() -> None:
    config = DeadmanConfig.model_validate({"agents": {"agent-a": ["ac-1", "ac-2"]}})
    rule = fresh(config)
    rows = run(rule, "09:01", "10:30", {"10:00": both(fed(rule, "ac-1", "10:00"), fed(rule, "ac-2", "10:00"))})
    # No link fact ever: all silent at 10:00 + 15 = 10:15, on the tick of clock 10:20.
    assert rows == [("10:20", AGENT, "agent-a", RAISE, "10:15")]


def test_a_blip_shorter_than_the_grace_pages_no_one() -> None:
    rule = fresh()
    arrivals = {"10:00": fed(rule, "ac-2", "10:00"), "10:10": link(rule, False, "10:10"),
                "10:14": link(rule, True, "10:14")}  # fmt: skip
    rows = run(rule, "09:01", "10:40", arrivals)
    # Down 4 min < 10: no warning. ac-2's due 10:15 fell after the cut began (10:10): counts from
    # the return, 10:14 + 15 = 10:29, on the tick of clock 10:34.
    assert rows == [("10:34", DEVICE, "ac-2", RAISE, "10:29")]


def test_a_cut_seen_only_after_it_ended_is_still_said_once() -> None:
    rule = fresh()
    rule.on_link(False, at("10:00"))
    rule.on_link(True, at("10:30"))  # both facts before any tick (e.g. a gateway catching up)
    signals = rule.on_tick(at("10:31") - LATENESS)
    # Down 30 min > 10: raised at 10:00 + 10 = 10:10 and resolved at 10:30 at once.
    assert [(s.rule, s.action, _berlin(s.at)) for s in signals] == [(LINK, RAISE, "10:10"), (LINK, RESOLVE, "10:30")]
    assert signals[1].details["minutes"] == 30.0
    assert rule.on_tick(at("10:40")) == []


def test_repeated_states_change_nothing_and_the_messages_read_well() -> None:
    rule = fresh()
    rule.on_link(True, at("09:30"))  # the retained "1" at the gateway's connect: no cut
    rule.on_link(False, at("10:00"))
    rule.on_link(False, at("10:05"))  # the retained "0" again after a gateway reconnect
    [raised] = rule.on_tick(at("10:10") - LATENESS)  # 10:00 + 10 = 10:10, not 10:15
    rule.on_link(True, at("10:25"))
    rule.on_link(True, at("10:26"))
    [resolved] = rule.on_tick(at("10:26") - LATENESS)
    assert raised.severity.value == "warning" and raised.subject == "school"
    assert raised.message == "Link to site school down since 10:00: its data waits at the campus"
    assert resolved.message == "Link to site school back at 10:25 after 25 min"
    zh = localise(resolved.message, resolved.message_id, resolved.params, "zh_CN", {})
    assert zh == "校区 school 与中心的链路中断 25 分钟 后于 10:25 恢复"


def test_snapshot_and_restore_carry_the_cut() -> None:
    rule = fresh()
    rule.on_event(power("ac-2", at("10:00")))
    rule.on_link(False, at("10:02"))
    assert [s.rule for s in rule.on_tick(at("10:12") - LATENESS)] == [LINK]  # opened at 10:12
    snapshot = rule.state_snapshot()

    again = DeadmanRule(SITE, DeadmanConfig(), LATENESS)
    again.restore(snapshot)
    rows = run(again, "10:13", "11:05", {"10:40": link(again, True, "10:40")})
    # Restored mid-cut: still held (no ac-2 at 10:15 + 5 = 10:20), not opened twice, resolved
    # at the return, and ac-2 due 10:40 + 15 = 10:55 (clock 11:00).
    assert rows == [("10:40", LINK, "school", RESOLVE, "10:40"), ("11:00", DEVICE, "ac-2", RAISE, "10:55")]


def test_an_older_snapshot_without_a_link_restores_as_no_cut() -> None:
    rule = fresh()
    rule.on_event(power("ac-2", at("10:00")))
    snapshot = rule.state_snapshot()
    del snapshot["link"]  # as written before this release
    again = DeadmanRule(SITE, DeadmanConfig(), LATENESS)
    again.restore(snapshot)
    # ac-2: 10:00 + 15 = 10:15, on the tick of clock 10:20.
    assert run(again, "10:19", "10:21", {}) == [("10:20", DEVICE, "ac-2", RAISE, "10:15")]
