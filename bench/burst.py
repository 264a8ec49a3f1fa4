"""Burst latency: a few small events published at once, from the first publish until the
broker acknowledged them all (PUBACK) and the gateway stored them all, p50/p99. This is
the pattern of a quiet site (a door event, a heartbeat, a meter's poll) and of `warden
demo`, which waits for both at every rule tick. Measured with TCP_NODELAY on every socket (what warden.mqtt.make_client and the
shipped deploy/mosquitto.conf set) against a baseline in the same run: the same path with
Nagle's algorithm left on at both ends, where a packet waits for the peer's delayed ACK
of the previous one.

    python -m bench.burst [--rounds N] [--burst EVENTS]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt

from gateway.config import GatewayConfig
from gateway.service import Gateway
from simulators.acks import PubackTracker
from simulators.broker import MosquittoBroker
from warden import topics
from warden.clock import SystemClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Reading, encode_events, stable_event_id
from warden.mqtt import make_client

SITE = SiteConfig.model_validate({"id": "bench", "timezone": "UTC", "buildings": [{"id": "B", "rooms": [{"id": "R", "devices": ["m-0"]}]}]})
EVENTS = topics.events_topic("bench", "agent-1")


def _nagle(client: mqtt.Client, no_delay: bool) -> mqtt.Client:
    """The client as make_client built it, or with Nagle's algorithm left on (the baseline)."""
    if not no_delay:
        client.on_socket_open = None
    return client


def _bursts(config: BrokerConfig, gateway: Gateway, rounds: int, burst: int, no_delay: bool) -> list[float]:
    """Seconds from a burst's first publish until the broker acknowledged and the gateway
    stored every event of it."""
    publisher = _nagle(make_client(config, f"bench-burst-{no_delay}"), no_delay)
    pubacks = PubackTracker(publisher)
    connected = threading.Event()
    publisher.on_connect = lambda *args: connected.set()
    publisher.connect(config.host, config.port)
    publisher.loop_start()
    if not connected.wait(10):
        raise RuntimeError("the publisher did not connect within 10 s")
    samples = []
    try:
        for n in range(rounds):
            events = [
                Reading(id=stable_event_id("burst", no_delay, n, i), site="bench", device="m-0",
                        event_time=datetime.now(timezone.utc), quantity="power", value=float(i), unit="W")
                for i in range(burst)
            ]  # fmt: skip
            ids = [e.id for e in events]
            sent = time.perf_counter()
            for event in events:  # one message each, as devices and an idle agent send them
                pubacks.publish(EVENTS, encode_events([event]))
            pubacks.wait_all(connected)
            if not gateway.wait_until(lambda ids=ids: not gateway.store.unseen(ids), 30):  # type: ignore[misc]
                raise RuntimeError(f"burst {n} was not stored within 30 s")
            samples.append(time.perf_counter() - sent)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    return samples


def run(rounds: int, burst: int, no_delay: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(workdir=work / "mq", no_delay=no_delay)
        config = BrokerConfig(host=broker.host, port=broker.port)
        gateway_config = GatewayConfig.model_validate(
            {"id": f"bench-burst-{no_delay}", "site_file": str(work / "site.yaml"), "broker": config.model_dump(),
             "historian": {"type": "sqlite", "path": str(work / "history.db")}, "state_db": str(work / "state.db"),
             "rules": {"deadman": {"enabled": False}}}
        )  # fmt: skip
        gateway = Gateway(gateway_config, SITE, SystemClock())
        _nagle(gateway.client, no_delay)
        gateway.start()
        try:
            if not gateway.subscribed.wait(10):
                raise RuntimeError("the gateway did not subscribe within 10 s")
            return _bursts(config, gateway, rounds, burst, no_delay)
        finally:
            gateway.stop()
            broker.stop()


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--burst", type=int, default=10, help="events per burst, one message each")
    args = parser.parse_args()
    baseline = _percentiles(run(args.rounds, args.burst, no_delay=False))
    measured = _percentiles(run(args.rounds, args.burst, no_delay=True))
    print(f"{args.rounds} bursts of {args.burst} one-event messages, first publish -> all acknowledged by the broker and stored by the gateway")
    print(f"{'sockets':<34} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>10}")
    for name, (p50, p99) in (("Nagle on (baseline)", baseline), ("TCP_NODELAY (make_client, deploy)", measured)):
        print(f"{name:<34} {p50 * 1000:>8.2f} {p99 * 1000:>8.2f} {p50 / baseline[0]:>10.2f}")


if __name__ == "__main__":
    main()
