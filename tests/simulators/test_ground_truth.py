"""The ground truth (docs/simulators.md#ground-truth): the alerts a night's incidents imply,
with values, derived by arithmetic that shares nothing with the rules; the file every run
writes; and the comparison with every alert the night paged.

Every expected answer here is written by hand from the scenario's facts (the arithmetic
is in the comment next to it), never taken from the code under test.
"""

from __future__ import annotations

import ast
import json
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

import pytest

from simulators.calendar import local_instant, schedule_spans
from simulators.catalogue import load_scenario
from simulators.door_controller import door_schedule
from simulators.ground_truth import (
    FORMAT,
    ImpliedAlert,
    compare,
    compare_history,
    ground_truth_document,
    implied_alerts,
    write_ground_truth,
)
from simulators.scenario import Scenario
from tests.support.scenarios import ROUTE, SITE, scenario
from warden.config import SiteConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "simulators.md"
READER = {"type": "patrol_reader", "device": "r"}
DOCK = {"type": "wand_dock", "device": "dock"}
PATROL = {"patrol": {"routes": [ROUTE]}, "deadman": {"heartbeats_count": False}}


def answer(s: Scenario) -> list[tuple[str, str, dict[str, tuple[float, float]], bool]]:
    """(rule, subject, values rounded to 0.01, borderline) of every implied alert."""
    rows = [
        (a.rule, a.subject, {k: (round(lo, 2), round(hi, 2)) for k, (lo, hi) in a.values.items()}, a.borderline)
        for a in implied_alerts(s)
    ]
    return sorted(rows, key=lambda row: (row[0], row[1], sorted(row[2].items())))


# --------------------------------------------------------------------------- independence


@pytest.mark.parametrize("module", ["simulators/ground_truth.py", "simulators/base.py", "simulators/calendar.py"])
def test_the_truth_and_the_simulators_calendar_import_nothing_from_the_rules(module: str) -> None:
    """Issue 16: a calendar bug must not move the traffic, the truth and the rules together."""
    tree = ast.parse((ROOT / module).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m == "rules" or m.startswith("rules.")]


def test_the_simulators_calendar_follows_the_documented_rules() -> None:
    """docs/rules.md#schedules, by hand: Europe/Berlin, Fridays 22:00-06:00 (past midnight:
    Friday's), Saturdays 08:00-08:00 (24 h), Sundays 00:00-24:00; 25 December 2026 (a Friday)
    is a holiday."""
    site = SiteConfig.model_validate({
        "id": "s", "timezone": "Europe/Berlin", "holidays": ["2026-12-25"],
        "schedules": {"w": [{"days": "fri", "hours": "22:00-06:00"}, {"days": "sat", "hours": "08:00-08:00"},
                            {"days": "sun", "hours": "00:00-24:00"}]},
    })
    zone = site.zone
    assert local_instant(zone, date(2026, 3, 29), time(2, 30)) == datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)  # skipped: the jump
    assert local_instant(zone, date(2026, 10, 25), time(2, 30)) == datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)  # first of two

    def utc_span(a: datetime, b: datetime) -> tuple[float, float]:
        return a.replace(tzinfo=timezone.utc).timestamp(), b.replace(tzinfo=timezone.utc).timestamp()

    week = utc_span(datetime(2026, 12, 18, 12), datetime(2026, 12, 21, 12))  # Fri 18 noon - Mon 21 noon (UTC)
    # Fri 22:00 CET (21:00 UTC) - Sat 06:00 (05:00 UTC); Sat 08:00 (07:00) - Sun 08:00, joined with
    # Sunday's whole day to Mon 00:00 CET (Sun 23:00 UTC).
    assert schedule_spans(site, "w", *week) == [
        utc_span(datetime(2026, 12, 18, 21), datetime(2026, 12, 19, 5)),
        utc_span(datetime(2026, 12, 19, 7), datetime(2026, 12, 20, 23)),
    ]
    holiday = utc_span(datetime(2026, 12, 25, 12), datetime(2026, 12, 26, 6))
    assert schedule_spans(site, "w", *holiday) == []  # the Friday window starts on a holiday: not even Saturday morning
    assert schedule_spans(site, None, *week) == []


# --------------------------------------------------------------------------- water


