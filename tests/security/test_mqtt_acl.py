"""The shipped broker config (deploy/mosquitto.conf + deploy/acl) on a real Mosquitto.

The broker runs the shipped files themselves: only paths, the port and logging are
rewritten for a temporary folder (each rewrite is asserted, so a changed sample fails here
rather than being silently untested). Mosquitto drops an unauthorised MQTT 3.1.1 PUBLISH
after acknowledging it, so non-delivery is proven with a marker: the same client publishes
an allowed message after the forbidden one, and Mosquitto delivers one client's QoS 1
messages in order, so once the marker has arrived the forbidden message would have too.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.support.shipped_broker import start_shipped_broker
from warden import topics
from warden.config import BrokerConfig
from warden.mqtt import make_client

TIMEOUT = 10.0

#: The test's accounts: two agents of one site, one of another site, the gateway.
PASSWORDS = {
    "riverside/agent-a": "pw-a",
    "riverside/agent-b": "pw-b",
    "harbour/agent-a": "pw-h",
    "gateway": "pw-gateway",
    "alerts-reader": "pw-reader",
}
#: Added to the shipped ACL for the alerts test only: a topic outside warden/v1 that every
#: user may read and write, so the gateway can send a marker after an alert. It grants
#: nothing under warden/v1, so it cannot mask a hole in the shipped ACL.
TEST_MARKER_ACL = "\n# test only\npattern readwrite warden-test/marker/#\n"


@dataclass
class SecureBroker:
    host: str
    port: int
    log_path: Path

    def config(self, username: str | None, password: str | None = None) -> BrokerConfig:
        return BrokerConfig(host=self.host, port=self.port, username=username, password=password)

    def as_user(self, username: str) -> BrokerConfig:
        return self.config(username, PASSWORDS[username])


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """Mosquitto on the shipped deploy/mosquitto.conf and deploy/acl (tests/support/shipped_broker.py)."""
    try:
        broker = start_shipped_broker(tmp_path_factory.mktemp("secure-mosquitto"), PASSWORDS, extra_acl=TEST_MARKER_ACL)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield SecureBroker(broker.host, broker.port, broker.log_path)
    broker.stop()


@dataclass
class Client:
    """A connected paho client that records what it receives and its SUBACK codes."""

    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[mqtt.ReasonCode]] = field(default_factory=queue.Queue)

    def subscribe(self, topic: str) -> mqtt.ReasonCode:
        self.client.subscribe(topic, qos=1)
        (code,) = self.subacks.get(timeout=TIMEOUT)
        return code

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """QoS 1, waiting for the PUBACK (which Mosquitto sends even for a dropped publish)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def received_until(self, marker: bytes) -> list[mqtt.MQTTMessage]:
        """Everything received before the message whose payload is `marker` (which must come)."""
        seen: list[mqtt.MQTTMessage] = []
        while True:
            try:
                message = self.messages.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"marker {marker!r} never arrived; got {[m.topic for m in seen]}") from None
            if message.payload == marker:
                return seen
            seen.append(message)


@pytest.fixture
def connect(secure_broker: SecureBroker) -> Iterator:
    clients: list[mqtt.Client] = []

    def _connect(username: str) -> Client:
        config = secure_broker.as_user(username)
        client = make_client(config, f"test-{username.replace('/', '-')}-{uuid.uuid4().hex[:8]}")
        wrapper = Client(client)
        connected = threading.Event()
        result: list[mqtt.ReasonCode] = []

        def on_connect(c: mqtt.Client, userdata: object, flags: object, rc: mqtt.ReasonCode, props: object) -> None:
            result.append(rc)
            connected.set()

        client.on_connect = on_connect
        client.on_message = lambda c, u, message: wrapper.messages.put(message)
        client.on_subscribe = lambda c, u, mid, codes, props: wrapper.subacks.put(list(codes))
        client.connect(config.host, config.port)
        client.loop_start()
        clients.append(client)
        assert connected.wait(TIMEOUT), f"{username}: no CONNACK"
        assert not result[0].is_failure, f"{username} refused: {result[0]}"
        return wrapper

    yield _connect
    for client in clients:
        client.disconnect()
        client.loop_stop()


