"""Fault tests for ingestion: the gateway killed with SIGKILL, the broker restarted, and
10 000 malformed payloads. Each ends with every good event stored exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import yaml

from gateway.config import GatewayConfig
from gateway.service import Gateway
from simulators.broker import MosquittoBroker, free_port
from tests.support.scripts import console_script
from tests.support.wait import wait_for
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import InvalidPayload, Reading, decode_events, encode_events, stable_event_id
from warden.mqtt import make_client

T0 = datetime(2026, 11, 17, 20, 0, tzinfo=timezone.utc)
SITE = {
    "id": "riverside",
    "timezone": "Europe/Berlin",
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [{"id": "A", "rooms": [{"id": "A-204", "schedule": "school-day", "devices": ["ac-a204"]}]}],
}
EVENTS = topics.events_topic("riverside", "agent-a")


def readings(start: int, count: int, t0: datetime = T0) -> list[Reading]:
    """`t0`: the first reading's time; T0 for gateways on a ManualClock, a time relative
    to now for a gateway process on the system clock (a fixed date would one day lie
    ahead of some machine's clock, or too far behind it)."""
    return [
        Reading(
            id=stable_event_id("riverside", "ac-a204", "power_w", n),
            site="riverside", device="ac-a204", event_time=t0 + timedelta(seconds=n),
            quantity="power", value=float(n % 40), unit="W",
        )
        for n in range(start, start + count)
    ]


def publish_all(broker: BrokerConfig, payloads: list[bytes]) -> None:
    """Publish with QoS 1 and return once the broker acknowledged every message."""
    client = make_client(broker, f"test-publisher-{os.getpid()}")
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(EVENTS, payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def write_configs(tmp_path: Path, broker: BrokerConfig, api_port: int = 0) -> Path:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(SITE))
    config = {
        "id": f"gw-{tmp_path.name}"[:60],
        "site_file": "site.yaml",
        "broker": broker.model_dump(exclude_none=True),
        "historian": {"type": "sqlite", "path": "history.db"},
        "state_db": "state.db",
        "api": {"host": "127.0.0.1", "port": api_port},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "gateway.yaml"


def stored_ids(history: Path) -> list[str]:
    if not history.exists():
        return []
    with sqlite3.connect(history) as db:
        return [row[0] for row in db.execute("SELECT event_id FROM points WHERE measurement = 'power'")]


def start_gateway_process(config: Path) -> subprocess.Popen[bytes]:
    warden = console_script("warden")
    return subprocess.Popen([warden, "gateway", "--config", str(config), "--log-level", "WARNING"], stderr=subprocess.PIPE)


def test_gateway_killed_with_sigkill_loses_nothing_and_duplicates_nothing(broker_config: BrokerConfig, tmp_path: Path) -> None:
    port = free_port()
    config = write_configs(tmp_path, broker_config, api_port=port)
    # The gateway process runs on the system clock: the readings are of the last hour.
    events = readings(0, 3000, t0=datetime.now(timezone.utc) - timedelta(hours=1))
    payloads = [encode_events(events[i : i + 10]) for i in range(0, len(events), 10)]

    gateway = start_gateway_process(config)
    try:
        wait_for(lambda: _healthy(port), timeout=20, what="gateway API up")
        publish_all(broker_config, payloads[:150])
        wait_for(lambda: len(stored_ids(tmp_path / "history.db")) >= 200, timeout=20, what="some events stored")
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(timeout=10)
        publish_all(broker_config, payloads[150:])  # held by the broker for the gateway's session

        gateway = start_gateway_process(config)
        wait_for(lambda: len(stored_ids(tmp_path / "history.db")) >= 3000, timeout=60, what="all events stored")
        ids = stored_ids(tmp_path / "history.db")
        assert len(ids) == len(set(ids)) == 3000
        assert set(ids) == {e.id for e in events}
    finally:
        gateway.terminate()
        assert gateway.wait(timeout=15) == 0, gateway.stderr.read().decode() if gateway.stderr else ""


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).json()["connected"] is True
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def test_broker_restart_mid_stream_loses_nothing(private_mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    broker = BrokerConfig(host=private_mosquitto.host, port=private_mosquitto.port)
    config = GatewayConfig.model_validate(
        {"id": "gw-restart", "site_file": str(tmp_path / "site.yaml"), "broker": broker.model_dump(),
         "historian": {"type": "sqlite", "path": str(tmp_path / "history.db")}, "state_db": str(tmp_path / "state.db")}
    )
    gateway = Gateway(config, SiteConfig.model_validate(SITE), ManualClock(T0 + timedelta(hours=1)))
    gateway.start()
    try:
        assert gateway.subscribed.wait(10)
        events = readings(0, 1000)
        publish_all(broker, [encode_events(events[i : i + 10]) for i in range(0, 500, 10)])
        private_mosquitto.restart()  # persistence keeps the gateway's session and its queue
        publish_all(broker, [encode_events(events[i : i + 10]) for i in range(500, 1000, 10)])
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) >= 1000, timeout=60), gateway.counts()
        assert gateway.counts().get("events_stored_reading") == 1000
    finally:
        gateway.stop()
    ids = stored_ids(tmp_path / "history.db")
    assert len(ids) == len(set(ids)) == 1000


