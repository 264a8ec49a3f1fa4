"""Shipped scenarios played through the whole pipeline (cli/demo.py's run_demo: simulated
devices -> real agent -> real Mosquitto -> real gateway -> API and reports), each at most
once per test session.

The `night` fixture is registered in tests/conftest.py, so tests/test_end_to_end.py and
tests/simulators/test_calendar_scenarios_live.py share one run of the nights they both
look at (a night takes 5 to 100 real seconds here; its results are only read).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cli.demo import DemoResult, run_demo
from simulators.broker import MosquittoBroker
from simulators.catalogue import load_scenario

#: Simulated seconds per real second (16 h of clock in 3 s; the pipeline's waits take longer).
SPEED = 20_000
#: The simulation's seed: the same devices' noise and faults in every test that reads a night.
SEED = 7

Night = Callable[[str], DemoResult]


@pytest.fixture(scope="session")
def night(mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> Night:
    """Runs a shipped scenario (by name) once, on first use, and returns its results.
    `mosquitto`: the demo starts a Mosquitto of its own, and must find one installed."""
    results: dict[str, DemoResult] = {}

    def run(name: str) -> DemoResult:
        if name not in results:
            results[name] = run_demo(load_scenario(name), tmp_path_factory.mktemp(name), speed=SPEED, seed=SEED)
        return results[name]

    return run
