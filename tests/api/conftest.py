"""API fixtures: a real gateway on the session's Mosquitto, its API on a free port, and
one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api import ApiServer, create_app
from gateway.auth import hash_token
from gateway.config import GatewayConfig
from gateway.service import Gateway
from tests.support.gateway_config import local_gateway_config
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Event, Reading, encode_events, stable_event_id
from warden.mqtt import make_client

# Tuesday 2026-11-17, 19:00 in Berlin: after the school day.
EVENING = datetime(2026, 11, 17, 18, 0, tzinfo=timezone.utc)
EVENTS = topics.events_topic("riverside", "agent-a")

#: Test secrets; the config holds only their hashes.
TOKENS = {
    "guard": "wdn_test-guard-0123456789abcdefghijklmnopqrstuv",
    "maintenance": "wdn_test-maint-0123456789abcdefghijklmnopqrstuv",
    "manager": "wdn_test-manager-0123456789abcdefghijklmnopqrstu",
    "admin": "wdn_test-admin-0123456789abcdefghijklmnopqrstuv",
}
ROLES = ["anonymous", *TOKENS]
NAMES = {"guard": "guard-lee-phone", "maintenance": "facilities-desk", "manager": "site-manager", "admin": "it-admin"}

SITE = SiteConfig.model_validate(
    {
        "id": "riverside",
        "name": "Riverside School",
        "timezone": "Europe/Berlin",
        "tariff": {"energy_per_kwh": 0.30, "currency": "EUR"},
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "A", "rooms": [
            {"id": "A-204", "schedule": "school-day", "devices": ["ac-a204"]},
            {"id": "A-GATE", "devices": ["patrol-reader-1"]},
        ]}],
    }
)

ROUTES = [
    {"id": "north", "checkpoints": ["cp-gate", "cp-hall"], "rounds": ["23:30"], "guard": "guard-lee"},
    {"id": "south", "checkpoints": ["cp-yard"], "rounds": ["23:30"], "guard": "guard-kim"},
]


def auth_headers(role: str) -> dict[str, str]:
    return {} if role == "anonymous" else {"Authorization": f"Bearer {TOKENS[role]}"}


def power(minute: int, watts: float, device: str = "ac-a204") -> Reading:
    at = EVENING + timedelta(minutes=minute)
    return Reading(
        id=stable_event_id("riverside", device, "power_w", at.isoformat()),
        site="riverside", device=device, event_time=at, quantity="power", value=watts, unit="W",
    )


class Publisher:
    """A stand-in agent publishing events to the gateway over the real broker."""

    def __init__(self, broker: BrokerConfig) -> None:
        self.client = make_client(broker, "test-api-agent")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def events(self, *events: Event, topic: str = EVENTS) -> None:
        self.client.publish(topic, encode_events(list(events)), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def gateway_config(broker: BrokerConfig, tmp_path: Path, **api: Any) -> GatewayConfig:
    tokens = [{"name": NAMES[role], "role": role, "sha256": hash_token(secret)} for role, secret in TOKENS.items()]
    tokens[0]["guard"] = "guard-lee"
    return local_gateway_config(
        broker, tmp_path,
        api={"host": "127.0.0.1", "port": 0, "tokens": tokens, **api},
        rules={"ac_after_hours": {"standby_watts": 60, "grace_minutes": 15}, "patrol": {"routes": ROUTES}},
    )  # fmt: skip


@dataclass
class Running:
    gateway: Gateway
    api: ApiServer

    @property
    def url(self) -> str:
        return self.api.url

    def client(self, role: str = "anonymous") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth_headers(role), timeout=10)


def start(config: GatewayConfig, clock_at: datetime = EVENING + timedelta(hours=12), site: SiteConfig = SITE,
          **kwargs: Any) -> Running:
    """A gateway on `site` (the API tests' site by default) with its API on a free port, clock fixed at `clock_at`."""
    gateway = Gateway(config, site, ManualClock(clock_at), **kwargs)
    gateway.start()
    assert gateway.subscribed.wait(10), "gateway did not subscribe"
    api = ApiServer(create_app(gateway), "127.0.0.1", 0)
    api.start()
    return Running(gateway, api)


@pytest.fixture
def running(broker_config: BrokerConfig, tmp_path: Path) -> Iterator[Running]:
    server = start(gateway_config(broker_config, tmp_path))
    yield server
    server.api.stop()
    server.gateway.stop()


@pytest.fixture
def publisher(broker_config: BrokerConfig) -> Iterator[Publisher]:
    pub = Publisher(broker_config)
    yield pub
    pub.close()


def left_on(publisher: Publisher, gateway: Gateway, minutes: int = 30) -> None:
    """AC in A-204 at 1200 W after hours: an alert opens after 15 min of grace."""
    before = gateway.counts().get("events_stored_reading", 0)
    readings = [power(m, 1200) for m in range(0, minutes + 1, 5)]
    for reading in readings:
        publisher.events(reading)
    assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) >= before + len(readings), timeout=10)