def test_a_leak_starting_inside_the_quiet_window_is_a_night_flow_alert_with_the_litres_it_lost() -> None:
    s = scenario(
        devices=[{"type": "water_meter", "device": "wm", "room": "A-WC"}],
        incidents=[{"type": "water_leak", "device": "wm", "kind": "steady", "at": "02:40", "flow_l_per_min": 1.5}],
    )
    # 02:40-05:00 is 140 min >= 30 min to the window's end: a leak by 05:00.
    # litres lost: 1.5 x 140 = 210 L by 05:00; 1.5 x (08:00 - 02:40 = 320 min) = 480 L by the night's end.
    assert answer(s) == [("water_night_flow", "wm", {"litres_lost": (210.0, 480.0)}, False)]


def test_a_leak_too_short_before_the_window_ends_is_nothing_and_one_near_the_threshold_is_borderline() -> None:
    def night(at: str) -> Scenario:
        return scenario(
            devices=[{"type": "water_meter", "device": "wm", "room": "A-WC"}],
            incidents=[{"type": "water_leak", "device": "wm", "kind": "steady", "at": at, "until": "07:00",
                        "flow_l_per_min": 1.5}],
        )

    assert answer(night("04:40")) == []  # 20 min before 05:00, short of 30
    assert [(r, s, b) for r, s, _v, b in answer(night("04:31"))] == [("water_night_flow", "wm", True)]  # 29 min: 1 min short


def test_a_burst_and_a_wet_floor() -> None:
    s = scenario(
        devices=[{"type": "water_meter", "device": "wm", "room": "A-PLANT"}, {"type": "wet_sensor", "device": "wet", "room": "A-PLANT"}],
        incidents=[
            {"type": "water_leak", "device": "wm", "kind": "burst", "at": "03:20", "flow_l_per_min": 140},
            {"type": "wet", "device": "wet", "at": "03:25"},
        ],
    )
    # 140 L/min > 60 for 20 min (the format's default burst) >= 5 min; it stops at 03:40, before
    # the window ends at 05:00, so no night flow.
    assert answer(s) == [
        ("water_burst", "wm", {"peak_l_per_min": (140.0, 140.0)}, False),
        ("water_wet", "wet", {}, False),
    ]


def test_a_replaced_meter_implies_nothing() -> None:
    s = scenario(
        devices=[{"type": "water_meter", "device": "wm", "room": "A-WC", "base_m3": 4512.3}],
        incidents=[{"type": "meter_replaced", "device": "wm", "at": "02:30", "new_base_m3": 0.0}],
    )
    assert answer(s) == []


def test_on_the_fall_back_night_the_quiet_window_lasts_four_hours() -> None:
    s = scenario(
        start="2026-10-24T16:00:00", end="2026-10-25T08:00:00",  # Saturday to Sunday, clocks back at 03:00 CEST
        devices=[{"type": "water_meter", "device": "wm", "room": "A-WC"}],
        incidents=[{"type": "water_leak", "device": "wm", "kind": "steady", "at": "01:00", "flow_l_per_min": 2}],
    )
    # 01:00 CEST = 23:00 UTC; 05:00 CET = 04:00 UTC: 300 min, 2 x 300 = 600 L.
    # 08:00 CET = 07:00 UTC: 480 min, 2 x 480 = 960 L.
    assert answer(s) == [("water_night_flow", "wm", {"litres_lost": (600.0, 960.0)}, False)]


def test_a_leak_over_a_week_is_one_alert_judged_each_night() -> None:
    s = scenario(
        start="2026-11-16T16:00:00", end="2026-11-23T08:00:00",  # Monday to Monday
        devices=[{"type": "water_meter", "device": "wm", "room": "A-WC"}],
        incidents=[{"type": "water_leak", "device": "wm", "kind": "drip", "at": "2026-11-16T22:00:00", "flow_l_per_min": 0.8}],
    )
    # Leaking every night from Tuesday 05:00 to Monday 05:00: one open alert (never two clean windows).
    # Low: Mon 22:00 -> Mon 23 Nov 05:00 = 6 days 7 h = 151 h = 9060 min, x 0.8 = 7248 L.
    # High: to Mon 08:00 = 154 h = 9240 min, x 0.8 = 7392 L.
    # And 24 h without a dry hour (from Tuesday 22:00): continuous flow, one alert.
    assert answer(s) == [
        ("water_continuous_flow", "wm", {}, False),
        ("water_night_flow", "wm", {"litres_lost": (7248.0, 7392.0)}, False),
    ]


