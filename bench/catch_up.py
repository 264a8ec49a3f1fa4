"""Catch-up after an outage: the gateway drains an hour of a big site while live data flows.

10 000 AC meters (one per room, after hours) report once a minute. The gateway is down
for the first hour: 45 minutes of readings wait at the broker (its persistent session),
the last 15 minutes in the agents, which send them as soon as the gateway is back, while
the live minute keeps arriving in real time. Measured: the time from the gateway's start
until every backlog reading and every live reading sent so far is stored, against a bare
paho subscriber draining the same broker backlog in the same run, and the alerts the
backlog raised, against the night's truth: the `--left-on` first rooms drew 1 200 W all
hour (60 min on > the 15 min grace, duty 100 %: one ac_after_hours alert each), all the
others 20 W standby (< the 60 W standby threshold: nothing). Any other alert is a false
page caused by the catch-up.

    python -m bench.catch_up [--devices 10000] [--minutes 60] [--left-on 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.ingest import BROKER_TUNING, TOPIC, bare_subscriber, site
from gateway.config import GatewayConfig
from gateway.service import Gateway
from simulators.broker import MosquittoBroker
from warden.clock import ManualClock
from warden.config import BrokerConfig
from warden.events import MAX_BATCH_EVENTS, Reading, encode_events, stable_event_id
from warden.mqtt import make_client

#: A Tuesday evening, after the school day (07:30-18:00 Europe/Berlin).
T0 = datetime(2026, 11, 17, 19, 0, tzinfo=timezone.utc)
ON_W, STANDBY_W = 1200.0, 20.0


def minute_of_readings(minute: int, devices: int, left_on: int) -> list[bytes]:
    """Every meter's reading of one minute, in messages of MAX_BATCH_EVENTS readings."""
    at = T0 + timedelta(minutes=minute)
    readings = [
        Reading(id=stable_event_id("bench", f"m-{d}", at.isoformat()), site="bench", device=f"m-{d}", event_time=at,
                quantity="power", value=ON_W if d < left_on else STANDBY_W, unit="W")
        for d in range(devices)
    ]
    return [encode_events(readings[i:i + MAX_BATCH_EVENTS]) for i in range(0, len(readings), MAX_BATCH_EVENTS)]


class Publisher:
    """One agent connection publishing at QoS 1 (what the broker holds or forwards)."""

    def __init__(self, broker: BrokerConfig, name: str) -> None:
        self.client = make_client(broker, name)
        self.client.max_inflight_messages_set(1000)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, payloads: list[bytes]) -> None:
        for info in [self.client.publish(TOPIC, payload, qos=1) for payload in payloads]:
            info.wait_for_publish(120)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def gateway_catch_up(
    broker: BrokerConfig, workdir: Path, devices: int, minutes: int, left_on: int
) -> tuple[float, int, list[str]]:
    """Seconds to drain, live minutes sent meanwhile, and the subjects of the alerts opened."""
    config = GatewayConfig.model_validate(
        {"id": "bench-catch-up", "site_file": str(workdir / "site.yaml"), "broker": broker.model_dump(),
         "historian": {"type": "sqlite", "path": str(workdir / "history.db")}, "state_db": str(workdir / "state.db")}
    )
    clock = ManualClock(T0 + timedelta(minutes=minutes))
    the_site = site(devices)
    first = Gateway(config, the_site, clock)
    first.start()
    first.subscribed.wait(10)
    first.stop()  # the outage: the session stays at the broker
    at_broker = (minutes * 3) // 4
    agents = Publisher(broker, "bench-agents")
    agents.send([p for minute in range(at_broker) for p in minute_of_readings(minute, devices, left_on)])
    in_agents = [p for minute in range(at_broker, minutes) for p in minute_of_readings(minute, devices, left_on)]

    started = time.perf_counter()
    gateway = Gateway(config, the_site, clock)
    gateway.start()
    agents.send(in_agents)  # the agents' outboxes, sent as soon as the uplink is back
    live, expected = 0, minutes * devices
    live_agent = Publisher(broker, "bench-live")
    while not gateway.wait_until(lambda: gateway.events_stored >= expected, timeout=1.0):
        elapsed_minutes = int((time.perf_counter() - started) // 60) + 1
        while live < elapsed_minutes:  # the live minute, on time
            clock.advance(timedelta(minutes=1))
            live_agent.send(minute_of_readings(minutes + live, devices, left_on))
            live += 1
            expected += devices
        if time.perf_counter() - started > 1800:
            raise RuntimeError(f"not drained in 30 min: {gateway.events_stored} of {expected}")
    elapsed = time.perf_counter() - started
    subjects = sorted(a.subject for a in gateway.store.alerts(limit=100_000))
    rules = {a.rule for a in gateway.store.alerts(limit=100_000)}
    gateway.stop()
    agents.close()
    live_agent.close()
    if rules - {"ac_after_hours"}:
        subjects.append(f"(other rules: {sorted(rules - {'ac_after_hours'})})")
    return elapsed, live, subjects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=60, help="length of the outage (a reading a minute per device)")
    parser.add_argument("--left-on", type=int, default=10, help="rooms whose AC ran all hour")
    args = parser.parse_args()
    if args.minutes <= 15:
        parser.error("--minutes must be more than 15: the truth (every room left on raises) needs an outage longer than the AC rule's 15-minute grace")
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mq", extra_config=BROKER_TUNING)
        try:
            config = BrokerConfig(host=broker.host, port=broker.port)
            backlog = [p for minute in range(args.minutes) for p in minute_of_readings(minute, args.devices, args.left_on)]
            baseline = bare_subscriber(config, backlog, 1).seconds  # the same backlog, drained by bare paho
            elapsed, live, subjects = gateway_catch_up(config, Path(tmp), args.devices, args.minutes, args.left_on)
        finally:
            broker.stop()
    readings = args.minutes * args.devices
    expected = [f"R{d}" for d in range(args.left_on)]  # the truth: one alert per room left on
    print(f"backlog: {readings} readings ({args.devices} devices x {args.minutes} min), {len(backlog)} messages")
    print(f"{'consumer':<58} {'seconds':>8} {'readings/s':>11} {'ratio':>6}")
    print(f"{'bare paho subscriber (broker backlog only)':<58} {baseline:>8.1f} {readings / baseline:>11.0f} {1.0:>6.2f}")
    drained = readings + live * args.devices  # the backlog and the live minutes sent meanwhile
    print(f"{'gateway (broker + agents backlog, live data flowing)':<58} {elapsed:>8.1f} {drained / elapsed:>11.0f} "
          f"{(drained / elapsed) / (readings / baseline):>6.2f}")
    print(f"live minutes sent while draining: {live}")
    print(f"alerts opened: {len(subjects)}; the truth names {len(expected)}: "
          + ("exactly those" if sorted(subjects) == sorted(expected) else f"DIFFERENT: {subjects[:20]}"))


if __name__ == "__main__":
    main()
