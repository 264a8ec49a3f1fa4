"""Alert latency: from a triggering event's publish to the alert committed and announced,
p50/p99, under a background load of readings. Baseline in the same run: the bare MQTT
round trip (publish -> subscriber) on the same broker under the same load.

The trigger is a forced door (its rule raises on the event itself). The alert is timed
when the gateway announces it (MQTT alerts topic, listeners), which happens only after
the batch that raised it is committed, i.e. once the API already serves it.

    python -m bench.latency [--triggers N] [--load READINGS_PER_S]
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import statistics
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.ingest import BROKER_TUNING
from gateway.config import GatewayConfig
from gateway.service import Gateway
from simulators.broker import MosquittoBroker
from warden import topics
from warden.clock import SystemClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import DoorAction, DoorEvent, Reading, encode_events, stable_event_id
from warden.mqtt import make_client

SITE = SiteConfig.model_validate(
    {"id": "bench", "timezone": "UTC", "buildings": [{"id": "B", "rooms": [{"id": "R", "devices": ["m-0", "door-ctl"]}]}]}
)
EVENTS = topics.events_topic("bench", "agent-1")
LOAD_BATCH = 50


def _load(broker: tuple[str, int], readings_per_s: int, stop: multiprocessing.synchronize.Event) -> None:
    """Background readings, from another process so the measuring one keeps its core."""
    client = make_client(BrokerConfig(host=broker[0], port=broker[1]), "bench-load")
    client.connect(*broker)
    client.loop_start()
    interval = LOAD_BATCH / readings_per_s
    n = 0
    next_at = time.perf_counter()
    while not stop.is_set():
        now = datetime.now(timezone.utc)
        events = [
            Reading(id=stable_event_id("load", n, i), site="bench", device="m-0", event_time=now, quantity="power", value=1.0, unit="W")
            for i in range(LOAD_BATCH)
        ]
        client.publish(EVENTS, encode_events(events), qos=1)
        n += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    client.disconnect()
    client.loop_stop()


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered), p99


def _round_trips(broker: BrokerConfig, count: int) -> list[float]:
    """Bare MQTT: publish on one client, receive on another."""
    arrived: dict[bytes, float] = {}
    got = threading.Condition()
    sub = make_client(broker, "bench-rt-sub")
    ready = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("bench/rt", qos=1)
    sub.on_subscribe = lambda *a: ready.set()

    def on_message(client: object, userdata: object, message: object) -> None:
        with got:
            arrived[message.payload] = time.perf_counter()  # type: ignore[attr-defined]
            got.notify_all()

    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    ready.wait(10)
    pub = make_client(broker, "bench-rt-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    samples = []
    for n in range(count):
        key = str(n).encode()
        sent = time.perf_counter()
        pub.publish("bench/rt", key, qos=1)
        with got:
            got.wait_for(lambda: key in arrived, timeout=10)
        samples.append(arrived[key] - sent)
        time.sleep(0.01)
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()
    return samples


def _alert_latencies(broker: BrokerConfig, gateway: Gateway, count: int) -> list[float]:
    announced: dict[str, float] = {}
    got = threading.Condition()

    def on_change(change: object) -> None:
        with got:
            announced.setdefault(change.alert.subject, time.perf_counter())  # type: ignore[attr-defined]
            got.notify_all()

    gateway.alert_listeners.append(on_change)
    pub = make_client(broker, "bench-trigger")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    samples = []
    for n in range(count):
        door = f"door-{n}"
        event = DoorEvent(
            id=stable_event_id("trigger", n), site="bench", device="door-ctl",
            event_time=datetime.now(timezone.utc), action=DoorAction.FORCED, door=door,
        )
        sent = time.perf_counter()
        pub.publish(EVENTS, encode_events([event]), qos=1)
        with got:
            got.wait_for(lambda: door in announced, timeout=10)
        samples.append(announced[door] - sent)
        time.sleep(0.02)
    pub.disconnect()
    pub.loop_stop()
    return samples


def run(triggers: int, load: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(workdir=work / "mq", extra_config=BROKER_TUNING)
        config = BrokerConfig(host=broker.host, port=broker.port)
        gateway_config = GatewayConfig.model_validate(
            {"id": "bench-latency", "site_file": str(work / "site.yaml"), "broker": config.model_dump(),
             "historian": {"type": "sqlite", "path": str(work / "history.db")}, "state_db": str(work / "state.db"),
             "rules": {"deadman": {"enabled": False}}}
        )
        gateway = Gateway(gateway_config, SITE, SystemClock())
        gateway.start()
        gateway.subscribed.wait(10)
        stop = multiprocessing.Event()
        loader = multiprocessing.Process(target=_load, args=((broker.host, broker.port), load, stop), daemon=True)
        loader.start()
        try:
            time.sleep(2)  # let the load reach its steady rate before measuring
            baseline = _percentiles(_round_trips(config, triggers))
            measured = _percentiles(_alert_latencies(config, gateway, triggers))
        finally:
            stop.set()
            loader.join(10)
            gateway.stop()
            broker.stop()
    return {"bare MQTT round trip": baseline, "event -> alert committed and announced": measured}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=200)
    parser.add_argument("--load", type=int, default=5000, help="background readings per second")
    args = parser.parse_args()
    results = run(args.triggers, args.load)
    baseline_p99 = results["bare MQTT round trip"][1]
    print(f"background load: {args.load} readings/s; {args.triggers} triggers")
    print(f"{'path':<42} {'p50 ms':>8} {'p99 ms':>8} {'p99 ratio':>10}")
    for name, (p50, p99) in results.items():
        print(f"{name:<42} {p50 * 1000:>8.2f} {p99 * 1000:>8.2f} {p99 / baseline_p99:>10.1f}")


if __name__ == "__main__":
    main()
