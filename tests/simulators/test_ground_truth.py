"""The ground-truth file (docs/simulators.md#ground-truth) and the comparison with alerts."""

from __future__ import annotations

import json
from pathlib import Path

from simulators.ground_truth import FORMAT, compare, ground_truth_document, write_ground_truth
from simulators.scenario import load_scenario
from tests.support.scenarios import scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulators.md"


def test_the_file_says_what_where_and_when(tmp_path: Path) -> None:
    scenario = load_scenario("leak-night")
    path = write_ground_truth(tmp_path / "ground-truth.json", ground_truth_document(scenario, seed=3))
    document = json.loads(path.read_text())
    assert (document["format"], document["version"], document["seed"]) == (FORMAT, 1, 3)
    assert (document["site"], document["timezone"]) == ("riverside", "Europe/Berlin")
    burst = next(i for i in document["incidents"] if i["id"] == "water_leak-3")
    assert burst["where"] == {"device": "wm-c", "building": "B", "room": "B-PLANT"}
    assert (burst["start"], burst["end"]) == ("2026-11-18T02:20:00Z", "2026-11-18T02:40:00Z")  # 03:20-03:40 local
    assert burst["details"] == {"kind": "burst", "flow_l_per_min": 140.0}
    assert burst["alerts"] == [{"rule": "water_burst", "subject": "wm-c"}]
    assert sorted((a["rule"], a["subject"]) for a in document["expected_alerts"]) == sorted(
        (e.rule, e.subject) for e in scenario.expected or []
    )
    assert {f["type"] for f in document["faults"]} == {"duplicates", "out_of_order", "mqtt_malformed", "clock_skew", "dropout"}


def test_an_incident_that_could_not_be_injected_is_marked_and_expects_nothing() -> None:
    document = ground_truth_document(load_scenario("outage"), seed=1, skipped=["broker_restart-1"])
    [restart] = [i for i in document["incidents"] if i["type"] == "broker_restart"]
    assert restart["injected"] is False
    assert [a["incident"] for a in document["expected_alerts"]] == ["device_silent-1"]


def test_the_documented_example_is_a_real_ground_truth_file() -> None:
    example = json.loads(DOC.read_text().split("```json\n")[1].split("```")[0])
    produced = ground_truth_document(load_scenario(example["scenario"]), seed=example["seed"])
    assert set(example) == set(produced)
    assert example["incidents"][0] == produced["incidents"][0]


def test_compare_counts_each_alert_once_and_sets_reconciled_ones_apart() -> None:
    expected = [("door_forced", "door-back"), ("door_held_open", "gate-side"), ("door_held_open", "gate-side")]
    alerts = [
        {"rule": "door_forced", "subject": "door-back", "state": "open", "details": {}},
        {"rule": "door_held_open", "subject": "gate-side", "state": "resolved", "details": {}},
        {"rule": "patrol_round", "subject": "p:2026-11-18T03:30", "state": "resolved", "details": {"note": "reconciled from wand upload"}},
        {"rule": "deadman", "subject": "wm-b", "state": "open", "details": {}},
    ]
    check = compare(alerts, expected)
    assert not check.exact
    assert check.missing == [("door_held_open", "gate-side")]  # raised twice, seen once
    assert check.unexpected == [("deadman", "wm-b")]
    assert check.provisional == [("patrol_round", "p:2026-11-18T03:30")]
    assert compare(alerts[:2] + alerts[1:3], expected).exact


def test_identical_incidents_get_their_own_ids() -> None:
    s = scenario(
        devices=[{"type": "door_controller", "device": "c", "room": "A-GATE", "doors": ["d"]}],
        incidents=[{"type": "door_forced", "device": "c", "door": "d", "at": "01:30"}] * 2,
    )
    assert [s.incident_id(i) for i in s.incidents] == ["door_forced-1", "door_forced-2"]
