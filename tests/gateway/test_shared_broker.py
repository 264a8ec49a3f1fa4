"""Gateways of two sites share one broker (issue 21, partitioned gateways): each subscribes
to its own site's topics only, so neither sees the other's traffic, let alone dead-letters
it as `site_mismatch`, as a gateway subscribed to every site's topics did."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from gateway.service import Gateway
from tests.gateway.test_gateway import EVENING, SITE, Publisher, power
from tests.support.gateway_config import local_gateway_config
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import encode_events

HARBOUR = SiteConfig.model_validate({**SITE.model_dump(), "id": "harbour"})


def _gateway(broker: BrokerConfig, folder: Path, site: SiteConfig) -> Gateway:
    folder.mkdir()
    gateway = Gateway(local_gateway_config(broker, folder), site, ManualClock(EVENING + timedelta(hours=1)))
    gateway.start()
    assert gateway.subscribed.wait(10), f"gateway of {site.id} did not subscribe"
    return gateway


def test_each_gateway_ingests_its_own_site_and_never_sees_the_other(broker_config: BrokerConfig, tmp_path: Path) -> None:
    riverside = _gateway(broker_config, tmp_path / "riverside", SITE)
    harbour = _gateway(broker_config, tmp_path / "harbour", HARBOUR)
    publisher = Publisher(broker_config)
    try:
        # Harbour's two readings first, then riverside's: one publisher, one connection, so
        # the broker hands riverside's gateway anything of harbour's before its own reading.
        publisher.raw(encode_events([power(0, 900.0, site="harbour"), power(1, 900.0, site="harbour")]),
                      topic=topics.events_topic("harbour", "agent-a"))
        publisher.raw(encode_events([power(0, 800.0)]), topic=topics.events_topic("riverside", "agent-a"))
        assert harbour.wait_until(lambda: harbour.counts().get("events_stored_reading", 0) >= 2, timeout=10)
        assert riverside.wait_until(lambda: riverside.counts().get("events_stored_reading", 0) >= 1, timeout=10)
    finally:
        publisher.client.disconnect()
        riverside.stop()
        harbour.stop()
    assert riverside.counts().get("events_stored_reading") == 1, riverside.counts()
    assert harbour.counts().get("events_stored_reading") == 2, harbour.counts()
    assert riverside.store.dead_letters() == [] and harbour.store.dead_letters() == []
    assert "rejected" not in riverside.counts() and "rejected" not in harbour.counts()
