"""One place that builds paho-mqtt clients (2.x callback API) from a BrokerConfig.

Agents, the gateway and simulators all connect through `make_client`, so credentials,
TLS, keep-alive and reconnect back-off are configured the same way everywhere.
"""

from __future__ import annotations

import logging
import ssl  # paho imports it anyway (itself, and through urllib.request): lazy here saves nothing
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from warden.config import BrokerConfig

log = logging.getLogger(__name__)


def make_client(
    broker: BrokerConfig,
    client_id: str,
    *,
    persistent_session: bool = False,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A configured, not yet connected client.

    `persistent_session` keeps the broker-side session (subscriptions and queued QoS 1
    messages) across disconnects; it needs a stable `client_id`.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls_ca_file is not None:
        client.tls_set(ca_certs=str(broker.tls_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(min_delay=broker.reconnect_min_seconds, max_delay=broker.reconnect_max_seconds)  # type: ignore[arg-type]
    return client


def client_id_for(broker: BrokerConfig, fallback: str) -> str:
    """The client id to connect with: the username if there is one, as the shipped broker
    enforces (deploy/mosquitto.conf: use_username_as_clientid), so the id a session is kept
    under is the same on any broker; `fallback` on a broker without accounts."""
    return broker.username if broker.username else fallback


def connect_async(client: mqtt.Client, broker: BrokerConfig) -> None:
    """Start connecting in paho's network thread; an unreachable broker is retried, not fatal."""
    client.connect_async(broker.host, broker.port, keepalive=broker.keepalive_seconds)
    client.loop_start()


class ConnectionFlag:
    """Tracks whether a client is connected, so callers can wait for it instead of sleeping."""

    def __init__(self) -> None:
        self.connected = threading.Event()

    def on_connect(self, reason_code: mqtt.ReasonCode) -> bool:
        ok = not reason_code.is_failure
        if ok:
            self.connected.set()
        return ok

    def on_disconnect(self) -> None:
        self.connected.clear()
