"""The shipped scenarios, and loading a scenario checked against its derived truth.

Apart from simulators/scenario.py (the model) because loading checks a scenario's own
`expected` list against simulators/ground_truth.py, which reads the model: here both
are imported one way, with no cycle.
"""

from __future__ import annotations

from pathlib import Path

from simulators.ground_truth import check_expected
from simulators.people import ScenarioWithPeople
from simulators.scenario import Scenario
from warden.config import load_config

SCENARIOS_DIR = Path(__file__).parent / "scenarios"


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario file, or a shipped one by name ("ac-left-on"). Where its `expected`
    alerts differ from what its incidents imply (simulators/ground_truth.py), a warning is
    logged (and written to the ground-truth file): the derivation may be what is wrong.
    A scenario may have people acting through the API (`people`, simulators/people.py)."""
    path = Path(path)
    if not path.exists() and (SCENARIOS_DIR / f"{path.name}.yaml").exists():
        path = SCENARIOS_DIR / f"{path.name}.yaml"
    scenario: Scenario = load_config(path, ScenarioWithPeople)  # `people`: simulators/people.py
    check_expected(scenario, path)
    return scenario


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))
