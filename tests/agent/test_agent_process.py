"""A real `warden agent` process, a real Mosquitto and a real pseudo-terminal: what
survives `kill -9`, and what a SIGTERM does; and the same agent started as `warden-agent`."""

from __future__ import annotations

import queue
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from simulators.broker import MosquittoBroker
from simulators.patrol_reader import PatrolReaderSim, utc_stamp
from tests.support.agent_process import AgentProcess, outbox_rows, warden_agent_command
from tests.support.mqtt import Collector
from tests.support.proxy import TcpProxy
from tests.support.wait import wait_for
from warden import topics
from warden.config import BrokerConfig
from warden.events import DeviceStatus, DoorAction, DoorEvent, Event, PatrolTap, decode_events, stable_event_id
from warden.mqtt import make_client

SITE = "riverside"
T0 = datetime(2026, 11, 17, 23, 30, tzinfo=timezone.utc)


def tap_time(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


def tap_id(n: int) -> str:
    return stable_event_id(SITE, "reader-1", "tap", "R01", n, tap_time(n).isoformat())


def write_config(tmp_path: Path, agent: str, host: str, port: int, reader_port: str) -> Path:
    config = {
        "id": agent,
        "site": SITE,
        "broker": {"host": host, "port": port, "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 1},
        "buffer_path": "outbox.db",
        "heartbeat_seconds": 3600,
        "ack_timeout_seconds": None,  # no gateway here: these tests pin delivery to the broker (PUBACK mode)
        "devices": [{"driver": "patrol_line", "id": "reader-1", "port": reader_port, "reconnect_seconds": 0.2}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tap(reader: PatrolReaderSim, numbers: range) -> None:
    """Write taps whose seq is `n` (the reader starts at 0) at time T0 + n seconds."""
    for n in numbers:
        assert reader.seq == n
        reader.tap(f"cp-{n % 12}", "guard-lee", tap_time(n))


def collect(
    collector: Collector, expected: set[str], timeout: float = 30.0, seen: dict[str, list[Event]] | None = None
) -> dict[str, list[Event]]:
    """Every event received (added to `seen`) until each expected id was seen; copies kept."""
    seen = defaultdict(list) if seen is None else seen
    while not expected <= seen.keys():
        try:
            message = collector.messages.get(timeout=timeout)
        except queue.Empty:
            missing = sorted(expected - seen.keys())
            raise AssertionError(f"{len(missing)} events never arrived, e.g. {missing[:3]}") from None
        for event in decode_events(message.payload):
            seen[event.id].append(event)
    return seen


def states(collector: Collector, count: int) -> list[str]:
    return [str(decode_events(collector.message(timeout=20).payload)[0].state) for _ in range(count)]  # type: ignore[union-attr]


@pytest.fixture
def agent_id() -> str:
    return f"agent-{uuid.uuid4().hex[:6]}"  # no retained status from another test


@pytest.fixture
def reader() -> Iterator[PatrolReaderSim]:
    with PatrolReaderSim("R01") as sim:
        yield sim


@pytest.fixture
def processes() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for process in started:
        process.stop()


def test_kill_9_mid_run_then_restart_loses_nothing_the_agent_had_read(
    private_mosquitto: MosquittoBroker, reader: PatrolReaderSim, tmp_path: Path, agent_id: str, processes: list[AgentProcess]
) -> None:
    mosquitto = private_mosquitto  # retained statuses stamped with the wall clock stay out of other tests
    broker = BrokerConfig(host=mosquitto.host, port=mosquitto.port)
    network = TcpProxy(mosquitto.host, mosquitto.port)  # the agent's link to the broker
    events = Collector(broker, topics.events_topic(SITE, agent_id), persistent=True)
    status = Collector(broker, topics.status_topic(SITE, agent_id))
    config = write_config(tmp_path, agent_id, "127.0.0.1", network.port, reader.port)
    outbox = tmp_path / "outbox.db"
    try:
        first = AgentProcess(config)
        processes.append(first)
        first.wait_log("port open")
        assert states(status, 1) == ["online"]
        tap(reader, range(0, 50))
        seen = collect(events, {tap_id(n) for n in range(0, 50)})  # delivered live
        wait_for(lambda: outbox_rows(outbox) == 0, timeout=20, what="their PUBACKs back at the agent")

        network.pause()  # PUBLISHes leave the agent but no PUBACK comes back
        tap(reader, range(50, 250))
        wait_for(lambda: outbox_rows(outbox) == 200, timeout=20, what="200 taps read and on disk")
        assert first.kill() == -9  # mid-run: events queued and in flight, none acknowledged
        assert outbox_rows(outbox) == 200  # the outbox survived

        network.resume()  # what was stuck in the network arrives too: duplicates, same ids
        assert states(status, 1) == ["offline"]  # the broker sent the last will
        second = AgentProcess(config)
        processes.append(second)
        second.wait_log("port open")
        assert states(status, 1) == ["online"]
        tap(reader, range(250, 300))

        collect(events, {tap_id(n) for n in range(0, 300)}, seen=seen)
        assert set(seen) == {tap_id(n) for n in range(0, 300)}  # nothing else, nothing missing
        for copies in seen.values():
            assert all(copy == copies[0] for copy in copies)  # a duplicate is the same event
        assert any(len(copies) > 1 for copies in seen.values()), "nothing was in flight at the kill: the test proved less"
        first_copy = {event_id: copies[0] for event_id, copies in seen.items()}
        taps = [first_copy[tap_id(n)] for n in range(0, 300)]
        assert all(isinstance(t, PatrolTap) and t.event_time == tap_time(n) for n, t in enumerate(taps))
        wait_for(lambda: outbox_rows(outbox) == 0, timeout=20, what="outbox emptied by PUBACKs")

        assert second.terminate() == 0
        assert states(status, 1) == ["offline"]
    finally:
        network.close()
        events.close()
        status.close()


@pytest.mark.parametrize("lean", [False, True], ids=["warden agent", "warden-agent"])
def test_sigterm_forwards_what_the_port_received_and_leaves_a_retained_offline(
    private_mosquitto: MosquittoBroker, reader: PatrolReaderSim, tmp_path: Path, agent_id: str, processes: list[AgentProcess],
    lean: bool,
) -> None:
    """Both commands run the same agent; `warden-agent` is what small boards run (docs/agent.md)."""
    mosquitto = private_mosquitto
    broker = BrokerConfig(host=mosquitto.host, port=mosquitto.port)
    events = Collector(broker, topics.events_topic(SITE, agent_id))
    status = Collector(broker, topics.status_topic(SITE, agent_id))
    config = write_config(tmp_path, agent_id, mosquitto.host, mosquitto.port, reader.port)
    try:
        agent = AgentProcess(config, command=warden_agent_command() if lean else None)
        processes.append(agent)
        agent.wait_log("port open")
        assert states(status, 1) == ["online"]

        tap(reader, range(0, 40))  # in the port's buffer, or being read, when the signal comes
        assert agent.terminate() == 0
        collect(events, {tap_id(n) for n in range(0, 40)}, timeout=10)
        assert states(status, 1) == ["offline"]
        assert outbox_rows(tmp_path / "outbox.db") == 0
        assert any("agent stopped" in line for line in agent.lines)
        assert not any("Traceback" in line for line in agent.lines)
    finally:
        events.close()
        status.close()

    late = Collector(broker, topics.status_topic(SITE, agent_id))
    try:
        retained = late.message(timeout=10)
        assert retained.retain
        [offline] = decode_events(retained.payload)
        assert isinstance(offline, DeviceStatus) and offline.state == "offline" and offline.device == agent_id
    finally:
        late.close()


def test_what_mqtt_devices_publish_while_the_agent_is_down_reaches_it_after_restart(
    private_mosquitto: MosquittoBroker, tmp_path: Path, agent_id: str, processes: list[AgentProcess]
) -> None:
    """The agent's session is persistent: the broker keeps its device subscriptions and
    queues what devices publish while it is dead (or reconnecting to a restarted broker,
    where a device may be back first), and hands it over when the agent returns."""
    mosquitto = private_mosquitto
    broker = BrokerConfig(host=mosquitto.host, port=mosquitto.port)
    device_topic = f"devices/{SITE}/ctl-gate/events"
    config = {
        "id": agent_id, "site": SITE, "buffer_path": "outbox.db", "heartbeat_seconds": 3600, "ack_timeout_seconds": None,
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 1},
        "devices": [{"driver": "mqtt_door", "id": "ctl-gate", "topic": device_topic, "doors": ["gate-main"]}],
    }  # fmt: skip
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    events = Collector(broker, topics.events_topic(SITE, agent_id), persistent=True)
    controller = make_client(broker, f"test-controller-{agent_id}")
    controller.connect(mosquitto.host, mosquitto.port)
    controller.loop_start()
    try:
        first = AgentProcess(path)
        processes.append(first)
        first.wait_log("device topics subscribed")
        assert first.kill() == -9
        # docs/protocols/door-mqtt.md's first example, sent while no agent runs
        sent = controller.publish(device_topic, b'{"ts": "2026-11-17T19:12:00Z", "seq": 118, "door": "gate-main", "event": "granted", "card": "004711"}', qos=1)
        sent.wait_for_publish(timeout=10)
        processes.append(AgentProcess(path))
        doors: list[DoorEvent] = []
        while not doors:  # Collector.message raises queue.Empty after 20 s of nothing
            doors += [e for e in decode_events(events.message(timeout=20).payload) if isinstance(e, DoorEvent)]
        [granted] = doors
        assert (granted.door, granted.card, granted.action) == ("gate-main", "004711", DoorAction.GRANTED)
        assert granted.event_time == datetime(2026, 11, 17, 19, 12, tzinfo=timezone.utc)
    finally:
        controller.loop_stop()
        controller.disconnect()
        events.close()


def test_reader_lines_written_while_no_agent_reads_are_not_what_the_guarantee_covers(reader: PatrolReaderSim) -> None:
    """The documented limit of a serial line: pyserial clears the input buffer on open."""
    import serial

    reader.tap("cp-0", None, tap_time(0))
    port = serial.serial_for_url(reader.port, timeout=0.2)
    try:
        assert port.read(100) == b""
        sent = reader.tap("cp-1", None, tap_time(1))
        assert port.read(len(sent)) == sent
    finally:
        port.close()
    assert utc_stamp(tap_time(1)).encode() in sent