def _connack(config: BrokerConfig) -> mqtt.ReasonCode:
    """The CONNACK code for these credentials."""
    client = make_client(config, f"test-refused-{uuid.uuid4().hex[:8]}")
    outcome: queue.Queue[mqtt.ReasonCode] = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: outcome.put(rc)
    client.connect(config.host, config.port)
    client.loop_start()
    try:
        return outcome.get(timeout=TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()


def _marker() -> bytes:
    return f"marker-{uuid.uuid4().hex}".encode()


def test_anonymous_and_wrong_password_are_refused(secure_broker: SecureBroker) -> None:
    anonymous = _connack(secure_broker.config(None))
    assert anonymous.is_failure, "an anonymous client was let in"
    assert anonymous.getName() == "Not authorized", anonymous  # 3.1.1 code 5, named as in MQTT 5
    wrong = _connack(secure_broker.config("riverside/agent-a", "not-the-password"))
    assert wrong.is_failure, "a wrong password was accepted"
    assert not _connack(secure_broker.as_user("riverside/agent-a")).is_failure


def test_agent_publishes_its_own_events_and_status_to_the_gateway(connect) -> None:
    gateway = connect("gateway")
    assert not gateway.subscribe(topics.ALL_EVENTS).is_failure
    assert not gateway.subscribe(topics.ALL_STATUS).is_failure
    agent = connect("riverside/agent-a")
    agent.publish(topics.events_topic("riverside", "agent-a"), b"event-from-a")
    agent.publish(topics.status_topic("riverside", "agent-a"), b"", retain=True)  # empty retained: clears
    marker = _marker()
    agent.publish(topics.events_topic("riverside", "agent-a"), marker)
    got = gateway.received_until(marker)
    assert [(m.topic, m.payload) for m in got] == [
        ("warden/v1/riverside/agent-a/events", b"event-from-a"),
        ("warden/v1/riverside/agent-a/status", b""),
    ]


def _publish_denied(connect, username: str, topic: str) -> None:
    """Publish as `username` on a topic its ACL denies, and return once the broker has handled it.

    Mosquitto 2.0.11 answers a denied QoS 1 publish from an MQTT 3.1.1 client with a PUBACK
    that paho rejects, so paho drops the connection: either the PUBACK or the disconnect shows
    the broker has processed (and dropped) the message. A throwaway client keeps the drop
    from touching the clients the test goes on using.
    """
    client = connect(username)
    done = threading.Event()
    client.client.on_publish = lambda *args: done.set()
    client.client.on_disconnect = lambda *args: done.set()
    client.client.publish(topic, b"forged", qos=1)
    assert done.wait(TIMEOUT), "the broker neither acknowledged nor dropped the publish"
    client.client.disconnect()
    client.client.loop_stop()  # no reconnect, so no retransmission


@pytest.mark.parametrize(
    "forbidden_topic",
    [
        topics.events_topic("riverside", "agent-b"),  # another agent of its site
        topics.status_topic("riverside", "agent-b"),  # could mark agent B offline
        topics.events_topic("harbour", "agent-a"),  # same agent id, another site
    ],
)
def test_agent_cannot_publish_as_another_agent_or_site(connect, forbidden_topic: str) -> None:
    gateway = connect("gateway")
    assert not gateway.subscribe(topics.ALL_EVENTS).is_failure
    assert not gateway.subscribe(topics.ALL_STATUS).is_failure
    _publish_denied(connect, "riverside/agent-a", forbidden_topic)
    marker = _marker()
    connect("riverside/agent-a").publish(topics.events_topic("riverside", "agent-a"), marker)
    assert gateway.received_until(marker) == [], f"{forbidden_topic} was delivered to the gateway"


def test_only_the_gateway_publishes_alerts(connect) -> None:
    reader = connect("alerts-reader")
    assert not reader.subscribe("warden/v1/+/alerts").is_failure
    assert not reader.subscribe("warden-test/marker/#").is_failure
    _publish_denied(connect, "riverside/agent-a", topics.alerts_topic("riverside"))
    gateway = connect("gateway")
    gateway.publish(topics.alerts_topic("riverside"), b"real-alert")
    marker = _marker()
    gateway.publish("warden-test/marker/alerts", marker)
    got = reader.received_until(marker)
    assert [(m.topic, m.payload) for m in got] == [("warden/v1/riverside/alerts", b"real-alert")]


@pytest.mark.parametrize(
    "topic",
    [
        topics.alerts_topic("riverside"),
        "warden/v1/+/alerts",
        topics.events_topic("riverside", "agent-b"),
        topics.ALL_EVENTS,
        "warden/v1/#",
        "#",
    ],
)
def test_agent_cannot_read_alerts_or_other_agents(connect, topic: str) -> None:
    agent = connect("riverside/agent-a")
    agent.subscribe(topic)  # the SUBACK may grant it: Mosquitto checks read access per message
    assert not agent.subscribe("warden-test/marker/#").is_failure
    other = connect("riverside/agent-b")
    other.publish(topics.events_topic("riverside", "agent-b"), b"event-from-b")
    other.publish(topics.status_topic("riverside", "agent-b"), b"", retain=True)
    gateway = connect("gateway")
    gateway.publish(topics.alerts_topic("riverside"), b"alert")
    # The gateway's marker follows its alert; agent B's messages were acknowledged before the
    # alert was sent, so the broker routed them before the marker too.
    marker = _marker()
    gateway.publish("warden-test/marker/alerts", marker)
    got = agent.received_until(marker)
    assert [m.topic for m in got] == [], f"agent A read {[m.topic for m in got]} through {topic}"


# --------------------------------------------------------------------------- client ids (issue 17, hole 1)


def _session(
    config: BrokerConfig, client_id: str, *, persistent: bool = False, will: tuple[str, bytes] | None = None
) -> Client:
    """A client with a chosen client id (and will), connected; no automatic reconnect is
    wanted here, so the caller stops its loop when done."""
    client = make_client(config, client_id, persistent_session=persistent)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=False)
    wrapper = Client(client)
    connected: queue.Queue[mqtt.ReasonCode] = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
    client.on_message = lambda c, u, message: wrapper.messages.put(message)
    client.on_subscribe = lambda c, u, mid, codes, props: wrapper.subacks.put(list(codes))
    client.connect(config.host, config.port)
    client.loop_start()
    code = connected.get(timeout=TIMEOUT)
    assert not code.is_failure, f"{config.username} refused: {code}"
    return wrapper


