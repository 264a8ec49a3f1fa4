"""The repair-night scenario end to end (issue 18's "done when"): `warden demo --scenario
repair-night` as a user runs it, in its own process: simulated meters -> real agent -> real
Mosquitto -> gateway -> real HTTP API, with the scenario's people acting through that API on
the accelerated clock (simulators/people.py): a guard's request from her phone taken,
handed over, closed and rated, and the night's burst alert turned into a work order. The
tests read what the demo wrote (its state.db, alerts, ground-truth check, work-orders.json).
The last test plays the same people against separate `warden agent` and `warden gateway`
processes (the fault suite's drill).

Every expected value is worked out below from simulators/scenarios/repair-night.yaml:
the site is in Berlin, CET (UTC+1) in November, so 19:05 local is 18:05 UTC."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.monthly import build_monthly_report
from gateway.store import StateStore
from simulators.broker import MosquittoBroker
from simulators.catalogue import load_scenario
from tests.support.scripts import console_script
from warden.config import SiteConfig, load_config

SPEED = 20_000  # as tests/test_end_to_end.py: 14 h of night in about 2.5 s


@pytest.fixture(scope="module")
def night(mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's output folder. `mosquitto`: the real broker must be installed; the demo starts its own."""
    out = tmp_path_factory.mktemp("repair-night")
    done = subprocess.run([console_script("warden"), "demo", "--scenario", "repair-night", "--out", str(out),
                           "--speed", str(SPEED), "--seed", "7", "--broker", "mosquitto"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "water_burst" in done.stdout  # the alerts' table; the summary lines go to stderr
    assert "2 work orders made by the scenario's people: as their actions imply" in done.stderr
    assert "match the ground truth" in done.stderr
    return out


def read(out: Path, name: str) -> Any:
    return json.loads((out / name).read_text())


def orders(out: Path) -> list[dict[str, Any]]:
    """The work orders as the gateway stored them (its state.db, read with a connection of our own)."""
    db = sqlite3.connect(out / "data" / "state.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM work_orders ORDER BY id")]
    finally:
        db.close()


def test_the_guards_request_is_taken_handed_over_closed_and_rated(night: Path) -> None:
    tap, _ = orders(night)
    # Reported 19:05 local = 18:05 UTC; taken by Wu 19:20 (15 min later); handed to Zhao 19:50; done 22:15;
    # closed by the guard 23:00 = 22:00 UTC, 3 h 55 min = 235 min after the report, rated 4.
    assert (tap["room"], tap["category"], tap["priority"], tap["state"]) == ("A-WC", "plumbing", "normal", "closed")
    assert (tap["requested_by"], tap["owner"], tap["rating"]) == ("guard-lee-phone", "caretaker-zhao", 4)
    assert (tap["created_at"], tap["taken_at"], tap["done_at"], tap["closed_at"]) == (
        "2026-11-17T18:05:00+00:00", "2026-11-17T18:20:00+00:00", "2026-11-17T21:15:00+00:00", "2026-11-17T22:00:00+00:00")
    # Normal priority, default deadlines: take within 2 h (20:05 UTC), resolve within 24 h; both kept: no escalation.
    assert (tap["take_by"], tap["resolve_by"], tap["escalation_level"]) == (
        "2026-11-17T20:05:00+00:00", "2026-11-18T18:05:00+00:00", 0)
    played = read(night, "work-orders.json")
    seen = played["observed"]["tap"]
    assert seen["photos"] == 1  # the phone's photo
    assert seen["history"] == [
        ["guard-lee-phone", "created"], ["guard-lee-phone", "photo"], ["plumber-wu", "take"], ["plumber-wu", "hand_over"],
        ["caretaker-zhao", "start"], ["caretaker-zhao", "wait"], ["caretaker-zhao", "start"], ["caretaker-zhao", "done"],
        ["guard-lee-phone", "close"]]


def test_the_burst_alert_becomes_a_work_order_and_the_night_pages_only_its_truth(night: Path) -> None:
    _, burst = orders(night)
    [alert] = [a for a in read(night, "alerts.json") if a["rule"] == "water_burst"]
    # Made from the alert at 04:00 local = 03:00 UTC: room of wm-c (B-PLANT), plumbing (a water_ rule), urgent (the
    # alert is critical): 30 min to take (03:30 UTC), 4 h to resolve (07:00 UTC). Taken 04:02 (2 min), done 05:10,
    # closed by the manager 07:45 = 06:45 UTC, 3 h 45 min = 225 min after it was made, rated 5.
    assert (burst["room"], burst["category"], burst["priority"], burst["alert_id"]) == ("B-PLANT", "plumbing", "urgent", alert["id"])
    assert alert["work_order_id"] == burst["id"]
    assert (burst["requested_by"], burst["owner"], burst["state"], burst["rating"]) == ("plumber-wu", "plumber-wu", "closed", 5)
    assert (burst["created_at"], burst["taken_at"], burst["closed_at"]) == (
        "2026-11-18T03:00:00+00:00", "2026-11-18T03:02:00+00:00", "2026-11-18T06:45:00+00:00")
    assert (burst["take_by"], burst["resolve_by"], burst["escalation_level"]) == (
        "2026-11-18T03:30:00+00:00", "2026-11-18T07:00:00+00:00", 0)
    played = read(night, "work-orders.json")
    assert played["observed"]["burst"]["history"][-1] == ["site-manager", "close"]
    # The people acting on the night change no alert: it still pages exactly its ground truth.
    check = read(night, "ground-truth-check.json")
    assert check["ok"], check
    assert sorted((a["rule"], a["subject"]) for a in read(night, "alert-history.json")) == [
        ("water_burst", "wm-c"), ("water_wet", "wet-c")]


def test_what_the_people_did_is_what_their_actions_imply(night: Path) -> None:
    """simulators/people.py derives each order's outcome from the actions; here the same by hand."""
    played = read(night, "work-orders.json")
    assert played["ok"] and played["differences"] == []
    assert played["expected"] == {
        "tap": {"state": "closed", "owner": "caretaker-zhao", "requested_by": "guard-lee-phone", "closed_by": "guard-lee-phone",
                "rating": 4, "take_minutes": 15.0, "close_minutes": 235.0, "alert": None},
        "burst": {"state": "closed", "owner": "plumber-wu", "requested_by": "plumber-wu", "closed_by": "site-manager",
                  "rating": 5, "take_minutes": 2.0, "close_minutes": 225.0, "alert": ["water_burst", "wm-c"]},
    }


def test_the_nights_month_reports_its_repair_requests_and_the_supervision_view(night: Path) -> None:
    site = load_config(night / "site.yaml", SiteConfig)
    store = StateStore(night / "data" / "state.db")
    try:
        report = build_monthly_report(store, site, "2026-11", generated_at=datetime(2026, 11, 18, 7, 0, tzinfo=timezone.utc))
    finally:
        store.close()
    [plumbing] = report["work_orders_by_category"]
    # Both orders are plumbing: takes [15, 2] min: median 8.5, p90 (2nd of 2) 15; closes [235, 225]: median 230,
    # p90 235; none late; ratings 4 and 5: mean 4.5, both 4-5.
    assert {k: plumbing[k] for k in ("key", "work_orders", "take_median_min", "take_p90_min", "close_median_min",
                                     "close_p90_min", "overdue", "ratings", "rating_mean", "satisfied_share")} == {
        "key": "plumbing", "work_orders": 2, "take_median_min": 8.5, "take_p90_min": 15.0, "close_median_min": 230.0,
        "close_p90_min": 235.0, "overdue": 0, "ratings": 2, "rating_mean": 4.5, "satisfied_share": 1.0}
    # Building A: the washroom request, no alert; B: the burst's order, and both alerts (wm-c and wet-c are in B-PLANT).
    assert [(r["key"], r["alerts"], r["work_orders"]) for r in report["supervision"]["building"]] == [("A", 0, 1), ("B", 2, 1)]
    # Team level (no work_orders.teams: a category is its team): plumbing did both orders and owns both water alerts.
    assert [(r["key"], r["alerts"], r["work_orders"]) for r in report["supervision"]["team"]] == [("plumbing", 2, 2)]
    assert [(r["key"], r["alerts"], r["work_orders"], r["rating_mean"]) for r in report["supervision"]["site"]] == [
        ("riverside", 2, 2, 4.5)]


# --------------------------------------------------------------------------- as separate processes

def test_the_people_act_on_a_real_gateway_process_with_the_same_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same night through the fault suite's drill (tests/faults/drill.py): `warden agent`
    and `warden gateway` processes on a private Mosquitto, the gateway on the drill's rules
    clock. Each person acts at a live tick of their own (the pipeline caught up, the rules
    clock at the action's time), through the gateway process's HTTP API."""
    from cli.demo import add_people_tokens
    from simulators.people import PeoplePlayer, ScenarioWithPeople
    from tests.faults import drill as drills

    monkeypatch.setattr(drills, "SCENARIO", "repair-night")
    monkeypatch.setattr(drills, "SPEED", 20_000.0)  # 14 h in 2.5 s of real time; the gateway ticks every 20 ms
    monkeypatch.setattr(drills, "LIVE_STEP", timedelta(minutes=20))  # besides the people's own ticks
    player: PeoplePlayer | None = None

    def person(action: Any) -> drills.Step:
        def run(drill: drills.Drill) -> None:
            drill.live_tick(drill.scenario.instant(action.at))  # caught up; the gateway's clock at the action's time
            assert player is not None
            player.act(action)

        return drills.Step(action.at, run)

    scenario = load_scenario("repair-night")
    assert scenario.people is not None
    drill = drills.Drill(tmp_path, [person(a) for a in scenario.people.actions], seed=7)
    try:
        assert isinstance(drill.scenario, ScenarioWithPeople)
        player = PeoplePlayer(drill.scenario, drill.rules_clock)
        staff = [(p, f"wdn_people-{p.name}-0123456789abcdefghijkl") for p in scenario.people.staff]
        add_people_tokens(drill.gateway_config, staff)
        drill.start()
        player.attach(drill.gateway.url, {p.name: secret for p, secret in staff})
        drill.play()
        drill.settle()
        check = drill.judge()
        played = player.outcome()
    finally:
        drill.close()
    assert check.ok, check.as_dict()
    assert played["ok"], played["differences"]
    # As worked out above: the tap taken after 15 min and closed after 235 (rated 4, Zhao's after the hand-over);
    # the burst's order taken after 2 min and closed by the manager after 225 (rated 5).
    assert [(label, o["state"], o["owner"], o["closed_by"], o["rating"], o["take_minutes"], o["close_minutes"])
            for label, o in played["observed"].items()] == [
        ("tap", "closed", "caretaker-zhao", "guard-lee-phone", 4, 15.0, 235.0),
        ("burst", "closed", "plumber-wu", "site-manager", 5, 2.0, 225.0)]
    assert played["observed"]["burst"]["alert"] == ["water_burst", "wm-c"]