# --------------------------------------------------------------------------- energy


def test_an_air_conditioner_cycled_by_its_thermostat_is_one_alert_with_all_its_kwh() -> None:
    s = scenario(
        devices=[{"type": "power_meter", "device": "ac", "room": "A-101", "rated_w": 1500}],
        incidents=[{"type": "ac_left_on", "device": "ac", "at": "18:30", "until": "07:30",
                    "duty": {"on_minutes": 12, "off_minutes": 8}}],
    )
    # 18:30 Tue - 07:30 Wed after hours (school-day ends 18:00, starts 07:30): 780 min = 39 cycles of
    # 20 min, 39 x 12 = 468 min on = 7.8 h, x 1.5 kW = 11.7 kWh; 8 min off < 60: one stretch.
    # A simulated load draws 90-100 % of its power: 0.9 x 11.7 = 10.53 kWh at least.
    assert answer(s) == [("ac_after_hours", "A-101", {"wasted_kwh": (10.53, 11.7)}, False)]


def test_lights_are_lights_each_kind_its_own_alert_and_a_fridge_never() -> None:
    s = scenario(
        devices=[
            {"type": "power_meter", "device": "ac", "room": "A-101", "rated_w": 1000},
            {"type": "power_meter", "device": "light", "room": "A-101", "circuit": "lighting", "rated_w": 400},
            {"type": "power_meter", "device": "fridge", "room": "A-PLANT", "circuit": "refrigeration", "rated_w": 300},
        ],
        incidents=[
            {"type": "left_on", "device": "light", "at": "19:00", "until": "23:00"},
            {"type": "ac_left_on", "device": "ac", "at": "20:00", "until": "21:30"},
            {"type": "left_on", "device": "fridge"},
        ],
    )
    # lights 19:00-23:00: 4 h x 0.4 kW = 1.6 kWh (x 0.9 = 1.44); AC 20:00-21:30: 1.5 h x 1 kW = 1.5 kWh (1.35).
    assert answer(s) == [
        ("ac_after_hours", "A-101", {"wasted_kwh": (1.35, 1.5)}, False),
        ("lights_after_hours", "A-101", {"wasted_kwh": (1.44, 1.6)}, False),
    ]


def test_a_short_run_is_nothing_and_one_at_the_grace_period_is_borderline() -> None:
    def night(until: str) -> Scenario:
        return scenario(
            devices=[{"type": "power_meter", "device": "ac", "room": "A-101"}],
            incidents=[{"type": "ac_left_on", "device": "ac", "at": "20:00", "until": until}],
        )

    assert answer(night("20:10")) == []  # 10 min < 15 min grace
    assert [(r, b) for r, _s, _v, b in answer(night("20:15"))] == [("ac_after_hours", True)]  # exactly 15 min


def test_a_week_of_an_ac_left_on_is_one_alert_per_evening_and_one_for_the_weekend() -> None:
    s = scenario(
        start="2026-11-16T16:00:00", end="2026-11-23T08:00:00",  # Monday to Monday
        devices=[{"type": "power_meter", "device": "ac", "room": "A-101", "rated_w": 1000}],
        incidents=[{"type": "ac_left_on", "device": "ac"}],
    )
    # Mon-Thu evenings: 18:00 -> 07:30 = 13.5 h x 1 kW = 13.5 kWh each (x 0.9 = 12.15);
    # Fri 18:00 -> Mon 07:30 = 61.5 h = 61.5 kWh (55.35).
    assert answer(s) == [("ac_after_hours", "A-101", {"wasted_kwh": (12.15, 13.5)}, False)] * 4 + [
        ("ac_after_hours", "A-101", {"wasted_kwh": (55.35, 61.5)}, False)
    ]


