"""The agent against a real Mosquitto and real pseudo-terminals, driven by the simulators."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.config import AgentConfig
from agent.drivers.modbus_rtu import ModbusRtuDriver
from agent.runner import Agent
from simulators.broker import MosquittoBroker, free_port
from simulators.patrol_reader import PatrolReaderSim
from tests.support.agent_process import outbox_rows
from tests.support.mqtt import Collector
from tests.support.wait import wait_for
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig
from warden.events import DeviceStatus, PatrolTap, Reading, decode_events, stable_event_id
from warden.mqtt import make_client

T0 = datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc)
METER_TOPIC = "devices/riverside/ac-a204/state"


def agent_config(broker: BrokerConfig, reader_port: str, tmp_path: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "id": "agent-a",
            "site": "riverside",
            "broker": broker.model_dump(),
            "buffer_path": str(tmp_path / "outbox.db"),
            "heartbeat_seconds": 3600,
            "ack_timeout_seconds": None,  # no gateway here: these tests pin delivery to the broker (PUBACK mode)
            "devices": [
                {"driver": "patrol_line", "id": "reader-1", "port": reader_port, "reconnect_seconds": 0.2},
                {
                    "driver": "mqtt_json",
                    "id": "ac-a204",
                    "topic": METER_TOPIC,
                    "fields": {"power_w": {"quantity": "power", "unit": "W"}},
                },
            ],
        }
    )


@pytest.fixture
def reader() -> Iterator[PatrolReaderSim]:
    sim = PatrolReaderSim("reader-1")
    yield sim
    sim.close()


def running_agent(config: AgentConfig) -> Agent:
    agent = Agent(config, ManualClock(T0))
    agent.start()
    assert agent.uplink_flag.connected.wait(10), "agent did not connect"
    assert agent.devices_subscribed.wait(10), "agent did not subscribe its device topics"
    assert agent.drivers[0].port_open.wait(10), "reader port not opened"
    return agent


def publish(broker: BrokerConfig, topic: str, payload: bytes) -> None:
    client = make_client(broker, "test-device")
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_agent_normalises_serial_and_mqtt_devices_and_announces_itself(
    broker_config: BrokerConfig, reader: PatrolReaderSim, tmp_path: Path
) -> None:
    collector = Collector(broker_config, topics.events_topic("riverside", "agent-a"))
    status = Collector(broker_config, topics.status_topic("riverside", "agent-a"))
    agent = running_agent(agent_config(broker_config, reader.port, tmp_path))
    try:
        assert decode_events(status.message().payload)[0].state == "online"
        reader.tap("cp-gate", "guard-lee", T0)
        publish(broker_config, METER_TOPIC, json.dumps({"ts": "2026-11-17T22:01:00Z", "power_w": 812.5}).encode())

        events = {type(e): e for e in collector.events(2)}
        tap, power = events[PatrolTap], events[Reading]
        assert (tap.site, tap.device, tap.tag, tap.guard, tap.event_time) == ("riverside", "reader-1", "cp-gate", "guard-lee", T0)
        assert (power.device, power.quantity, power.value, power.unit) == ("ac-a204", "power", 812.5, "W")
        assert power.event_time == T0 + timedelta(minutes=1)
        wait_for(lambda: len(agent.outbox) == 0, what="outbox drained by PUBACKs")
    finally:
        agent.stop()
        collector.close()
    assert decode_events(status.message().payload)[0].state == "offline"
    status.close()


def test_bad_device_payload_is_counted_and_good_ones_still_flow(
    broker_config: BrokerConfig, reader: PatrolReaderSim, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector = Collector(broker_config, topics.events_topic("riverside", "agent-a"))
    agent = running_agent(agent_config(broker_config, reader.port, tmp_path))
    try:
        publish(broker_config, METER_TOPIC, b"{not json")
        publish(broker_config, METER_TOPIC, b'{"ts": "2026-11-17T22:01:00Z", "power_w": "lots"}')
        publish(broker_config, METER_TOPIC, b'{"ts": "2026-11-17T22:02:00Z", "power_w": 640}')
        [reading] = collector.events(1)
        assert reading.value == 640
        meter = agent.drivers[1]
        assert meter.counters.errors == {"not_json": 1, "bad_field": 1}
        assert any("ac-a204" in str(r.__dict__.get("device")) and "not_json" in str(r.__dict__.get("reason")) for r in caplog.records)
    finally:
        agent.stop()
        collector.close()


class AckRecorder:
    """Stands in for the MQTT client: records each PUBACK with the rows on disk as it goes out."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.acks: list[tuple[int, int]] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, outbox_rows(self.outbox)))


