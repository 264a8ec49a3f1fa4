"""Session fixtures: a real Mosquitto on a free loopback port, started once per test run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from simulators.broker import MosquittoBroker, find_mosquitto
from simulators.postgres import PostgresServer, find_postgres_bin
from tests.support import descriptors
from tests.support.mqtt import clear_retained
from tests.support.nights import night  # noqa: F401  (a session fixture: the end-to-end nights, played once)
from tests.support.receivers import WebhookReceiver
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster (initdb on a free loopback port), started once per test run."""
    if find_postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql); the tests need a real server")
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A cluster of the test's own, for tests that stop, restart or crash it."""
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def broker_config(mosquitto: MosquittoBroker) -> Iterator[BrokerConfig]:
    """The shared broker, left without retained messages for the next test."""
    config = BrokerConfig(host=mosquitto.host, port=mosquitto.port)
    yield config
    clear_retained(config)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP server that records what webhooks and bots post to it."""
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _forget_finished_apps() -> Iterator[None]:
    """Lets the test's FastAPI apps, and the gateways they close over, be collected (see
    descriptors.clear_fastapi_caches)."""
    yield
    if "fastapi.dependencies.models" in sys.modules:
        descriptors.clear_fastapi_caches()


@pytest.fixture(scope="module", autouse=True)
def _descriptor_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the module that leaves more than MODULE_ALLOWANCE descriptors open, or the
    process above SUITE_CEILING: select() (paho, the serial lines) refuses any numbered
    1024 or more, and the failure would come modules later, in whichever test is unlucky."""
    if not descriptors.available():
        yield
        return
    before = descriptors.open_count()
    yield
    after = descriptors.open_count()
    if after - before > descriptors.MODULE_ALLOWANCE or after > descriptors.SUITE_CEILING:
        pytest.fail(f"{request.node.nodeid} left {after - before} file descriptors open ({before} -> {after}; "
                    f"allowed {descriptors.MODULE_ALLOWANCE} a module, {descriptors.SUITE_CEILING} in all); "
                    f"open now: {dict(descriptors.kinds().most_common(6))}", pytrace=False)
