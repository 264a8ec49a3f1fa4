"""The delivery acknowledgement topic under the shipped ACL (deploy/acl, issue 17 item 8):
the gateway writes `warden/v1/<site>/<agent>/ack`; each agent reads its own and no
other's, and no agent can write one (a forged ack would make an agent delete events the
gateway never stored). Same rig and marker method as test_mqtt_acl.py."""

from __future__ import annotations

import pytest

from tests.security.test_mqtt_acl import _marker, _publish_denied, connect, secure_broker  # noqa: F401  (fixtures)
from warden import topics

ACK_A = topics.ack_topic("riverside", "agent-a")
ACK_B = topics.ack_topic("riverside", "agent-b")


def test_the_gateway_acknowledges_to_an_agent_who_reads_it_live_and_retained(connect) -> None:
    agent = connect("riverside/agent-a")
    assert not agent.subscribe(ACK_A).is_failure
    assert not agent.subscribe("warden-test/marker/#").is_failure
    gateway = connect("gateway")
    gateway.publish(ACK_A, b'{"v":1,"ids":["e-1"]}', retain=True)
    marker = _marker()
    gateway.publish("warden-test/marker/ack", marker)
    assert [(m.topic, m.payload) for m in agent.received_until(marker)] == [(ACK_A, b'{"v":1,"ids":["e-1"]}')]

    restarted = connect("riverside/agent-a")  # the retained ack comes with the subscription
    assert not restarted.subscribe(ACK_A).is_failure
    retained = restarted.messages.get(timeout=10)
    assert (retained.topic, retained.payload, retained.retain) == (ACK_A, b'{"v":1,"ids":["e-1"]}', True)
    gateway.publish(ACK_A, b"", retain=True)  # cleared: the other tests share this broker


@pytest.mark.parametrize("topic", [ACK_B, "warden/v1/riverside/+/ack", "warden/v1/+/+/ack", topics.ack_topic("harbour", "agent-a")])
def test_an_agent_cannot_read_another_agents_acknowledgements(connect, topic: str) -> None:
    agent = connect("riverside/agent-a")
    agent.subscribe(topic)  # the SUBACK may grant it: Mosquitto checks read access per message
    assert not agent.subscribe("warden-test/marker/#").is_failure
    gateway = connect("gateway")
    gateway.publish(ACK_B, b'{"v":1,"ids":["b-1"]}')
    gateway.publish(topics.ack_topic("harbour", "agent-a"), b'{"v":1,"ids":["h-1"]}')
    marker = _marker()
    gateway.publish("warden-test/marker/ack", marker)
    assert [m.topic for m in agent.received_until(marker)] == [], f"agent A read another's ack through {topic}"


def test_an_agent_cannot_write_another_agents_acknowledgement(connect) -> None:
    """(Its own is read-only too; who could read a forgery there is only itself, whose
    client id the forging connection would take over, so that case is not observable.)"""
    victim = connect("riverside/agent-b")
    assert not victim.subscribe(ACK_B).is_failure
    assert not victim.subscribe("warden-test/marker/#").is_failure
    _publish_denied(connect, "riverside/agent-a", ACK_B)
    marker = _marker()
    connect("gateway").publish("warden-test/marker/ack", marker)
    assert victim.received_until(marker) == [], "agent A's forged ack to agent B was delivered"