def test_a_wall_timer_runs_through_a_holiday_only_when_told_to() -> None:
    def night(runs: Any) -> Scenario:
        return scenario(
            start="2026-12-23T16:00:00", end="2026-12-25T08:00:00",  # Wednesday to Friday; Thursday 24th a holiday
            devices=[{"type": "power_meter", "device": "ac", "room": "A-101", "rated_w": 1000, "runs": runs}],
        )

    # Thursday 24th 08:00-16:00 is unscheduled (a holiday), the timer runs anyway: 8 h x 1 kW = 8 kWh (7.2).
    assert answer(night({"hours": "08:00-16:00", "days": "mon-fri"})) == [
        ("ac_after_hours", "A-101", {"wasted_kwh": (7.2, 8.0)}, False)
    ]
    assert answer(night("08:00-16:00")) == []  # default: the room's days, never a holiday


def test_a_whole_weekend_night_is_after_hours() -> None:
    s = scenario(
        start="2026-03-28T16:00:00", end="2026-03-29T08:00:00",  # Saturday to Sunday, clocks forward at 02:00
        devices=[{"type": "power_meter", "device": "ac", "room": "A-101", "rated_w": 1000}],
        incidents=[{"type": "ac_left_on", "device": "ac"}],
    )
    # 16:00 CET = 15:00 UTC to 08:00 CEST = 06:00 UTC: 15 h (an hour skipped) x 1 kW = 15 kWh; still on
    # at the night's end, so the last update may be up to 5 min old: 15 - 5/60 = 14.917 kWh, x 0.9 = 13.425 (13.42 to 2 places).
    assert answer(s) == [("ac_after_hours", "A-101", {"wasted_kwh": (13.42, 15.0)}, False)]


# --------------------------------------------------------------------------- patrol


def test_a_round_walked_forty_minutes_late_is_one_round_alert() -> None:
    s = scenario(
        devices=[READER], guards=[{"id": "g", "route": "night-round", "reader": "r"}], rules=PATROL,
        incidents=[{"type": "late_round", "guard": "g", "round": "23:30", "minutes": 40}],
    )
    # First tap 23:30 + 40 + 2 = 00:12, after the first deadline 23:40; the last 00:24 is within
    # 00:10 + 60 min late: one patrol_round for the round, no checkpoint alerts.
    assert answer(s) == [("patrol_round", "night-round:2026-11-17T23:30", {}, False)]


@pytest.mark.parametrize(
    ("minutes", "alerts"),
    [
        # taps 23:14, 23:18, 23:22, 23:26; the round opens at 23:20 (10 min early allowed):
        # the first two do not count, cp-1 and cp-2 are missed; the others are in time.
        (-18, [("patrol_checkpoint", "night-round:2026-11-17T23:30:cp-1", {}, False),
               ("patrol_checkpoint", "night-round:2026-11-17T23:30:cp-2", {}, False)]),
        # taps 23:02 ... 23:14, all before 23:20: the round is not started.
        (-30, [("patrol_round", "night-round:2026-11-17T23:30", {}, False)]),
        # taps 23:25 ... 23:37, all after the opening and before their deadlines 23:40 ... 00:10.
        (-7, []),
    ],
)
def test_a_round_walked_early(minutes: float, alerts: list[Any]) -> None:
    s = scenario(
        devices=[READER], guards=[{"id": "g", "route": "night-round", "reader": "r"}], rules=PATROL,
        incidents=[{"type": "late_round", "guard": "g", "round": "23:30", "minutes": minutes}],
    )
    assert answer(s) == alerts


def test_skipped_rounds_and_checkpoints() -> None:
    s = scenario(
        devices=[READER], guards=[{"id": "g", "route": "night-round", "reader": "r"}], rules=PATROL,
        incidents=[
            {"type": "skip_round", "guard": "g", "round": "23:30"},
            {"type": "skip_checkpoint", "guard": "g", "round": "02:00", "tag": "cp-3"},
        ],
    )
    # 02:00 round: taps 02:02, 02:06, (cp-3 skipped), 02:14; cp-3's deadline 02:30 passes untapped.
    assert answer(s) == [
        ("patrol_checkpoint", "night-round:2026-11-18T02:00:cp-3", {}, False),
        ("patrol_round", "night-round:2026-11-17T23:30", {}, False),
    ]


def wand_night(dock_at: Any, **route: Any) -> Scenario:
    return scenario(
        devices=[DOCK], rules={"patrol": {"routes": [{**ROUTE, "wand": True, **route}]}, "deadman": {"heartbeats_count": False}},
        guards=[{"id": "g", "route": "night-round", "wand": "W1", "dock": "dock", "dock_at": dock_at}],
    )


