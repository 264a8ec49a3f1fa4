"""Gateway ingest throughput against a bare paho subscriber, in the same run.

Both consumers drain the same backlog: their persistent session is created, then the
messages are queued at Mosquitto while they are offline, then they connect and the time
to take in everything is measured. This isolates the consumer from the publisher.

The readings are AC power readings after hours, spread round-robin over `--devices`
meters, each in a room of its own with a school-day schedule, so the rules keep state
for every device (scaling: `--devices 100 1000 10000`).

    python -m bench.ingest [--messages N] [--batch B ...] [--devices D ...]
    python -m bench.ingest --ack-cost   # the gateway with end-to-end acks against itself without

With `--ack-cost` the baseline is the same gateway with its delivery acknowledgements
(gateway/acks.py) switched off, run on the same backlog in the same run: the ratio is
what publishing them costs (issue 17: at most 10 %).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.service import Gateway
from simulators.broker import MosquittoBroker
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Reading, encode_events, stable_event_id
from warden.mqtt import make_client

T0 = datetime(2026, 11, 17, 20, 0, tzinfo=timezone.utc)
TOPIC = topics.events_topic("bench", "agent-1")


def site(devices: int) -> SiteConfig:
    """A school with one AC meter per room, `devices` rooms."""
    return SiteConfig.model_validate({
        "id": "bench", "timezone": "Europe/Berlin",
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "B", "rooms": [{"id": f"R{d}", "schedule": "school-day", "devices": [f"m-{d}"]} for d in range(devices)]}],
    })  # fmt: skip

#: Mosquitto's default in-flight window (20) would bound any acknowledging consumer.
BROKER_TUNING = "max_inflight_messages 1000\nmax_queued_messages 0\n"


@dataclass(frozen=True)
class Result:
    name: str
    messages: int
    readings: int
    seconds: float
    rule_state_kb: float = 0.0  # the rules' snapshot at the end (what a restart restores)
    snapshot_ms: float = 0.0  # time to take and encode it (done every few seconds)
    cpu_seconds: float = 0.0  # CPU of this process (the gateway's threads) while it took the backlog in

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds


def payloads(messages: int, batch: int, devices: int = 1) -> list[bytes]:
    out = []
    for m in range(messages):
        events = [
            Reading(
                id=stable_event_id("bench", m, i), site="bench", device=f"m-{(m * batch + i) % devices}",
                event_time=T0 + timedelta(milliseconds=m * batch + i), quantity="power", value=float(i), unit="W",
            )
            for i in range(batch)
        ]
        out.append(encode_events(events))
    return out


def enqueue(broker: BrokerConfig, data: list[bytes]) -> None:
    client = make_client(broker, "bench-publisher")
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(TOPIC, payload, qos=1) for payload in data]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def bare_subscriber(broker: BrokerConfig, data: list[bytes], batch: int) -> Result:
    received = 0
    done = threading.Event()

    def on_message(client: object, userdata: object, message: object) -> None:
        nonlocal received
        received += 1
        if received == len(data):
            done.set()

    def session() -> object:
        client = make_client(broker, "bench-bare", persistent_session=True)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        subscribed = threading.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        subscribed.wait(10)
        return client

    first = session()
    first.disconnect()  # type: ignore[attr-defined]
    first.loop_stop()  # type: ignore[attr-defined]
    enqueue(broker, data)
    start = time.perf_counter()
    client = session()
    done.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()  # type: ignore[attr-defined]
    client.loop_stop()  # type: ignore[attr-defined]
    return Result("bare paho subscriber", received, received * batch, elapsed)


def gateway_consumer(
    broker: BrokerConfig, data: list[bytes], batch: int, workdir: Path, site: SiteConfig, acks: bool = True
) -> Result:
    workdir = workdir / ("acks" if acks else "no-acks")
    workdir.mkdir(exist_ok=True)
    config = GatewayConfig.model_validate(
        {"id": f"bench-gw-{workdir.name}", "site_file": str(workdir / "site.yaml"), "broker": broker.model_dump(),
         "historian": {"type": "sqlite", "path": str(workdir / "history.db")}, "state_db": str(workdir / "state.db")}
    )
    clock = ManualClock(T0 + timedelta(days=1))
    first = Gateway(config, site, clock)
    first.start()
    first.subscribed.wait(10)
    first.stop()
    enqueue(broker, data)
    expected = len(data) * batch
    start = time.perf_counter()
    gateway = Gateway(config, site, clock)
    gateway.acks.enabled = acks
    cpu_start = time.process_time()
    gateway.start()
    gateway.wait_until(lambda: gateway.events_stored >= expected, timeout=600)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    stored = int(gateway.counts().get("events_stored_reading", 0))
    gateway.stop()  # the worker is done: the engine can be read from here
    snapshot_started = time.perf_counter()
    state = json.dumps(gateway.engine.snapshot())
    snapshot_ms = (time.perf_counter() - snapshot_started) * 1000
    name = "gateway (validate, dedupe, SQLite historian, rules, commit, ack)" + (", end-to-end acks" if acks else ", no end-to-end acks")
    return Result(name, len(data), stored, elapsed, len(state) / 1024, snapshot_ms, cpu)


def run(messages: int, batch: int, devices: int) -> tuple[Result, Result]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mq", extra_config=BROKER_TUNING)
        try:
            config = BrokerConfig(host=broker.host, port=broker.port)
            data = payloads(messages, batch, devices)
            baseline = bare_subscriber(config, data, batch)
            measured = gateway_consumer(config, data, batch, Path(tmp), site(devices))
        finally:
            broker.stop()
    return baseline, measured


def ack_cost(messages: int, batch: int, devices: int, repeat: int) -> tuple[Result, Result]:
    """The gateway without and with its delivery acknowledgements, alternately `repeat`
    times each on fresh files, on one broker: the best run of each (a shared machine's
    noise only ever slows a run down)."""
    runs: dict[bool, list[Result]] = {False: [], True: []}
    data = payloads(messages, batch, devices)
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(repeat):
            for acks in (False, True):
                work = Path(tmp) / f"run-{n}-{acks}"
                work.mkdir()
                broker = MosquittoBroker(workdir=work / "mq", extra_config=BROKER_TUNING)  # no other session queues
                try:
                    config = BrokerConfig(host=broker.host, port=broker.port)
                    runs[acks].append(gateway_consumer(config, data, batch, work, site(devices), acks=acks))
                finally:
                    broker.stop()
    best = lambda results: Result(  # noqa: E731  the fastest run, and the least CPU any run needed
        results[0].name, results[0].messages, results[0].readings, min(r.seconds for r in results),
        cpu_seconds=min(r.cpu_seconds for r in results),
    )
    return best(runs[False]), best(runs[True])


def main_ack_cost(messages: int, batches: list[int], devices: int, repeat: int) -> None:
    print(f"{'case':<12} {'consumer':<90} {'readings/s':>11} {'ratio':>6} {'CPU µs/reading':>15} {'CPU ratio':>10}")
    for batch in batches:
        count = messages if batch == 1 else max(1, messages // 10)
        off, on = ack_cost(count, batch, devices, repeat)
        for result in (off, on):
            cpu_us = result.cpu_seconds / result.readings * 1e6
            print(f"batch={batch:<6} {result.name:<90} {result.readings_per_s:>11.0f} {result.readings_per_s / off.readings_per_s:>6.2f} "
                  f"{cpu_us:>15.1f} {result.cpu_seconds / off.cpu_seconds:>10.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="single-reading messages; batches get a tenth")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 100])
    parser.add_argument("--devices", type=int, nargs="*", default=[1])
    parser.add_argument("--ack-cost", action="store_true", help="the gateway with end-to-end acks against itself without")
    parser.add_argument("--repeat", type=int, default=5, help="with --ack-cost: runs of each, the best counts")
    args = parser.parse_args()
    if args.ack_cost:
        main_ack_cost(args.messages, args.batch, args.devices[0], args.repeat)
        return
    print(f"{'case':<12} {'devices':>7} {'consumer':<66} {'msg/s':>9} {'readings/s':>11} {'ratio':>6} {'rule state':>11} {'snapshot':>9}")
    for devices in args.devices:
        for batch in args.batch:
            messages = args.messages if batch == 1 else max(1, args.messages // 10)
            baseline, measured = run(messages, batch, devices)
            for result in (baseline, measured):
                ratio = result.messages_per_s / baseline.messages_per_s
                state = f"{result.rule_state_kb:>8.0f} kB {result.snapshot_ms:>6.1f} ms" if result is measured else ""
                print(f"batch={batch:<6} {devices:>7} {result.name:<66} {result.messages_per_s:>9.0f} {result.readings_per_s:>11.0f} {ratio:>6.2f} {state}")


if __name__ == "__main__":
    main()