def malformed_payloads(count: int, seed: int = 5) -> list[bytes]:
    """Mutations of a valid event: corrupted bytes, cut short, wrong types, missing or
    extra fields, wrong shapes, deep nesting, oversize. Only ones the schema refuses."""
    rng = random.Random(seed)
    valid = json.loads(encode_events(readings(0, 1)))
    too_many = b'{"v":1,"events":[' + b",".join([json.dumps(valid).encode()] * 1001) + b"]}"
    mutations = [
        lambda: _flip_bytes(rng, json.dumps(valid).encode()),
        lambda: json.dumps(valid).encode()[: rng.randrange(1, 120)],
        lambda: json.dumps({**valid, rng.choice(list(valid)): rng.choice([None, [], {}, "x", -1, True, 1e308])}).encode(),
        lambda: json.dumps({k: v for k, v in valid.items() if k != rng.choice(list(valid))}).encode(),
        lambda: json.dumps({**valid, f"extra{rng.randrange(99)}": 1}).encode(),
        lambda: json.dumps(rng.choice([[valid], "event", 42, None, {"events": [valid, 3]}])).encode(),
        lambda: b"[" * rng.randrange(1000, 5000) + b"]" * rng.randrange(0, 10),
        lambda: rng.choice([too_many, b'{"a":' * 100_000, b" " * (300 * 1024)]),
        lambda: rng.randbytes(rng.randrange(0, 300)),
    ]
    payloads: list[bytes] = []
    refused: dict[bytes, bool] = {}  # by payload: the oversize ones recur, and `too_many` takes ~15 ms to decode
    while len(payloads) < count:
        payload = rng.choice(mutations)()
        if payload not in refused:
            refused[payload] = _refused(payload)
        if refused[payload]:
            payloads.append(payload)
    return payloads


def _refused(payload: bytes) -> bool:
    try:
        decode_events(payload)
    except InvalidPayload:
        return True
    return False


def _flip_bytes(rng: random.Random, data: bytes) -> bytes:
    mutable = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        mutable[rng.randrange(len(mutable))] = rng.randrange(256)
    return bytes(mutable)


def test_ten_thousand_malformed_payloads_all_dead_lettered_and_gateway_keeps_working(
    broker_config: BrokerConfig, tmp_path: Path
) -> None:
    config = GatewayConfig.model_validate(
        {"id": f"gw-fuzz-{os.getpid()}", "site_file": str(tmp_path / "site.yaml"), "broker": broker_config.model_dump(),
         "historian": {"type": "sqlite", "path": str(tmp_path / "history.db")}, "state_db": str(tmp_path / "state.db")}
    )
    bad = malformed_payloads(10_000)
    gateway = Gateway(config, SiteConfig.model_validate(SITE), ManualClock(T0 + timedelta(hours=1)))
    gateway.start()
    try:
        assert gateway.subscribed.wait(10)
        good = readings(0, 1)
        publish_all(broker_config, [*bad, encode_events(good)])
        assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) == 1, timeout=120)
        counts = gateway.counts()
    finally:
        gateway.stop()
    assert counts["rejected"] == 10_000
    # Every one was dead-lettered; the oldest were pruned past the default bounds
    # (dead_letters.max_bytes 64 MiB of kept payload, issue 17), and counted.
    rows = gateway.store.dead_letters(limit=10_000)
    assert len(rows) + counts.get("dead_letters_pruned", 0) == 10_000
    assert sum(len(row["payload"]) for row in rows) <= 64 * 1024 * 1024
    kept = {row["size"]: len(row["payload"]) for row in rows}
    assert all(stored == min(size, 64 * 1024) for size, stored in kept.items())
    assert stored_ids(tmp_path / "history.db") == [good[0].id]