def test_wand_rounds_uploaded_in_time_page_nothing() -> None:
    # Last deadlines 00:10 and 02:40, + 240 min: due 04:10 and 06:40; docked 00:40 and 06:10.
    assert answer(wand_night({"23:30": "00:40", "02:00": "06:10"})) == []


def test_a_wand_docked_after_its_upload_deadline_is_one_upload_late_alert() -> None:
    # 23:30 round due 00:10 + 120 = 02:10, docked 05:10: late. 02:00 round due 02:40 + 120 = 04:40,
    # docked 04:20: in time.
    s = wand_night({"23:30": "05:10", "02:00": "04:20"}, upload_deadline_minutes=120)
    assert answer(s) == [("patrol_upload_late", "night-round:2026-11-17T23:30", {}, False)]


def test_on_the_spring_forward_night_a_skipped_start_is_when_the_clocks_jump() -> None:
    s = scenario(
        start="2026-03-28T16:00:00", end="2026-03-29T08:00:00",
        devices=[READER], guards=[{"id": "g", "route": "night-round", "reader": "r"}],
        rules={"patrol": {"routes": [{**ROUTE, "rounds": ["02:30"]}]}, "deadman": {"heartbeats_count": False}},
        incidents=[{"type": "skip_round", "guard": "g", "round": "02:30"}],
    )
    [alert] = implied_alerts(s)
    assert (alert.rule, alert.subject) == ("patrol_round", "night-round:2026-03-29T02:30")
    assert alert.at == 1774746000 + 600  # 03:00 CEST = 01:00 UTC 29 March 2026 (epoch 1774746000), + 10 min


# --------------------------------------------------------------------------- doors, deadman


def test_a_door_used_after_hours_is_one_alert_per_unscheduled_period() -> None:
    s = scenario(
        start="2026-11-17T16:00:00", end="2026-11-19T08:00:00",  # Tuesday to Thursday
        devices=[{"type": "door_controller", "device": "c", "room": "A-GATE", "doors": ["d"]}],
        incidents=[
            {"type": "door_after_hours", "device": "c", "door": "d", "at": "2026-11-17T21:00:00"},
            {"type": "door_after_hours", "device": "c", "door": "d", "at": "2026-11-18T02:00:00"},  # same night
            {"type": "door_after_hours", "device": "c", "door": "d", "at": "2026-11-18T12:00:00"},  # gate open 06:30-19:00
            {"type": "door_after_hours", "device": "c", "door": "d", "at": "2026-11-18T22:00:00"},  # the next night
            {"type": "door_forced", "device": "c", "door": "d", "at": "2026-11-18T23:00:00"},
            {"type": "device_silent", "device": "c", "at": "2026-11-19T03:00:00"},  # door controllers: not watched
        ],
    )
    assert answer(s) == [("door_after_hours", "d", {}, False)] * 2 + [("door_forced", "d", {}, False)]


def test_a_doors_schedule_is_read_as_the_documentation_says() -> None:
    """docs/rules.md#doors: the override, else the door's room, else its controller's room;
    a door in no room and without an override is not judged after hours."""
    s = scenario(
        devices=[{"type": "door_controller", "device": "c", "room": "A-GATE", "doors": ["d-gate", "d-wc", "d-odd"]},
                 {"type": "door_controller", "device": "c2", "doors": ["d-loose"]}],
        site={**SITE, "buildings": [{"id": "A", "rooms": [
            {"id": "A-GATE", "schedule": "gate"}, {"id": "A-WC", "schedule": "school-day", "devices": ["d-wc"]}]}]},
        rules={"doors": {"doors": {"d-odd": {"schedule": "school-day"}, "d-gate": {"after_hours": False}}},
               "deadman": {"heartbeats_count": False}},
    )
    assert door_schedule(s, "d-gate", "c") == (False, None)  # switched off
    assert door_schedule(s, "d-wc", "c") == (True, "school-day")  # its own room
    assert door_schedule(s, "d-odd", "c") == (True, "school-day")  # its override
    assert door_schedule(s, "d-loose", "c2") == (False, None)  # nowhere
    s2 = s.model_copy(update={"rules": s.rules.model_copy(update={"doors": s.rules.doors.model_copy(update={"doors": {}})})})
    assert door_schedule(s2, "d-gate", "c") == (True, "gate")  # the controller's room


