"""One place that builds paho-mqtt clients (2.x callback API) from a BrokerConfig.

Agents, the gateway and simulators all connect through `make_client`, so credentials,
TLS, keep-alive and reconnect back-off are configured the same way everywhere.
"""

from __future__ import annotations

import logging
import socket
import ssl  # paho imports it anyway (itself, and through urllib.request): lazy here saves nothing
import threading
import weakref

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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
    messages) across disconnects; it needs a stable `client_id`. Under MQTT 5 a session
    lasts only as long as the Session Expiry Interval the client asks for (0, the default,
    ends it at the disconnect): `connect_async` asks for `session_expiry_hours`.
    """
    if broker.protocol == "5":
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, manual_ack=manual_ack)
        _persistent_v5[client] = persistent_session
    else:
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=not persistent_session, protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls_ca_file is not None:
        client.tls_set(ca_certs=str(broker.tls_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(min_delay=broker.reconnect_min_seconds, max_delay=broker.reconnect_max_seconds)  # type: ignore[arg-type]
    client.on_socket_open = _send_without_delay
    return client


def _send_without_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """TCP_NODELAY on each new connection: MQTT packets are small and answered (PUBACK, a
    gateway's confirmation), and Nagle's algorithm would hold one back until the peer's
    delayed ACK of the previous, 40 ms later on Linux, on every round trip."""
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def client_id_for(broker: BrokerConfig, fallback: str) -> str:
    """The client id to connect with: the username if there is one, as the shipped broker
    enforces (deploy/mosquitto.conf: use_username_as_clientid), so the id a session is kept
    under is the same on any broker; `fallback` on a broker without accounts."""
    return broker.username if broker.username else fallback


#: MQTT 5 clients made by make_client, and whether their session is to be kept.
_persistent_v5: weakref.WeakKeyDictionary[mqtt.Client, bool] = weakref.WeakKeyDictionary()


def connect_async(client: mqtt.Client, broker: BrokerConfig) -> None:
    """Start connecting in paho's network thread; an unreachable broker is retried, not fatal."""
    persistent = _persistent_v5.get(client)
    if persistent is None:  # MQTT 3.1.1: the session's fate was set by clean_session
        client.connect_async(broker.host, broker.port, keepalive=broker.keepalive_seconds)
    else:
        client.connect_async(broker.host, broker.port, keepalive=broker.keepalive_seconds,
                             clean_start=not persistent, properties=session_properties(broker, persistent))
    client.loop_start()


def session_properties(broker: BrokerConfig, persistent: bool) -> Properties:
    """MQTT 5 CONNECT properties: a persistent session outlives the connection by
    `session_expiry_hours`, kept on every reconnect (paho resends these properties)."""
    properties = Properties(PacketTypes.CONNECT)
    if persistent:
        properties.SessionExpiryInterval = int(broker.session_expiry_hours * 3600)
    return properties


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
