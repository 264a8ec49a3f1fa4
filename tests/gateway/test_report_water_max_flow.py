"""The morning report reads water meters as the water rule does, with the site's own
`water.max_flow_l_per_min`: a register step faster than that is a replaced meter, not water.

A campus whose biggest meter is a DN40 (overload flow about 333 L/min) sets 500 L/min. Its
meter is replaced in the morning by one reading 30 m3 higher: 30 000 L in 15 min is
2000 L/min, under the default 2500 L/min (so the default would count it as water) and
above the configured 500 (so the report must not).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.historian.sqlite import SqliteHistorian
from gateway.report import write_morning_report
from gateway.store import StateStore
from rules.config import RulesConfig
from warden.config import SiteConfig
from warden.events import Reading, stable_event_id

SITE = SiteConfig.model_validate({
    "id": "dale",
    "timezone": "Europe/Berlin",
    "buildings": [{"id": "B", "rooms": [{"id": "B-WC", "devices": ["wm-1"]}]}],
})


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    """A December (UTC+1) local time, in UTC."""
    return datetime(2026, 12, day, hour, minute, tzinfo=timezone.utc) - timedelta(hours=1)


def register(at: datetime, m3: float) -> Reading:
    return Reading(id=stable_event_id("dale", "wm-1", "v", at.isoformat()), site="dale", device="wm-1",
                   event_time=at, quantity="volume", value=m3, unit="m3", cumulative=True)


@pytest.mark.parametrize(
    ("max_flow", "litres"),
    [
        # 96 readings 08:00 .. 07:45, 95 steps of 15 min at 10 L/min = 150 L each; the step
        # 11:45 -> 12:00 is the replacement (+30 m3 on top of its 150 L).
        (500.0, 94 * 150),  # 2000 L/min > 500: unknown, nothing counted = 14 100 L
        (None, 94 * 150 + 30_150),  # the default 2500 L/min takes the step as water = 44 250 L
    ],
)
def test_the_report_uses_the_configured_max_flow(tmp_path: Path, max_flow: float | None, litres: float) -> None:
    points, m3, at = [], 1234.0, berlin(1, 8)
    while at < berlin(2, 8):
        points.append(register(at, m3))
        m3 += 0.150
        if at == berlin(1, 11, 45):
            m3 += 30.0  # the new meter reads 30 m3 more
        at += timedelta(minutes=15)
    history = SqliteHistorian(tmp_path / "history.db", SITE)
    history.write(points)
    history.close()
    StateStore(tmp_path / "state.db").close()
    rules = RulesConfig.model_validate({"water": {"max_flow_l_per_min": max_flow}} if max_flow else {})

    files = write_morning_report(tmp_path / "state.db", tmp_path / "history.db", SITE, "2026-12-01", tmp_path / "out",
                                 rules=rules)

    [meter] = files.report["water"]["meters"]
    assert meter["readings"] == 96 and meter["source"] == "register"
    assert meter["litres"] == pytest.approx(litres, abs=0.5)