def _close(client: Client) -> None:
    client.client.disconnect()
    client.client.loop_stop()


@pytest.mark.parametrize("claimed", ["warden-gateway-gateway", "gateway"])
def test_an_agent_claiming_the_gateways_client_id_leaves_its_session_alone(secure_broker: SecureBroker, claimed: str) -> None:
    """The gateway's persistent session holds what agents sent while it was away; an agent
    logging in with its own password and the gateway's client id (and a clean session,
    which would wipe it) must not take it over."""
    gateway = _session(secure_broker.as_user("gateway"), "warden-gateway-gateway", persistent=True)
    assert not gateway.subscribe(topics.ALL_EVENTS).is_failure
    _close(gateway)  # offline now: the broker queues for its session
    sender = _session(secure_broker.as_user("riverside/agent-b"), "warden-agent-riverside-agent-b")
    sender.publish(topics.events_topic("riverside", "agent-b"), b"queued-while-away")
    attacker = _session(secure_broker.as_user("riverside/agent-a"), claimed, persistent=False)
    _close(attacker)
    marker = _marker()
    sender.publish(topics.events_topic("riverside", "agent-b"), marker)
    _close(sender)
    back = _session(secure_broker.as_user("gateway"), "warden-gateway-gateway", persistent=True)
    try:
        got = back.received_until(marker)
    finally:
        _close(back)
    assert [m.payload for m in got] == [b"queued-while-away"]


@pytest.mark.parametrize("claimed", ["warden-agent-riverside-agent-b", "riverside/agent-b"])
def test_an_agent_claiming_another_agents_client_id_cannot_fire_its_will(connect, secure_broker: SecureBroker, claimed: str) -> None:
    """Taking over agent B's client id would disconnect B and publish its will ("offline")
    for it; with client ids bound to usernames the claim just names agent A itself."""
    gateway = connect("gateway")
    assert not gateway.subscribe(topics.ALL_STATUS).is_failure
    assert not gateway.subscribe(topics.ALL_EVENTS).is_failure
    status_b = topics.status_topic("riverside", "agent-b")
    victim = _session(secure_broker.as_user("riverside/agent-b"), "warden-agent-riverside-agent-b", will=(status_b, b"offline"))
    disconnected = threading.Event()
    victim.client.on_disconnect = lambda *args: disconnected.set()
    try:
        attacker = _session(secure_broker.as_user("riverside/agent-a"), claimed)
        _close(attacker)
        marker = _marker()
        victim.publish(topics.events_topic("riverside", "agent-b"), marker)  # B's own connection, still up
        assert gateway.received_until(marker) == [], "agent B's will was fired by agent A"
        assert not disconnected.is_set(), "agent B was disconnected"
    finally:
        _close(victim)