def device_message(mid: int, payload: bytes) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(mid=mid, topic=METER_TOPIC.encode())
    message.payload, message.qos = payload, 1
    return message


def test_a_device_message_is_acknowledged_once_its_events_are_on_disk_and_in_order(tmp_path: Path, reader: PatrolReaderSim) -> None:
    agent = Agent(agent_config(BrokerConfig(host="127.0.0.1", port=free_port()), reader.port, tmp_path), ManualClock(T0))
    client = AckRecorder(agent.config.buffer_path)
    writer_busy, release = threading.Event(), threading.Event()
    agent.outbox.submit("held", Reading(id=stable_event_id("held"), site="s", device="m", event_time=T0, quantity="power", value=1, unit="W"),
                        lambda error: (writer_busy.set(), release.wait(10)))
    assert writer_busy.wait(10)  # the next transaction waits until `release`
    try:
        agent._on_device_message(client, None, device_message(1, b'{"ts": "2026-11-17T22:01:00Z", "power_w": 640}'))  # type: ignore[arg-type]
        agent._on_device_message(client, None, device_message(2, b"{not json"))  # type: ignore[arg-type]
        assert client.acks == []  # neither: the reading is not on disk, and 2 must not overtake 1
    finally:
        release.set()
    wait_for(lambda: len(client.acks) == 2, what="both PUBACKs")
    assert client.acks == [(1, 2), (2, 2)]  # in order, each sent with the reading already on disk
    agent.outbox.close()


def test_broker_outage_buffers_to_disk_and_replays_everything_once_in_order(
    private_mosquitto: MosquittoBroker, reader: PatrolReaderSim, tmp_path: Path
) -> None:
    broker = BrokerConfig(host=private_mosquitto.host, port=private_mosquitto.port)
    collector = Collector(broker, topics.events_topic("riverside", "agent-a"), persistent=True)
    agent = running_agent(agent_config(broker, reader.port, tmp_path))
    try:
        reader.tap("cp-0", "guard-lee", T0)
        assert [e.tag for e in collector.events(1)] == ["cp-0"]
        # The broker's PUBACK for cp-0 can reach the agent after the delivery reached the
        # collector; stopped before it, the broker would leave cp-0 to be sent again (QoS 1).
        wait_for(lambda: len(agent.outbox) == 0, what="cp-0 acknowledged by the broker")

        private_mosquitto.stop()
        wait_for(lambda: not agent.uplink_flag.connected.is_set(), what="agent to notice the outage")
        for n in range(1, 21):
            reader.tap(f"cp-{n}", "guard-lee", T0 + timedelta(minutes=n))
        wait_for(lambda: len(agent.outbox) == 20, what="20 taps buffered on disk")

        private_mosquitto.start()
        replayed = collector.events(20, timeout=30)
        assert [e.tag for e in replayed] == [f"cp-{n}" for n in range(1, 21)]
        wait_for(lambda: len(agent.outbox) == 0, what="outbox emptied by PUBACKs")
        assert collector.messages.empty(), "an event arrived twice"

        # After the reconnect the agent subscribed its device topics again.
        publish(broker, METER_TOPIC, b'{"ts": "2026-11-17T23:00:00Z", "power_w": 1200}')
        [after] = collector.events(1)
        assert isinstance(after, Reading) and after.value == 1200
    finally:
        agent.stop()
        collector.close()


def test_queued_events_survive_an_agent_restart(broker_config: BrokerConfig, reader: PatrolReaderSim, tmp_path: Path) -> None:
    """Events on disk from a run that could not deliver them are sent by the next run."""
    unreachable = BrokerConfig(host="127.0.0.1", port=free_port())  # bound and closed again: nothing listens there
    first = Agent(agent_config(unreachable, reader.port, tmp_path), ManualClock(T0))
    first.start()
    assert first.drivers[0].port_open.wait(10), "reader port not opened"
    reader.tap("cp-9", None, T0)
    wait_for(lambda: len(first.outbox) == 1, what="tap buffered")
    first.stop(flush_timeout=0)

    collector = Collector(broker_config, topics.events_topic("riverside", "agent-a"))
    second = running_agent(agent_config(broker_config, reader.port, tmp_path))
    try:
        [event] = collector.events(1)
        assert isinstance(event, PatrolTap) and event.tag == "cp-9" and event.guard is None
    finally:
        second.stop()
        collector.close()


