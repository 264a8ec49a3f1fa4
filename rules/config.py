"""The rules' settings (the `rules:` section of the gateway's file) and their names.

Each rule family owns its parameters and the names of the alerts it raises (in its own
module); this module puts them together.
"""

from __future__ import annotations

from pydantic import Field

from rules import ac_after_hours, cold_room, deadman, doors, patrol, water
from rules.ac_after_hours import AcAfterHoursConfig
from rules.cold_room import ColdRoomConfig
from rules.deadman import DeadmanConfig
from rules.doors import DoorsConfig
from rules.patrol import PatrolConfig
from rules.water import WaterConfig
from warden.config import StrictModel

#: Every alert rule name the families emit, so a misspelt name in the gateway's
#: `escalation.rules` or a sink's `rules` is an error at start-up.
ALERT_RULES = frozenset(
    name for family in (ac_after_hours, water, doors, patrol, deadman, cold_room) for name in family.RULE_NAMES
)


class RulesConfig(StrictModel):
    allowed_lateness_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long rules wait for late data before acting on the passing of time alone",
    )
    tick_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Real seconds between two ticks of the rules (time passing without an event)",
    )
    catch_up_max_seconds: float = Field(
        default=120.0,
        gt=0,
        # An hour's backlog of 10 000 devices took 39 s to drain here (docs/benchmarks.md §9);
        # only a broker ACL denying the sync topic ever waits the whole time.
        description="After (re)connecting, real seconds to wait for the broker's backlog before ticking anyway",
    )
    ac_after_hours: AcAfterHoursConfig = Field(default_factory=AcAfterHoursConfig)
    water: WaterConfig = Field(default_factory=WaterConfig)
    doors: DoorsConfig = Field(default_factory=DoorsConfig)
    patrol: PatrolConfig = Field(default_factory=PatrolConfig)
    deadman: DeadmanConfig = Field(default_factory=DeadmanConfig)
    cold_room: ColdRoomConfig = Field(default_factory=ColdRoomConfig)


