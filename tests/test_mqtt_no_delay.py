"""Every MQTT connection sends its packets at once (TCP_NODELAY), at both ends: with Nagle's
algorithm a PUBACK or a delivery waits for the peer's delayed ACK of the previous packet,
40 ms on Linux, on every round trip (docs/benchmarks.md, "Burst latency")."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from simulators.broker import MosquittoBroker
from warden.config import BrokerConfig
from warden.mqtt import make_client

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def no_delay(client: mqtt.Client) -> int:
    sock = client.socket()
    assert isinstance(sock, socket.socket), sock
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_client_sends_without_delay_on_its_first_connection_and_after_a_reconnect(private_mosquitto: MosquittoBroker) -> None:
    broker = BrokerConfig(host=private_mosquitto.host, port=private_mosquitto.port,
                          reconnect_min_seconds=0.05, reconnect_max_seconds=0.2)  # fmt: skip
    client = make_client(broker, "test-no-delay")
    connections = threading.Semaphore(0)
    client.on_connect = lambda *args: connections.release()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connections.acquire(timeout=10)
        assert no_delay(client) != 0
        private_mosquitto.restart()  # paho opens a new socket: the option must be set again
        assert connections.acquire(timeout=10)
        assert no_delay(client) != 0
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_brokers_send_without_delay_too() -> None:
    """The shipped configs and the tests' and demo's own Mosquitto."""
    for conf in (DEPLOY / "mosquitto.conf", DEPLOY / "compose" / "mosquitto.conf"):
        assert re.search(r"^set_tcp_nodelay true$", conf.read_text(), re.MULTILINE), conf
    broker = MosquittoBroker()
    try:
        assert "set_tcp_nodelay true\n" in broker.config_path.read_text()
    finally:
        broker.stop()
