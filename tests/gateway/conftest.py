"""Gateway test fixtures: a site with buildings and rooms, and a real VictoriaMetrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.victoria import BINARY_ENV, VictoriaMetrics, find_binary
from warden.config import SiteConfig


@pytest.fixture
def site() -> SiteConfig:
    """Two buildings; `ghost-meter` is in no room. A fresh id per test keeps tests apart
    in the shared VictoriaMetrics."""
    return SiteConfig.model_validate(
        {
            "id": f"plant-{uuid.uuid4().hex[:8]}",
            "timezone": "Europe/Berlin",
            "schedules": {"office": [{"days": "mon-fri", "hours": "07:30-17:30"}]},
            "buildings": [
                {
                    "id": "hq",
                    "rooms": [
                        {"id": "office-101", "schedule": "office", "devices": ["meter-101", "door-ctl-1"]},
                        {"id": "lobby", "devices": ["reader-lobby"]},
                    ],
                },
                {"id": "store", "rooms": [{"id": "cold-room", "devices": ["flow-7", "agent-store"]}]},
            ],
        }
    )


def _binary() -> Path:
    binary = find_binary()
    if binary is None or not binary.exists():
        where = binary or "on PATH"
        pytest.fail(
            f"victoria-metrics not found {'at ' if binary else ''}{where} (set {BINARY_ENV} to its path); "
            "install it with `apt-get install victoria-metrics` - the Influx historian tests need it",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """One VictoriaMetrics for the session; tests keep apart by writing distinct site ids."""
    server = VictoriaMetrics(_binary(), tmp_path_factory.mktemp("victoria"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A VictoriaMetrics of the test's own, for tests that stop and restart it."""
    server = VictoriaMetrics(_binary(), tmp_path)
    server.start()
    yield server
    server.stop()