# --------------------------------------------------------------------------- the file


def test_the_file_says_what_where_and_when(tmp_path: Path) -> None:
    scenario = load_scenario("leak-night")
    path = write_ground_truth(tmp_path / "ground-truth.json", ground_truth_document(scenario, seed=3))
    document = json.loads(path.read_text())
    assert (document["format"], document["version"], document["seed"]) == (FORMAT, 2, 3)
    assert (document["site"], document["timezone"]) == ("riverside", "Europe/Berlin")
    burst = next(i for i in document["incidents"] if i["id"] == "water_leak-3")
    assert burst["where"] == {"device": "wm-c", "building": "B", "room": "B-PLANT"}
    assert (burst["start"], burst["end"]) == ("2026-11-18T02:20:00Z", "2026-11-18T02:40:00Z")  # 03:20-03:40 local
    assert burst["details"] == {"kind": "burst", "flow_l_per_min": 140.0}
    assert burst["alerts"] == [{"rule": "water_burst", "subject": "wm-c"}]
    steady = next(a for a in document["expected_alerts"] if a["subject"] == "wm-b")
    # wm-b: 2.5 L/min from 01:10; 01:10-05:00 = 230 min -> 575 L; to 08:00 = 410 min -> 1025 L.
    assert (steady["values"], steady["tolerance"], steady["borderline"]) == ({"litres_lost": [575.0, 1025.0]}, 0.2, False)
    assert document["warnings"] == []
    assert {f["type"] for f in document["faults"]} == {"duplicates", "out_of_order", "mqtt_malformed", "clock_skew", "dropout"}


def test_values_written_in_the_scenario_are_checked_too() -> None:
    s = scenario(
        devices=[{"type": "power_meter", "device": "ac", "room": "A-101", "rated_w": 1000}],
        incidents=[{"type": "ac_left_on", "device": "ac", "at": "19:00", "until": "21:00"}],
        expected=[{"rule": "ac_after_hours", "subject": "A-101", "values": {"cost": 0.6}, "tolerance": 0.05}],
    )
    [alert] = ground_truth_document(s, seed=1)["expected_alerts"]
    # 2 h x 1 kW = 2 kWh (x 0.9 = 1.8); the scenario adds cost 0.6 (2 kWh x 0.30 EUR).
    assert (alert["values"], alert["tolerance"]) == ({"wasted_kwh": [1.8, 2.0], "cost": [0.6, 0.6]}, 0.05)


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
    assert example["expected_alerts"][0] == produced["expected_alerts"][0]


def test_identical_incidents_get_their_own_ids() -> None:
    s = scenario(
        devices=[{"type": "door_controller", "device": "c", "room": "A-GATE", "doors": ["d"]}],
        incidents=[{"type": "door_forced", "device": "c", "door": "d", "at": "01:30"}] * 2,
    )
    assert [s.incident_id(i) for i in s.incidents] == ["door_forced-1", "door_forced-2"]


# --------------------------------------------------------------------------- comparison


def page(rule: str, subject: str, opened: str, *actions: str, **details: Any) -> dict[str, Any]:
    """One alert of alert-history.json."""
    changes = [{"action": "opened", "at": opened, "message": ""}] + [{"action": a, "at": opened, "message": ""} for a in actions]
    return {"id": f"{rule}:{subject}:{opened}", "rule": rule, "subject": subject, "severity": "warning",
            "opened_at": opened, "message": "", "details": details, "changes": changes}


LEAK = ImpliedAlert("water_night_flow", "wm", "water_leak-1", values={"litres_lost": (210.0, 480.0)})
ROUND = ImpliedAlert("patrol_round", "p:2026-11-17T23:30", "late_round-1")


def test_a_history_with_exactly_the_truth_is_ok() -> None:
    history = [page("water_night_flow", "wm", "2026-11-18T04:00:00Z", "updated", litres_lost=330.0),
               page("patrol_round", "p:2026-11-17T23:30", "2026-11-17T22:40:00Z")]
    check = compare_history(history, [LEAK, ROUND])
    assert check.ok and check.exact
    assert (check.missing, check.false_pages, check.mismatches) == ([], [], [])


