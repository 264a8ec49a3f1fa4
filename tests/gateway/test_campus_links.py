"""The gateway's memory of campus links (gateway/devices.py: CampusLinks): a bounded
history of cuts per campus, a repeated state no new cut, and a cut begun before a restart
keeping its start, and the daily report's row of a cut. Minutes: 08:00 + n on Tuesday
17 November 2026, UTC."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from gateway.devices import CampusLinks
from gateway.report import build_morning_report
from gateway.store import StateStore
from rules.config import RulesConfig
from rules.sites import SiteRules
from warden.clock import ManualClock
from warden.config import SiteConfig

T0 = datetime(2026, 11, 17, 8, 0, tzinfo=timezone.utc)


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def cut(start: int, end: int | None) -> dict[str, object]:
    return {"start": minute(start).isoformat(), "end": minute(end).isoformat() if end is not None else None,
            "minutes": end - start if end is not None else None}


def test_only_the_last_cuts_are_kept_and_the_newest_shown_first() -> None:
    links = CampusLinks(kept=3)
    # Four cuts of 1, 2, 3 and 4 minutes: down at 0, 10, 20, 30; up 1, 2, 3, 4 minutes later.
    for start, length in [(0, 1), (10, 2), (20, 3), (30, 4)]:
        links.heard("hillside", False, minute(start))
        links.heard("hillside", True, minute(start + length))
    assert links.health(shown=5)["hillside"] == {"state": "up", "heard_at": minute(34).isoformat(),
                                                  "cuts": [cut(30, 34), cut(20, 23), cut(10, 12)]}  # the 1-minute one forgotten
    assert links.health(shown=2)["hillside"]["cuts"] == [cut(30, 34), cut(20, 23)]


def test_a_repeated_state_is_no_new_cut_and_an_up_first_heard_is_none() -> None:
    links = CampusLinks()
    links.heard("hillside", True, minute(0))  # the retained "1" at the gateway's start
    links.heard("hillside", False, minute(5))
    links.heard("hillside", False, minute(7))  # the retained "0" again at a reconnect
    assert links.health()["hillside"] == {"state": "down", "heard_at": minute(7).isoformat(), "cuts": [cut(5, None)]}
    assert links.device_fields("hillside") == {"link": "down", "link_down_since": minute(5).isoformat()}
    assert links.device_fields("riverside") == {"link": None, "link_down_since": None}


def test_a_cut_begun_before_a_restart_keeps_its_start() -> None:
    links = CampusLinks()
    links.restore({"hillside": (minute(0), None), "riverside": (minute(2), minute(9))})
    assert links.health()["riverside"] == {"state": "up", "heard_at": None, "cuts": [cut(2, 9)]}
    links.heard("hillside", False, minute(20))  # the retained "0" heard after the restart: the same cut
    links.heard("hillside", True, minute(30))
    assert links.health()["hillside"]["cuts"] == [cut(0, 30)]


def test_the_daily_report_lists_a_cut_from_its_start_with_its_length(tmp_path: Path) -> None:
    """Riverside (Berlin, UTC+1) cut off from 22:00 to 22:25 UTC on 17 Nov, i.e. 23:00-23:25
    local, inside the report day of the 17th (08:00 to 08:00). The dead-man rule's default
    grace is 10 minutes, so its site_link_down opens at 22:10 and resolves at 22:25: 25 minutes."""
    site = SiteConfig.model_validate({"id": "riverside", "timezone": "Europe/Berlin"})
    rules = SiteRules([(site, RulesConfig())])
    down, up = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc), datetime(2026, 11, 17, 22, 25, tzinfo=timezone.utc)
    rules.on_link(False, down, "riverside")
    raised = rules.on_tick(down + timedelta(minutes=15))
    rules.on_link(True, up, "riverside")
    resolved = rules.on_tick(up + timedelta(minutes=5))
    store = StateStore(tmp_path / "state.db", ManualClock(up))
    try:
        store.commit_batch([], raised, {})
        store.commit_batch([], resolved, {})
        report = build_morning_report(store, None, site, date(2026, 11, 17))
    finally:
        store.close()
    [cut_row] = report["silent_devices"]
    assert (cut_row["rule"], cut_row["device"], cut_row["link"]) == ("site_link_down", "riverside", True)
    assert (cut_row["last_event"], cut_row["minutes"], cut_row["state"]) == (down.isoformat(), 25, "resolved")
