"""MQTT 5 (issue 21: EMQX clusters speak it): the gateway's session outlives its connection.

Under MQTT 5 a broker drops a session when the connection closes unless the client asked
for a Session Expiry Interval, so a gateway that only cleared clean_start would lose
every event published while it restarts. Here the real Mosquitto, on MQTT 5, holds the
events published while the gateway is stopped and hands them over when it is back.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from gateway.service import Gateway
from tests.gateway.test_gateway import EVENING, SITE, Publisher, power
from tests.support.gateway_config import local_gateway_config
from warden.clock import ManualClock
from warden.config import BrokerConfig


def _started(broker: BrokerConfig, tmp_path: Path) -> Gateway:
    gateway = Gateway(local_gateway_config(broker, tmp_path), SITE, ManualClock(EVENING + timedelta(hours=1)))
    gateway.start()
    assert gateway.subscribed.wait(10), "the gateway did not subscribe"
    return gateway


def test_events_published_while_the_gateway_is_away_arrive_once_it_is_back(broker_config: BrokerConfig, tmp_path: Path) -> None:
    broker = broker_config.model_copy(update={"protocol": "5", "session_expiry_hours": 1})
    gateway = _started(broker, tmp_path)
    assert gateway.client.protocol == 5  # paho's MQTTv5
    gateway.stop()  # its session stays on the broker for an hour

    publisher = Publisher(broker)
    try:
        for minute in range(3):  # three readings while no gateway is connected
            publisher.events(power(minute, 900.0))
    finally:
        publisher.close()

    gateway = _started(broker, tmp_path)
    try:
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) >= 3, timeout=10), gateway.counts()
    finally:
        gateway.stop()
    assert gateway.counts().get("events_stored_reading") == 3  # all three, each once
