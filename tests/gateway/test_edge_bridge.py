"""A campus broker bridged to the central broker (issue 21, edge brokers), on the shipped
files: deploy/mosquitto.conf and deploy/acl at both ends, deploy/bridge/edge-bridge.conf at
the campus. Agents publish to the campus broker; the WAN between the two brokers is cut
(a relay that stops passing bytes and drops its connections) while they go on publishing;
when it is back, the gateway at the centre has every event once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.service import Gateway
from tests.gateway.test_gateway import EVENING, SITE, power
from tests.support.gateway_config import local_gateway_config
from tests.support.proxy import TcpProxy
from tests.support.shipped_broker import DEPLOY, ShippedBroker, rewrite, start_shipped_broker
from warden import topics
from warden.clock import ManualClock
from warden.events import encode_events
from warden.mqtt import make_client

PASSWORDS = {"riverside/agent-a": "pw-agent", "riverside": "pw-bridge", "gateway": "pw-gateway", "bridge-watch": "pw-watch"}
#: Test only: an account that may read the bridge notification (the gateway's own account
#: cannot be shared: client ids are usernames, so a second login would throw the gateway off).
WATCH_ACL = "\n# test only\nuser bridge-watch\ntopic read warden/v1/_bridge/+/state\n"
BRIDGE_UP = topics.ROOT + "/_bridge/riverside/state"


def bridge_section(central_port: int) -> str:
    """The shipped bridge file, pointed at the relay, with its password, without TLS (loopback)."""
    conf = (DEPLOY / "bridge" / "edge-bridge.conf").read_text()
    source = "deploy/bridge/edge-bridge.conf"
    conf = rewrite(conf, "address CENTRAL:8883", f"address 127.0.0.1:{central_port}", source)
    conf = rewrite(conf, "remote_password CHANGE-ME", f"remote_password {PASSWORDS['riverside']}", source)
    conf = rewrite(conf, "bridge_cafile /etc/mosquitto/central-ca.crt", "", source)
    return rewrite(conf, "restart_timeout 2 60", "restart_timeout 1 2", source)  # a quick test, same behaviour


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[ShippedBroker, TcpProxy, ShippedBroker]]:
    central = start_shipped_broker(tmp_path / "central", PASSWORDS, extra_acl=WATCH_ACL)
    wan = TcpProxy("127.0.0.1", central.port)
    edge = start_shipped_broker(tmp_path / "edge", PASSWORDS, extra_conf="\n" + bridge_section(wan.port))
    yield central, wan, edge
    edge.stop()
    wan.close()
    central.stop()


class BridgeWatch:
    """Follows the bridge's retained up/down notification at the central broker."""

    def __init__(self, central: ShippedBroker) -> None:
        self.state = ""
        self.changed = threading.Condition()
        self.client = make_client(central.as_user("bridge-watch"), "bridge-watch")
        self.client.on_connect = lambda c, *a: c.subscribe(BRIDGE_UP, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(central.host, central.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.state = message.payload.decode()
            self.changed.notify_all()

    def wait_for(self, state: str, timeout: float = 15) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.state == state, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_events_cross_the_bridge_after_a_wan_outage_with_nothing_lost_or_doubled(
    brokers: tuple[ShippedBroker, TcpProxy, ShippedBroker], tmp_path: Path
) -> None:
    central, wan, edge = brokers
    watch = BridgeWatch(central)
    assert watch.wait_for("1"), "the bridge never came up"
    (tmp_path / "gw").mkdir()
    gateway = Gateway(local_gateway_config(central.as_user("gateway"), tmp_path / "gw"), SITE,
                      ManualClock(EVENING + timedelta(hours=1)))
    gateway.start()
    agent = make_client(edge.as_user("riverside/agent-a"), "riverside/agent-a")
    agent.connect(edge.host, edge.port)
    agent.loop_start()
    stored = lambda: gateway.counts().get("events_stored_reading", 0)  # noqa: E731
    try:
        assert gateway.subscribed.wait(10)

        def publish(minutes: range) -> None:
            for minute in minutes:  # one reading a message; each acknowledged by the campus broker
                info = agent.publish(topics.events_topic("riverside", "agent-a"), encode_events([power(minute, 700.0)]), qos=1)
                info.wait_for_publish(5)
                assert info.is_published()

        publish(range(0, 20))
        assert gateway.wait_until(lambda: stored() >= 20, timeout=15), gateway.counts()

        wan.pause()  # the WAN stops passing bytes ...
        wan.sever()  # ... and the connection across it is gone
        assert watch.wait_for("0"), "the central broker never noticed the bridge was gone"
        publish(range(20, 60))  # the campus broker takes all 40 while the centre is out of reach
        assert stored() == 20, "nothing can cross a cut WAN"

        wan.resume()
        assert watch.wait_for("1", timeout=30), "the bridge did not come back"
        assert gateway.wait_until(lambda: stored() >= 60, timeout=30), gateway.counts()
        times = sorted(p.time for p in gateway.historian.series("ac-a204", "power", limit=1000))
    finally:
        agent.disconnect()
        agent.loop_stop()
        watch.close()
        gateway.stop()
    counts = gateway.counts()
    # 60 readings published, one per minute 0..59: 20 before the cut, 40 during it.
    assert counts.get("events_stored_reading") == 60, counts
    # A message in flight when the link was cut may cross twice (the bridge is at least
    # once): the gateway drops the copy by event id, so each reading is stored once.
    assert counts.get("events_received_reading", 0) - counts.get("duplicates", 0) == 60, counts
    assert times == [EVENING + timedelta(minutes=m) for m in range(60)]
