"""Small scenarios built in code, for simulator and driver tests."""

from __future__ import annotations

from typing import Any

from simulators.scenario import Scenario

SITE: dict[str, Any] = {
    "id": "riverside",
    "timezone": "Europe/Berlin",
    "holidays": ["2026-12-24"],
    "schedules": {
        "school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}],
        "gate": [{"days": "mon-fri", "hours": "06:30-19:00"}],
    },
    "buildings": [
        {
            "id": "A",
            "rooms": [
                {"id": "A-101", "schedule": "school-day"},
                {"id": "A-GATE", "schedule": "gate"},
                {"id": "A-WC", "schedule": "school-day"},
                {"id": "A-PLANT"},
            ],
        }
    ],
}

ROUTE: dict[str, Any] = {"id": "night-round", "checkpoints": ["cp-1", "cp-2", "cp-3", "cp-4"], "rounds": ["23:30", "02:00"]}


def scenario(**parts: Any) -> Scenario:
    """A Tuesday night 16:00-08:00 at Riverside; `parts` add or replace top-level keys."""
    document: dict[str, Any] = {
        "name": "test",
        "start": "2026-11-17T16:00:00",
        "end": "2026-11-18T08:00:00",
        "site": SITE,
        "rules": {"deadman": {"heartbeats_count": False, "agent_offline_minutes": 5}},
    }
    document.update(parts)
    return Scenario.model_validate(document)
