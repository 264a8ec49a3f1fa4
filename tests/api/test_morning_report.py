"""The morning report of a known night (tests/api/night.py): each incident is in it,
with the right numbers, in HTML, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gateway.report import ReportFiles, write_morning_report
from tests.api.night import NIGHT, RULES, SITE, NightFiles, run_night


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> NightFiles:
    return run_night(tmp_path_factory.mktemp("night"))


@pytest.fixture(scope="module")
def report(night: NightFiles, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_morning_report(night.state_db, night.history_db, SITE, NIGHT, tmp_path_factory.mktemp("out"), rules=RULES)


def rows(files: ReportFiles) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files.csv.read_text())))


def test_summary(report: ReportFiles) -> None:
    assert report.report["summary"] == {
        "energy_kwh": 1.6, "energy_cost": 0.51, "currency": "EUR",
        # issue 16: litres lost is the night-flow alert's own `litres_lost`, the water since the
        # leak began: 1.0 L/min from 18:00 to 08:00 = 840 min x 1.0 = 840 L (was 180 L, the
        # quiet window's 180 min only).
        "litres_lost": 840.0, "suspected_leaks": 1,
        "rounds_scheduled": 3, "rounds_done": 1, "checkpoints_missed": 2, "checkpoints_late": 1,
        "doors_forced": 1, "door_incidents": 2, "silent_devices": 1, "open_alerts": 6,
    }
    assert json.loads(report.json.read_text())["summary"] == report.report["summary"]


def test_energy_by_building_and_room(report: ReportFiles) -> None:
    energy = report.report["energy"]
    assert [(r["building"], r["room"], r["kwh"], r["cost"]) for r in energy["by_room"]] == [
        ("A", "A-101", 0.4, 0.13), ("A", "A-204", 1.2, 0.38)]
    assert energy["by_building"] == [{"building": "A", "kwh": 1.6, "cost": 0.51}]
    a204 = next(e for e in energy["episodes"] if e["room"] == "A-204")
    assert (a204["since"], a204["minutes"], a204["reason"]) == ("2026-11-17T18:00:00+00:00", 60.0, "power_off")
    assert report.chart is not None and "<svg" in report.chart.read_text()
    table = rows(report)
    assert {"section": "energy", "building": "A", "room": "A-204", "subject": "ac-a204", "metric": "wasted_kwh",
            "value": "1.2", "unit": "kWh", "state": "resolved", "since": "2026-11-17T18:00:00+00:00", "note": ""} in table
    assert any(r["metric"] == "cost" and r["room"] == "A-101" and r["value"] == "0.13" and r["unit"] == "EUR" for r in table)


def test_water_leak_and_night_flow(report: ReportFiles) -> None:
    water = report.report["water"]
    [leak] = water["leaks"]
    assert (leak["rule"], leak["meter"], leak["room"], leak["litres_lost"], leak["state"]) == (
        "water_night_flow", "wm-1", "B-WC", 840.0, "open")  # 1.0 L/min x 840 min (18:00-08:00), issue 16
    # 168 readings 18:00-07:55: 167 intervals x 5 min x 1.0 L/min = 835 L measured (issue 16
    # renamed night_litres to litres, over the whole day, and added the source read);
    # the quiet window 02:00-05:00 is 180 min x 1.0 = 180 L.
    assert water["meters"] == [{"meter": "wm-1", "building": "B", "room": "B-WC", "source": "flow", "litres": 835.0,
                                "quiet_litres": 180.0, "quiet_min_flow_l_per_min": 1.0, "readings": 168}]
    assert any(r["section"] == "water" and r["metric"] == "water_night_flow" and r["value"] == "840.0" for r in rows(report))


def test_patrols_per_guard_and_route(report: ReportFiles) -> None:
    patrols = report.report["patrols"]
    assert patrols["source"] == "taps"
    assert patrols["by_route_and_guard"] == [
        {"route": "north", "guard": "guard-lee", "rounds": 2, "done": 1, "not_started": 0, "missed_checkpoints": 1, "late_checkpoints": 1},
        {"route": "south", "guard": "guard-kim", "rounds": 1, "done": 0, "not_started": 1, "missed_checkpoints": 1, "late_checkpoints": 0},
    ]
    missed = [(r["round"], r["missed_tags"], r["late_tags"]) for r in patrols["rounds"]]
    assert missed == [("north:2026-11-17T23:30", ["cp-204"], []), ("north:2026-11-18T02:00", [], ["cp-204"]),
                      ("south:2026-11-18T03:00", ["cp-yard"], [])]
    assert {(r["metric"], r["value"], r["subject"]) for r in rows(report)
            if r["section"] == "patrols" and "checkpoint" in r["metric"] and r["metric"].endswith("checkpoint")} == {
        ("missed_checkpoint", "cp-204", "north:2026-11-17T23:30"), ("late_checkpoint", "cp-204", "north:2026-11-18T02:00"),
        ("missed_checkpoint", "cp-yard", "south:2026-11-18T03:00")}


def test_doors_silent_devices_and_open_alerts(report: ReportFiles) -> None:
    r = report.report
    assert [(d["door"], d["what"], d["state"]) for d in r["doors"]] == [("lab", "after hours", "resolved"), ("gate-main", "forced", "open")]
    [silent] = r["silent_devices"]
    assert (silent["device"], silent["room"], silent["last_event"]) == ("ac-a101", "A-101", "2026-11-17T21:30:00+00:00")
    ages = {(o["rule"], o["subject"]): o["age_hours"] for o in r["open_alerts"]}
    assert ages == {
        ("deadman", "ac-a101"): 9.2,  # opened 22:45, the night ends 08:00
        ("patrol_checkpoint", "north:2026-11-17T23:30:cp-204"): 8.0,
        ("door_forced", "gate-main"): 6.8,
        ("patrol_checkpoint", "north:2026-11-18T02:00:cp-204"): 5.5,
        ("patrol_round", "south:2026-11-18T03:00"): 4.8,
        # issue 16: the water rule raises inside the quiet window now, at 03:00 (was 05:00):
        # 08:00 - 03:00 = 5.0 h.
        ("water_night_flow", "wm-1"): 5.0,
    }


def test_the_html_page_shows_each_incident(report: ReportFiles) -> None:
    html = report.html.read_text()
    for text in ("Morning report: Riverside School", "1.60 kWh", "0.51 EUR", "840 L", "1 / 3", "A-204", "1.20", "0.40",
                 "Suspected leak at wm-1", "835", "guard-lee", "guard-kim", "round not started", "cp-204",
                 "gate-main", "forced", "after hours", "ac-a101", "No data from device ac-a101", "<svg"):
        assert text in html, text


def test_without_history_or_routes_the_report_uses_the_alerts(night: NightFiles, tmp_path: Path) -> None:
    files = write_morning_report(night.state_db, None, SITE, NIGHT, tmp_path)
    r = files.report
    assert r["patrols"]["source"] == "alerts"
    assert [(g["route"], g["missed_checkpoints"], g["late_checkpoints"], g["not_started"]) for g in r["patrols"]["by_route_and_guard"]] == [
        ("north", 1, 1, 0), ("south", 1, 0, 1)]
    assert r["water"]["meters"] is None and r["summary"]["litres_lost"] == 840.0
    assert r["summary"]["energy_kwh"] == 1.6
    assert "needs the historian" in files.html.read_text()


def test_a_quiet_night(night: NightFiles, tmp_path: Path) -> None:
    files = write_morning_report(night.state_db, night.history_db, SITE, "2026-11-10", tmp_path, rules=RULES)
    summary = files.report["summary"]
    assert (summary["energy_kwh"], summary["litres_lost"], summary["open_alerts"]) == (0, 0, 0)
    assert files.chart is None and json.loads(files.alerts_json.read_text()) == []
    assert "No air-conditioner or circuit ran after hours." in files.html.read_text()
