"""Scenario files: a site, a simulated night, the devices on it and what goes wrong.

A scenario names its incidents under `expected`, the ground truth that tests compare
the rule layer's alerts against. Times without a date are local to the site.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from warden.config import RulesConfig, SiteConfig, _parse_hours, load_config
from warden.events import Identifier

SCENARIOS_DIR = Path(__file__).parent / "scenarios"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AcMeterSpec(_Strict):
    """An AC circuit meter; the unit runs during `runs` (local), or on and on if `left_on`."""

    device: Identifier
    runs: tuple[time, time]
    rated_w: float = Field(default=1200.0, gt=0)
    standby_w: float = Field(default=2.0, ge=0)
    left_on: bool = False

    @field_validator("runs", mode="before")
    @classmethod
    def _hours(cls, value: object) -> object:
        if isinstance(value, str):
            start, end = _parse_hours(value)
            return (start, end or time(23, 59, 59))
        return value


class RoundSpec(_Strict):
    start: time
    guard: Identifier
    checkpoints: list[Identifier] = Field(min_length=1)
    spacing_minutes: float = Field(default=4.0, gt=0)


class PatrolReaderSpec(_Strict):
    device: Identifier
    rounds: list[RoundSpec] = Field(default_factory=list)


class ExpectedAlert(_Strict):
    rule: str
    subject: str


class Scenario(_Strict):
    name: str
    description: str = ""
    site: SiteConfig
    agent: Identifier = "agent-1"
    start: datetime = Field(description="Local start of the night (no zone: the site's)")
    end: datetime
    step_seconds: float = Field(default=60.0, gt=0, description="Meter sampling interval")
    ac_meters: list[AcMeterSpec] = Field(default_factory=list)
    patrol_readers: list[PatrolReaderSpec] = Field(default_factory=list)
    rules: RulesConfig = Field(default_factory=RulesConfig, description="The gateway's rules for this site")
    expected: list[ExpectedAlert] = Field(default_factory=list)

    def local(self, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=self.site.zone)

    @property
    def start_utc(self) -> datetime:
        return self.local(self.start)

    @property
    def end_utc(self) -> datetime:
        return self.local(self.end)

    @property
    def duration(self) -> timedelta:
        return self.end_utc - self.start_utc


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario file, or a shipped one by name ("ac-left-on")."""
    path = Path(path)
    if not path.exists() and (SCENARIOS_DIR / f"{path.name}.yaml").exists():
        path = SCENARIOS_DIR / f"{path.name}.yaml"
    return load_config(path, Scenario)