def test_modbus_meter_and_wand_dock_through_the_agent_with_health_heartbeats(
    private_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    from simulators.patrol_wand import PatrolWandSim
    from simulators.sdm120 import Sdm120Sim

    # A broker of its own: the retained status this agent leaves is stamped after T0 and
    # would look like a clock far ahead to gateway tests sharing the session broker.
    broker_config = BrokerConfig(host=private_mosquitto.host, port=private_mosquitto.port)
    clock = ManualClock(T0)
    with Sdm120Sim() as meter:
        meter.set(active_power=1312.5, import_energy=4321.5)
        config = AgentConfig.model_validate(
            {
                "id": "agent-m",
                "site": "riverside",
                "broker": broker_config.model_dump(),
                "buffer_path": str(tmp_path / "outbox.db"),
                "heartbeat_seconds": 60,
                "ack_timeout_seconds": None,  # no gateway here: "published" counts the broker's PUBACKs
                "devices": [
                    {
                        "driver": "modbus_rtu",
                        "id": "ac-a204",
                        "port": meter.port,
                        "registers": "sdm120",
                        "include": ["active_power", "import_energy"],
                        "poll_seconds": 30,
                        "timeout_seconds": 1.5,  # generous: a late answer on a loaded machine is not a timeout
                    },
                    {"driver": "patrol_wand", "id": "dock-1", "spool_dir": str(tmp_path / "spool"), "poll_seconds": 30},
                ],
            }
        )
        collector = Collector(broker_config, topics.events_topic("riverside", "agent-m"))
        agent = Agent(config, clock)
        agent.start()
        meter_driver = agent.drivers[0]
        assert isinstance(meter_driver, ModbusRtuDriver)
        try:
            assert agent.uplink_flag.connected.wait(10)
            first_poll = {e.channel: e for e in collector.events(2) if isinstance(e, Reading)}
            assert first_poll["active_power"].value == 1312.5 and first_poll["import_energy"].cumulative

            wand = PatrolWandSim("W07")
            wand.tap("cp-gate", "guard-lee", T0 - timedelta(hours=6))
            wand.dock(tmp_path / "spool", T0)
            meter.silence(0x0048)
            clock.advance(timedelta(seconds=30))  # one wand scan, one meter poll
            got = collector.events(2)
            [tap] = [e for e in got if isinstance(e, PatrolTap)]
            assert tap.source == "wand" and tap.event_time == T0 - timedelta(hours=6) and tap.reader == "W07"
            assert [e.channel for e in got if isinstance(e, Reading)] == ["active_power"]
            wait_for(lambda: meter_driver.polls == 2, what="the second poll to finish")

            meter.clear_faults()
            clock.advance(timedelta(seconds=30))  # heartbeats, and another poll and scan
            beats: dict[str, dict[str, float]] = {}
            while len(beats) < 3:
                beats.update({e.device: e.counters for e in collector.events(1) if isinstance(e, DeviceStatus)})
            assert set(beats) == {"ac-a204", "dock-1", "agent-m"}
            assert beats["agent-m"]["uplink_connects"] == 1 and beats["agent-m"]["shed_readings"] == 0
            assert beats["agent-m"]["published"] >= 4
            assert beats["dock-1"] == {"events": 1, "last_seen": (T0 + timedelta(seconds=30)).timestamp()}
            meter_beat = beats["ac-a204"]
            assert meter_beat["error_timeout"] == 1 and meter_beat["events"] in (3, 5)  # the third poll may come first
        finally:
            agent.stop()
            collector.close()


def test_an_agent_connects_through_its_jittered_backoff_once_the_broker_appears(tmp_path: Path, reader: PatrolReaderSim) -> None:
    """Started with its broker down, the agent retries on its own jittered schedule and
    connects when the broker comes up, then announces itself."""
    port = free_port()
    config = agent_config(BrokerConfig(port=port, reconnect_min_seconds=0.05, reconnect_max_seconds=0.2), reader.port, tmp_path)
    agent = Agent(config, ManualClock(T0))
    agent.start()
    late: MosquittoBroker | None = None
    try:
        wait_for(lambda: agent.uplink_backoff.failures >= 3, what="three failed attempts")
        late = MosquittoBroker(port=port, workdir=tmp_path / "late-broker")
        assert agent.uplink_flag.connected.wait(10)
        assert agent.uplink_backoff.failures == 0 and agent.uplink_connects == 1
    finally:
        agent.stop()
        if late is not None:
            late.stop()
