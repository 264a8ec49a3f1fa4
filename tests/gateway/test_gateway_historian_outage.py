"""Historian outages through the whole gateway: real Mosquitto, real VictoriaMetrics
(speaking InfluxDB's /api/v2/write), the InfluxDB historian with its on-disk spool.

VictoriaMetrics does not de-duplicate: an event written twice would be two samples at
one timestamp. Every event here has its own timestamp, so "the exported timestamps
equal the expected ones" means every event arrived, and exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.service import Gateway
from tests.support.victoria import VictoriaMetrics
from tests.support.wait import wait_for
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Reading, encode_events, stable_event_id
from warden.mqtt import make_client

T0 = datetime(2026, 11, 17, 20, 0, tzinfo=timezone.utc)


def readings(site: SiteConfig, start: int, count: int) -> list[Reading]:
    """Power readings of meter-101, one second apart: each has its own timestamp."""
    return [
        Reading(
            id=stable_event_id(site.id, "meter-101", "power_w", n),
            site=site.id, device="meter-101", event_time=T0 + timedelta(seconds=n),
            quantity="power", value=float(n % 40), unit="W",
        )  # fmt: skip
        for n in range(start, start + count)
    ]


def publish(broker: BrokerConfig, site: SiteConfig, events: list[Reading], per_message: int = 10) -> None:
    """QoS 1, `per_message` events a message; returns once the broker has every message."""
    client = make_client(broker, f"test-publisher-{os.getpid()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    topic = topics.events_topic(site.id, "agent-a")
    infos = [client.publish(topic, encode_events(events[i : i + per_message]), qos=1) for i in range(0, len(events), per_message)]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def gateway_config(tmp_path: Path, broker: BrokerConfig, server: VictoriaMetrics, **historian: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "id": f"gw-{tmp_path.name}"[:60],  # own persistent session per test
            "site_file": str(tmp_path / "site.yaml"),
            "broker": broker.model_dump(),
            "historian": {
                "type": "influxdb", "url": server.url, "token": "t", "org": "warden", "bucket": "warden",
                "spool_path": str(tmp_path / "influx-spool.db"),
                "flush_interval_ms": 100, "retry_interval_ms": 100, "max_retry_delay_ms": 1000, "timeout_ms": 2000,
                **historian,
            },  # fmt: skip
            "state_db": str(tmp_path / "state.db"),
        }
    )


def start_gateway(config: GatewayConfig, site: SiteConfig) -> Gateway:
    gateway = Gateway(config, site, ManualClock(T0 + timedelta(days=1)))
    gateway.start()
    assert gateway.subscribed.wait(10), "gateway did not subscribe"
    return gateway


def stored(gateway: Gateway) -> float:
    return gateway.counts().get("events_stored_reading", 0)


def historian_stat(gateway: Gateway, name: str) -> float:
    return gateway.historian.stats()[name]


def sample_times(server: VictoriaMetrics, site: SiteConfig) -> list[int]:
    return [s.timestamp_ms for s in server.samples(f'{{site="{site.id}",__name__="power_value"}}')]


def expected_times(events: list[Reading]) -> list[int]:
    return sorted(int(e.event_time.timestamp() * 1000) for e in events)


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    """Gateways a test started; stopped at the end whatever happened."""
    started: list[Gateway] = []
    yield started
    for gateway in started:
        if not gateway._stop.is_set():
            gateway.stop()


def test_historian_outage_mid_run_every_event_arrives_exactly_once(
    private_victoria_metrics: VictoriaMetrics, broker_config: BrokerConfig, site: SiteConfig, tmp_path: Path,
    gateways: list[Gateway],
) -> None:  # fmt: skip
    server = private_victoria_metrics
    gateway = start_gateway(gateway_config(tmp_path, broker_config, server), site)
    gateways.append(gateway)
    events = readings(site, 0, 250)

    publish(broker_config, site, events[:50])
    assert gateway.wait_until(lambda: stored(gateway) == 50, timeout=30), gateway.counts()
    wait_for(lambda: historian_stat(gateway, "points_written") == 50, timeout=30, what="the first 50 points sent")

    server.stop()  # the historian is down from here ...
    publish(broker_config, site, events[50:150])
    # ... and the gateway goes on acknowledging: stored (counted after the ack) while the spool grows.
    assert gateway.wait_until(lambda: stored(gateway) == 150, timeout=30), gateway.counts()
    assert historian_stat(gateway, "points_pending") == 100
    wait_for(
        lambda: historian_stat(gateway, "failed_attempts") >= 3 and historian_stat(gateway, "oldest_pending_age_seconds") >= 3,
        timeout=30, what="the historian to stay down for a few seconds",
    )  # fmt: skip
    publish(broker_config, site, events[150:200])
    assert gateway.wait_until(lambda: stored(gateway) == 200, timeout=30), gateway.counts()
    assert historian_stat(gateway, "points_pending") == 150
    assert historian_stat(gateway, "points_written") == 50
    assert server.data_dir.exists()

    server.start()  # same port, same data folder
    publish(broker_config, site, events[200:])
    assert gateway.wait_until(lambda: stored(gateway) == 250, timeout=30), gateway.counts()
    wait_for(lambda: historian_stat(gateway, "points_pending") == 0, timeout=60, what="the spool to drain")

    counts = gateway.counts()
    assert counts.get("batch_retries", 0) == 0  # no batch was ever held back from the broker
    assert counts.get("duplicates", 0) == 0 and counts.get("rejected", 0) == 0
    stats = gateway.historian.stats()
    assert (stats["points_written"], stats["points_rejected"], stats["writes_refused"]) == (250, 0, 0)
    assert sample_times(server, site) == expected_times(events)  # all 250, none twice


def test_full_spool_stops_acknowledging_and_resumes_when_the_historian_drains_it(
    private_victoria_metrics: VictoriaMetrics, broker_config: BrokerConfig, site: SiteConfig, tmp_path: Path,
    gateways: list[Gateway],
) -> None:  # fmt: skip
    server = private_victoria_metrics
    server.stop()
    gateway = start_gateway(gateway_config(tmp_path, broker_config, server, spool_max_points=20), site)
    gateways.append(gateway)
    events = readings(site, 0, 60)

    for n in (10, 20):  # one message at a time: the spool fills to its cap
        publish(broker_config, site, events[n - 10 : n])
        assert gateway.wait_until(lambda: stored(gateway) == n, timeout=30), gateway.counts()
    assert historian_stat(gateway, "points_pending") == 20

    publish(broker_config, site, events[20:])  # four more messages
    wait_for(lambda: gateway.counts().get("batch_retries", 0) >= 2, timeout=30, what="the batch to be refused twice")
    assert historian_stat(gateway, "writes_refused") >= 2
    assert stored(gateway) == 20 and gateway.counts()["messages"] == 2  # nothing more acknowledged
    assert historian_stat(gateway, "points_pending") == 20  # and nothing dropped or spooled beyond the cap

    server.start()  # the spool drains, the refused batch goes through on its next retry
    assert gateway.wait_until(lambda: stored(gateway) == 60, timeout=60), gateway.counts()
    wait_for(lambda: historian_stat(gateway, "points_pending") == 0, timeout=60, what="the spool to drain")
    assert gateway.counts()["messages"] == 6
    assert sample_times(server, site) == expected_times(events)


def test_messages_refused_by_a_full_spool_stay_at_the_broker_across_a_gateway_restart(
    private_victoria_metrics: VictoriaMetrics, broker_config: BrokerConfig, site: SiteConfig, tmp_path: Path,
    gateways: list[Gateway],
) -> None:  # fmt: skip
    server = private_victoria_metrics
    server.stop()
    config = gateway_config(tmp_path, broker_config, server, spool_max_points=20)
    first = start_gateway(config, site)
    gateways.append(first)
    events = readings(site, 0, 60)

    for n in (10, 20):
        publish(broker_config, site, events[n - 10 : n])
        assert first.wait_until(lambda: stored(first) == n, timeout=30), first.counts()
    publish(broker_config, site, events[20:])
    wait_for(lambda: first.counts().get("batch_retries", 0) >= 1, timeout=30, what="the spool to refuse a batch")
    first.stop()  # stuck: 20 points in the spool, 40 events never acknowledged

    server.start()
    second = start_gateway(config, site)  # same client id and session, same spool
    gateways.append(second)
    # The 40 unacknowledged events can only come back from the broker; the 20 from the spool.
    assert second.wait_until(lambda: stored(second) == 40, timeout=60), second.counts()
    wait_for(lambda: historian_stat(second, "points_pending") == 0, timeout=60, what="the spool to drain")
    assert historian_stat(second, "points_written") == 60
    assert second.counts().get("duplicates", 0) == 0
    assert sample_times(server, site) == expected_times(events)
