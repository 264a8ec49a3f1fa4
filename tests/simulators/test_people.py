"""A scenario's people (simulators/people.py): the section is checked where it is written,
and the outcome their actions imply is worked out without the gateway's work-order code."""

from __future__ import annotations

from typing import Any

import pytest

from simulators.people import ScenarioWithPeople, expected_orders
from tests.support.scenarios import SITE

STAFF = [{"name": "guard-lee-phone", "role": "guard", "guard": "guard-lee"}, {"name": "wu", "role": "maintenance"},
         {"name": "zhao", "role": "maintenance"}]


def night(*actions: dict[str, Any]) -> ScenarioWithPeople:
    """Tuesday 2026-11-17 16:00 to 08:00 at Riverside (Berlin) with `actions`."""
    return ScenarioWithPeople.model_validate({
        "name": "people", "start": "2026-11-17T16:00:00", "end": "2026-11-18T08:00:00", "site": SITE,
        "people": {"staff": STAFF, "actions": list(actions)},
    })


REPORT = {"at": "19:00", "who": "guard-lee-phone", "do": "report", "order": "lamp", "room": "A-101", "text": "Lamp out"}


def test_a_hand_over_of_an_untaken_order_takes_it_and_a_reopen_undoes_the_closing() -> None:
    s = night(REPORT,
              {"at": "19:30", "who": "wu", "do": "hand_over", "order": "lamp", "to": "zhao"},
              {"at": "20:00", "who": "zhao", "do": "done", "order": "lamp"},
              {"at": "20:30", "who": "guard-lee-phone", "do": "close", "order": "lamp", "rating": 2},
              {"at": "21:00", "who": "guard-lee-phone", "do": "reopen", "order": "lamp"})
    # Handed to Zhao 30 min after the report: taken then, and Zhao owns it; reopened after closing: no rating.
    assert expected_orders(s) == {"lamp": {
        "state": "reopened", "owner": "zhao", "requested_by": "guard-lee-phone", "closed_by": None, "rating": None,
        "take_minutes": 30.0, "close_minutes": None, "alert": None}}


def test_no_scenario_without_people_has_an_outcome() -> None:
    s = ScenarioWithPeople.model_validate({"name": "quiet", "start": "2026-11-17T16:00:00", "end": "2026-11-18T08:00:00",
                                           "site": SITE})
    assert s.people is None and expected_orders(s) == {}


@pytest.mark.parametrize(("actions", "error"), [
    ([{**REPORT, "who": "nobody"}], r"actions\[0\]\.who: 'nobody' is not one of staff"),
    ([{"at": "19:00", "who": "wu", "do": "take", "order": "lamp"}], r"actions\[0\]\.order: 'lamp' is not created"),
    ([REPORT, REPORT], r"actions\[1\]\.order: 'lamp' was created already"),
    ([{**REPORT, "room": None}], "report needs room"),
    ([REPORT, {"at": "18:00", "who": "wu", "do": "take", "order": "lamp"}], r"people\.actions\[1\]\.at: before the action above"),
    ([{**REPORT, "at": "2026-11-18T09:00:00"}], r"people\.actions\[0\]\.at: not inside the night"),
])
def test_the_people_section_is_checked_where_it_is_written(actions: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        night(*actions)
