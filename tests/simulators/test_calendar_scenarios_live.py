"""Issue 20's scenarios through the whole pipeline (simulated devices -> real agent ->
real Mosquitto -> real gateway -> daily report), checked against numbers worked out by
hand from each scenario's facts. tests/test_end_to_end.py compares every shipped
scenario with its derived ground truth; these look at what a manager would read. The
`night` fixture (tests/support/nights.py) plays each night once for both files."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cli.demo import DemoResult


def report(result: DemoResult) -> dict[str, Any]:
    return json.loads((result.report.parent / "report.json").read_text())  # type: ignore[no-any-return]


def test_make_up_saturday_pages_only_the_lights_left_on(night: Callable[[str], DemoResult]) -> None:
    result = night("makeup-saturday")
    assert result.check.ok, result.check.as_dict()
    # Both classroom ACs ran in the Saturday's self-study until about 21:30: no page.
    assert [(a["rule"], a["subject"]) for a in result.history] == [("lights_after_hours", "B-303")]
    [lights] = result.history
    # 21:30-23:40 at 0.6 kW x (0.9..1.0) = 1.17-1.30 kWh
    assert 1.17 * 0.98 <= lights["details"]["wasted_kwh"] <= 1.30
    assert lights["details"]["since"] == "2026-10-10T13:30:00+00:00"  # 21:30 in Shanghai


def test_vacation_day_pages_only_the_timer(night: Callable[[str], DemoResult]) -> None:
    result = night("vacation-week")
    assert result.check.ok, result.check.as_dict()
    assert [(a["rule"], a["subject"]) for a in result.history] == [("ac_after_hours", "B-301")]
    # 08:00-17:45 = 9.75 h at 1 kW x (0.9..1.0)
    assert 8.78 * 0.98 <= result.history[0]["details"]["wasted_kwh"] <= 9.75


def test_cold_room_alert_has_its_duration_and_peak_and_the_day_its_log(night: Callable[[str], DemoResult]) -> None:
    result = night("cold-room-door")
    assert result.check.ok, result.check.as_dict()
    pages = {a["rule"]: a for a in result.history}
    assert sorted(pages) == ["cold_room_warm", "door_held_open"]
    warm = pages["cold_room_warm"]
    # above 8 °C from 01:10 (3 + 0.5 x 10) to 02:10 (13 - 0.1 x 50): 60 min, peak 13 °C;
    # readings a minute apart and ±0.05 °C of noise move each end by a minute at most
    assert 58 <= warm["details"]["minutes"] <= 62
    assert 12.9 <= warm["details"]["peak_c"] <= 13.1
    assert warm["details"]["since"].startswith("2026-11-18T17:1")  # 01:10 or 01:11 local
    [room] = report(result)["cold_rooms"]
    assert (room["room"], room["limit_c"], room["sensors"]) == ("K-COLD", 8.0, ["temp-k1"])
    # one reading a minute, 20:00 to 08:00 (the report's day ends at 08:00): 720
    assert room["readings"] == 720 and len(room["hours"]) == 12
    assert 12.9 <= room["max_c"] <= 13.1 and 2.9 <= room["min_c"] <= 3.1
    # above the limit: the door's 60 min plus two defrosts, each above 8 °C for
    # 20 x (1 - 5/7) = 5.7 min: about 71 min, to a minute per crossing
    assert 66 <= room["minutes_above"] <= 76
    assert [a["state"] for a in room["alerts"]] == ["resolved"]
    html = result.report.read_text()
    assert "Cold rooms: temperature log" in html and "K-COLD" in html


def test_peak_priced_waste_is_reported_by_band(night: Callable[[str], DemoResult]) -> None:
    result = night("peak-priced-ac")
    assert result.check.ok, result.check.as_dict()
    bands = {b["band"]: b for b in report(result)["energy"]["by_band"]}
    # 2 kW x (0.9..1.0): peak 18-21 (6 kWh), flat 17-18 and 21-22 (4), valley 22:00-22:30 (1)
    for band, kwh, price in (("peak", 6.0, 1.10), ("flat", 4.0, 0.66), ("valley", 1.0, 0.27)):
        assert 0.9 * kwh * 0.98 <= bands[band]["kwh"] <= kwh, band
        assert bands[band]["cost"] == pytest.approx(bands[band]["kwh"] * price, abs=0.01)
    assert report(result)["summary"]["energy_cost"] == pytest.approx(sum(b["cost"] for b in bands.values()), abs=0.02)
