"""Session fixtures: a real Mosquitto on a free loopback port, started once per test run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from simulators.broker import MosquittoBroker, find_mosquitto
from tests.support.mqtt import clear_retained
from warden.config import BrokerConfig

# Property tests are judged on their examples, not on a 200 ms wall-clock budget per
# example that a loaded 2-core machine misses (a test's own @settings may still set one).
settings.register_profile("warden", deadline=None)
settings.load_profile("warden")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); the tests need a real broker")
    broker = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker of the test's own, for tests that stop and restart it."""
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def broker_config(mosquitto: MosquittoBroker) -> Iterator[BrokerConfig]:
    """The shared broker, left without retained messages for the next test."""
    config = BrokerConfig(host=mosquitto.host, port=mosquitto.port)
    yield config
    clear_retained(config)