def test_a_withdrawn_page_is_a_false_page_and_an_unopened_one_is_missing() -> None:
    history = [page("water_night_flow", "wm", "2026-11-18T04:00:00Z", litres_lost=220.0),
               page("patrol_checkpoint", "p:2026-11-17T23:30:cp-2", "2026-11-17T22:50:00Z", "withdrawn"),
               page("patrol_checkpoint", "p:2026-11-17T23:30:cp-3", "2026-11-17T22:50:00Z", "resolved")]
    check = compare_history(history, [LEAK, ROUND])
    assert not check.ok
    assert check.missing == [("patrol_round", "p:2026-11-17T23:30")]
    assert check.false_pages == [("patrol_checkpoint", "p:2026-11-17T23:30:cp-2"), ("patrol_checkpoint", "p:2026-11-17T23:30:cp-3")]


def test_a_value_out_of_tolerance_is_a_mismatch() -> None:
    # allowed: 210 x 0.8 = 168 up to 480 x 1.2 = 576 L; the alert says 270 (rate x 180 min) - fine;
    # 6726 L (day use counted) is not, nor a missing value.
    assert compare_history([page("water_night_flow", "wm", "2026-11-18T04:00:00Z", litres_lost=270.0)], [LEAK]).ok
    check = compare_history([page("water_night_flow", "wm", "2026-11-18T04:00:00Z", litres_lost=6726.0)], [LEAK])
    assert [(m.name, m.found, m.low, m.high) for m in check.mismatches] == [("litres_lost", 6726.0, 210.0, 480.0)]
    assert not check.ok and not check.missing and not check.false_pages
    check = compare_history([page("water_night_flow", "wm", "2026-11-18T04:00:00Z")], [LEAK])
    assert [(m.name, m.found) for m in check.mismatches] == [("litres_lost", None)]


def test_one_condition_paged_twice_is_one_false_page() -> None:
    history = [page("ac_after_hours", "A-101", "2026-11-17T17:15:00Z"), page("ac_after_hours", "A-101", "2026-11-17T17:55:00Z")]
    check = compare_history(history, [ImpliedAlert("ac_after_hours", "A-101", "ac_left_on-1")])
    assert check.false_pages == [("ac_after_hours", "A-101")]


def test_a_borderline_alert_may_come_or_not() -> None:
    truth = [ImpliedAlert("water_night_flow", "wm", "water_leak-1", borderline=True)]
    came = compare_history([page("water_night_flow", "wm", "2026-11-18T04:00:00Z")], truth)
    stayed_away = compare_history([], truth)
    assert came.ok and stayed_away.ok
    assert (came.borderline, stayed_away.borderline) == ([("water_night_flow", "wm", True)], [("water_night_flow", "wm", False)])


def test_a_ground_truth_document_is_a_truth_too() -> None:
    document = {"expected_alerts": [{"rule": "water_night_flow", "subject": "wm", "incident": "water_leak-1",
                                     "values": {"litres_lost": [210, 480]}, "tolerance": 0.2, "borderline": False}]}
    assert compare_history([page("water_night_flow", "wm", "2026-11-18T04:00:00Z", litres_lost=400)], document).ok
    assert not compare_history([page("water_night_flow", "wm", "2026-11-18T04:00:00Z", litres_lost=100)], document).ok


def test_a_written_value_far_from_the_derived_one_is_a_warning() -> None:
    s = scenario(
        devices=[{"type": "power_meter", "device": "ac", "room": "A-101", "rated_w": 1000}],
        incidents=[{"type": "ac_left_on", "device": "ac", "at": "19:00", "until": "21:00"}],
        expected=[{"rule": "ac_after_hours", "subject": "A-101", "values": {"wasted_kwh": 5.0}, "tolerance": 0.1}],
    )
    # 2 h x 1 kW: 1.8-2.0 kWh; 5 is beyond 2.0 x 1.1 = 2.2
    assert ground_truth_document(s, seed=1)["warnings"] == [
        "expected: ac_after_hours A-101 wasted_kwh 5, the incidents imply 1.8-2"
    ]


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


def test_the_site_helper_is_untouched() -> None:
    """The tests above build on tests/support/scenarios.py's site: its holiday and schedule."""
    assert SITE["holidays"] == ["2026-12-24"]
    assert SITE["schedules"]["school-day"] == [{"days": "mon-fri", "hours": "07:30-18:00"}]
