"""Plays a scenario's night on a simulated clock: meters publish over MQTT, patrol
readers write taps to their pseudo-terminals, each at its simulated time.

The simulation also writes the agent configuration that reads exactly these devices,
so the demo and the tests run the real agent against them.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt

from simulators.ac_meter import AcMeterSim
from simulators.patrol_reader import PatrolReaderSim
from simulators.scenario import RoundSpec, Scenario
from warden.clock import SimClock
from warden.config import AgentConfig, BrokerConfig
from warden.mqtt import make_client

log = logging.getLogger(__name__)

AC_FIELDS = {
    "power_w": {"quantity": "power", "unit": "W"},
    "energy_kwh": {"quantity": "energy", "unit": "kWh", "cumulative": True},
}


def device_topic(site: str, device: str) -> str:
    """Where a simulated MQTT-native device publishes (the device side, not warden's tree)."""
    return f"devices/{site}/{device}/state"


@dataclass
class SimulationTotals:
    meter_messages: int = 0
    readings: int = 0
    taps: int = 0
    by_device: dict[str, int] = field(default_factory=dict)

    def count(self, device: str, events: int) -> None:
        self.by_device[device] = self.by_device.get(device, 0) + events


@dataclass(order=True)
class _Action:
    at: datetime
    order: int
    run: Callable[[], None] = field(compare=False)


class NightSimulation:
    def __init__(self, scenario: Scenario, broker: BrokerConfig, clock: SimClock, seed: int = 1) -> None:
        self.scenario = scenario
        self.broker = broker
        self.clock = clock
        self.rng = random.Random(seed)
        self.totals = SimulationTotals()
        zone = scenario.site.zone
        self.meters = {spec.device: AcMeterSim(spec, zone, random.Random(self.rng.random())) for spec in scenario.ac_meters}
        self.readers = {spec.device: PatrolReaderSim(spec.device) for spec in scenario.patrol_readers}
        self.client = make_client(broker, f"warden-sim-{scenario.site.id}")
        self._unconfirmed: list[mqtt.MQTTMessageInfo] = []

    def agent_config(self, buffer_path: Path) -> AgentConfig:
        devices: list[dict[str, object]] = [
            {"driver": "patrol_line", "id": device, "port": reader.port} for device, reader in self.readers.items()
        ]
        devices += [
            {"driver": "mqtt_json", "id": device, "topic": device_topic(self.scenario.site.id, device), "fields": AC_FIELDS}
            for device in self.meters
        ]
        return AgentConfig.model_validate(
            {
                "id": self.scenario.agent,
                "site": self.scenario.site.id,
                "broker": self.broker.model_dump(),
                "buffer_path": str(buffer_path),
                "heartbeat_seconds": 60,
                "devices": devices,
            }
        )

    def run(self, progress: Callable[[float], None] | None = None) -> SimulationTotals:
        """Play the whole night; `progress` gets the fraction done after each action."""
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        try:
            self._play(self._schedule(), progress)
            for info in self._unconfirmed:
                info.wait_for_publish(timeout=10)  # a disconnect would drop what is still queued
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        return self.totals

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()

    # ------------------------------------------------------------------ timeline

    def _schedule(self) -> list[_Action]:
        actions: list[_Action] = []
        start, end = self.scenario.start_utc, self.scenario.end_utc
        step = timedelta(seconds=self.scenario.step_seconds)
        for order, (device, meter) in enumerate(self.meters.items()):
            at = start
            while at <= end:
                actions.append(_Action(at, order, lambda d=device, m=meter, t=at: self._publish_meter(d, m, t)))
                at += step
        for spec in self.scenario.patrol_readers:
            for round_ in spec.rounds:
                for at, tag in self._round_taps(round_):
                    actions.append(_Action(at, 1000, lambda d=spec.device, t=at, g=tag, r=round_.guard: self._tap(d, g, r, t)))
        heapq.heapify(actions)
        return [heapq.heappop(actions) for _ in range(len(actions))]

    def _round_taps(self, round_: RoundSpec) -> list[tuple[datetime, str]]:
        """Taps of one round, a few minutes apart with some jitter, from its first start."""
        first = self._first_local(round_.start)
        spacing = timedelta(minutes=round_.spacing_minutes)
        return [
            (first + spacing * i + timedelta(seconds=self.rng.randint(-30, 30)), tag)
            for i, tag in enumerate(round_.checkpoints)
        ]

    def _first_local(self, moment: time) -> datetime:
        """The night's first occurrence of a local wall-clock time."""
        day = self.scenario.local(self.scenario.start).date()
        for offset in (0, 1):
            at = datetime.combine(day + timedelta(days=offset), moment, tzinfo=self.scenario.site.zone)
            if at >= self.scenario.start_utc:
                return at
        raise ValueError(f"{moment} does not fall in the night")

    def _play(self, actions: list[_Action], progress: Callable[[float], None] | None) -> None:
        total = len(actions)
        for done, action in enumerate(actions, start=1):
            self.clock.sleep_until(action.at)
            action.run()
            if progress:
                progress(done / total)

    # ------------------------------------------------------------------ devices

    def _publish_meter(self, device: str, meter: AcMeterSim, at: datetime) -> None:
        payload = meter.payload(at)
        self._unconfirmed = [i for i in self._unconfirmed if not i.is_published()]
        self._unconfirmed.append(self.client.publish(device_topic(self.scenario.site.id, device), payload, qos=1))
        self.totals.meter_messages += 1
        self.totals.readings += len(json.loads(payload)) - 1  # every field but "ts" is a reading
        self.totals.count(device, 2)

    def _tap(self, device: str, tag: str, guard: str, at: datetime) -> None:
        self.readers[device].tap(tag, guard, at)
        self.totals.taps += 1
        self.totals.count(device, 1)
