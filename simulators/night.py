"""Plays a scenario's night in (accelerated) real time against a real MQTT broker and a
real agent: MQTT devices publish, serial devices write to their pseudo-terminals or TCP
device servers, Modbus meters answer the agent's polls from their curves, wand docks drop
batch files into spool folders, each at its simulated time.

It also writes the agent configuration that reads exactly these devices, so the demo,
the tests and `warden simulate` run the unchanged agent against them, and it keeps the
ground truth of what it injected (simulators/ground_truth.py).

A broker restart needs someone who can restart the broker (`OutageControl`, given by the
demo); without one, `warden simulate` against an external broker skips it and says so in
the ground truth. The clock is paused around the restart itself, so a real second of
Mosquitto starting is not an hour of the night.

The same pause serves any other disturbance at a chosen simulated time: `Interruption`s
(the fault suite kills processes, stops the historian or unplugs a serial port with
them) run with the clock stopped, after every message sent so far has reached the broker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.drivers.base import Driver
from agent.drivers.modbus_rtu import ModbusRtuDriver
from agent.drivers.mqtt_door import MqttDoorDriver
from agent.drivers.mqtt_json import MqttJsonDriver
from simulators.acks import PubackTracker
from simulators.base import BROKER, LINE, MODBUS, MQTT, WAND, Emission, epoch, utc
from simulators.clock import PausableClock
from simulators.ground_truth import ground_truth_document
from simulators.patrol_wand import deliver
from simulators.scenario import BrokerRestart, DoorControllerSpec, PatrolReaderSpec, PowerMeterSpec, Scenario
from simulators.sdm120 import Sdm120Sim
from simulators.serial_link import Link, open_link
from simulators.timeline import Night, device_topic, door_topic
from simulators.wiring import MODBUS_BAUDRATE, agent_config, needs_port
from warden.config import BrokerConfig
from warden.mqtt import ConnectionFlag, make_client

log = logging.getLogger(__name__)

__all__ = [
    "Interruption", "NightSimulation", "OutageControl", "SimulationTotals", "device_topic", "door_topic", "pending_devices",
]

#: Real seconds to wait for the simulator's own MQTT client after a broker restart.
RECONNECT_TIMEOUT = 30.0


class OutageControl(Protocol):
    """Restarts the broker for the simulation, with the clock paused."""

    def broker_down(self, totals: SimulationTotals) -> None:
        """Stop the broker once the agent has read everything sent so far."""
        ...

    def broker_up(self) -> None:
        """Start it again and return once the agent and the gateway are back."""
        ...


@dataclass(frozen=True)
class Interruption:
    """Work done at simulated time `at` with the clock paused (a fault, a check): before
    any emission at or after `at`, once every MQTT message sent so far is at the broker."""

    at: datetime
    name: str
    run: Callable[[], None]


@dataclass
class SimulationTotals:
    """What was put on the wire, per device, and what the agent should make of it."""

    emissions: int = 0
    events: int = 0  # distinct events the agent should produce (duplicates and lost messages excluded)
    readings: int = 0
    taps: int = 0
    door_events: int = 0
    handled: Counter[str] = field(default_factory=Counter)  # messages / good frames / wand taps per device
    lost: Counter[str] = field(default_factory=Counter)  # MQTT messages published while the broker was down
    by_kind: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)  # incidents that could not be injected

    @property
    def by_device(self) -> dict[str, int]:
        return dict(self.handled)


class NightSimulation:
    def __init__(
        self,
        scenario: Scenario,
        broker: BrokerConfig,
        clock: PausableClock,
        seed: int = 1,
        *,
        workdir: Path | None = None,
        outage: OutageControl | None = None,
        interruptions: Iterable[Interruption] = (),
        on_wire: Callable[[Emission], None] | None = None,
    ) -> None:
        """`on_wire` sees every emission that went on the wire (not one an MQTT device
        could not publish while the broker was down), in order, on the playing thread."""
        self.scenario = scenario
        self.broker = broker
        self.clock = clock
        self.seed = seed
        self.outage = outage
        self.interruptions = sorted(interruptions, key=lambda i: i.at)
        late = [i.name for i in self.interruptions if not scenario.start_utc <= i.at <= scenario.end_utc]
        if late:
            raise ValueError(f"interruptions outside the night ({scenario.start_utc} to {scenario.end_utc}): {late}")
        self.on_wire = on_wire
        self.workdir = (workdir or Path("data/simulated")).resolve()
        self.night = Night(scenario, seed)
        self.totals = SimulationTotals()
        self.links: dict[str, Link] = {}
        self.meters: dict[str, Sdm120Sim] = {}
        for spec in scenario.devices:
            if isinstance(spec, PowerMeterSpec) and spec.transport == "modbus":
                self.meters[spec.device] = self._modbus_meter(spec)
            elif needs_port(spec):
                self.plug(spec.device)
        self.client = make_client(broker, f"warden-sim-{scenario.site.id}")
        self.connection = ConnectionFlag()
        self.client.on_connect = lambda c, u, f, rc, p: None if self.connection.on_connect(rc) else None
        self.client.on_disconnect = lambda *args: self.connection.on_disconnect()
        self._pubacks = PubackTracker(self.client)  # survives the broker being killed (simulators/acks.py)
        self._broker_down = False

    def _modbus_meter(self, spec: PowerMeterSpec) -> Sdm120Sim:
        model = self.night.power[spec.device]

        def source() -> Mapping[str, float]:
            return model.registers_at(self.clock.now().timestamp())

        return Sdm120Sim(spec.unit_id, link=spec.link, baudrate=MODBUS_BAUDRATE, source=source)

    # ----------------------------------------------------------------- setup

    @property
    def ports(self) -> dict[str, str]:
        return {**{d: link.port for d, link in self.links.items()}, **{d: m.port for d, m in self.meters.items()}}

    def agent_config(self, buffer_path: Path) -> AgentConfig:
        """The agent config that reads exactly these devices (spool folders under `workdir`)."""
        return agent_config(
            self.night, broker=self.broker, buffer_path=buffer_path, ports=self.ports, spool_root=self.workdir / "spool"
        )

    def ground_truth(self) -> dict[str, Any]:
        stats = {
            "emissions": self.totals.emissions,
            "events": self.totals.events,
            "lost_in_outage": sum(self.totals.lost.values()),
            "by_kind": dict(self.totals.by_kind),
        }
        return ground_truth_document(self.scenario, self.seed, skipped=self.totals.skipped, stats=stats)

    def unplug(self, device: str) -> None:
        """Pull a serial device's cable: its pty or device server is gone (plug() it back)."""
        self.links.pop(device).close()

    def plug(self, device: str) -> str:
        """Give a serial device a new link (a new pty, as when a USB adapter comes back);
        returns its port."""
        spec = self.scenario.device(device)
        if not isinstance(spec, (PatrolReaderSpec, DoorControllerSpec)) or not needs_port(spec):
            raise ValueError(f"{device} is not on a serial line")
        if device in self.links:
            raise ValueError(f"{device} is plugged in already")
        self.links[device] = open_link(spec.link)
        return self.links[device].port

    # ----------------------------------------------------------------- playing

    def run(self, progress: Callable[[float], None] | None = None) -> SimulationTotals:
        """Play the whole night; `progress` gets the fraction of the night done. Returns
        with the clock paused at the night's end: nobody's timers (heartbeats, polls) run
        past it while the pipeline catches up."""
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        try:
            self._play(self.night.emissions(), progress)
            self.clock.sleep_until(self.scenario.end_utc)
            self.clock.pause()
            self.clock.jump(self.scenario.end_utc)
            self._confirm_publishes()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        return self.totals

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        for meter in self.meters.values():
            meter.close()

    def _play(self, emissions: Iterable[Emission], progress: Callable[[float], None] | None) -> None:
        start, end = epoch(self.scenario.start_utc), epoch(self.scenario.end_utc)
        reported = -1
        waiting = list(self.interruptions)
        for e in emissions:
            while waiting and epoch(waiting[0].at) <= e.t:
                self._interrupt(waiting.pop(0))
            self.clock.sleep_until(utc(e.t))
            self._deliver(e)
            done = int(100 * (e.t - start) / (end - start))
            if progress is not None and done != reported:
                reported = done
                progress(min(done, 100) / 100)
        for interruption in waiting:
            self._interrupt(interruption)
        if progress is not None:
            progress(1.0)

    def _interrupt(self, interruption: Interruption) -> None:
        self.clock.sleep_until(interruption.at)
        log.info("interruption", extra={"name": interruption.name, "at": interruption.at.isoformat()})
        self._paused(interruption.run)

    def _paused(self, work: Callable[[], None]) -> None:
        """Do `work` with the clock stopped, once what was published so far is at the broker."""
        self.clock.pause()
        try:
            self._confirm_publishes()
            work()
        finally:
            self.clock.resume()

    def _deliver(self, e: Emission) -> None:
        if e.channel == BROKER:
            self._broker(e.action)
            return
        if e.channel == MODBUS:
            self._control_meter(e.device, e.action)
            return
        if e.channel == MQTT and self._broker_down:
            self.totals.lost[e.device] += 1  # a device cannot publish while there is no broker
            return
        if e.channel == MQTT:
            self._publish(e)
        elif e.channel == LINE:
            self.links[e.device].write(e.payload)
        elif e.channel == WAND:
            deliver(self.workdir / "spool" / e.device, e.topic, e.payload)
        self._count(e)
        if self.on_wire is not None:
            self.on_wire(e)

    def _count(self, e: Emission) -> None:
        totals = self.totals
        totals.emissions += 1
        totals.by_kind[e.kind] += 1
        if e.channel == MQTT:
            totals.handled[e.device] += 1
        elif e.events:
            totals.handled[e.device] += e.events
        if e.kind in ("data", "heartbeat") and e.events:
            totals.events += e.events
            spec = self.scenario.device(e.device)
            if spec.type in ("power_meter", "water_meter", "wet_sensor", "temperature_sensor"):
                totals.readings += e.events
            elif spec.type in ("patrol_reader", "wand_dock") and e.kind == "data":
                totals.taps += e.events
            elif spec.type == "door_controller" and e.kind == "data":
                totals.door_events += e.events

    def _publish(self, e: Emission) -> None:
        self._pubacks.publish(e.topic, e.payload)

    def _confirm_publishes(self) -> None:
        """Wait for the broker to have everything published so far; a killed broker is
        waited for (paho resends once it is back), not a reason to stop the drill."""
        self._pubacks.wait_all(self.connection.connected)

    def _control_meter(self, device: str, action: str) -> None:
        meter = self.meters[device]
        if action == "clear":
            meter.clear_faults()
        elif action == "mute":
            meter.mute()
        elif action.startswith("refuse:"):
            meter.refuse(int(action.split(":")[1]), *range(0, 0x0200))

    def _broker(self, action: str) -> None:
        if self.outage is None:
            if action == "down":
                names = [self.scenario.incident_id(i) for i in self.scenario.incidents if isinstance(i, BrokerRestart)]
                self.totals.skipped += [n for n in names if n not in self.totals.skipped]
                log.warning("broker restart skipped: this simulation does not control the broker", extra={"incidents": names})
            return
        self._paused(lambda: self._restart_broker(action))

    def _restart_broker(self, action: str) -> None:
        assert self.outage is not None
        if action == "down":
            self.outage.broker_down(self.totals)
            self.broker_stopped()
        else:
            self.outage.broker_up()
            self.broker_started()

    def broker_stopped(self) -> None:
        """The broker is gone (an outage, or a fault someone injects): MQTT devices lose
        what they publish (counted in `totals.lost`) until broker_started()."""
        self._broker_down = True

    def broker_started(self) -> None:
        """The broker is back: returns once the devices' own client has reconnected."""
        if not self.connection.connected.wait(RECONNECT_TIMEOUT):
            raise RuntimeError(f"simulated devices did not reconnect to the broker within {RECONNECT_TIMEOUT}s")
        self._broker_down = False


def pending_devices(drivers: Iterable[Driver], handled: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Devices whose driver has not yet read everything the simulation sent it:
    device -> (read, sent). An MQTT driver reads a message once, as an event or an error;
    a serial driver counts good sentences; a wand dock counts taps."""
    behind = {}
    for driver in drivers:
        if isinstance(driver, ModbusRtuDriver):
            continue  # polled: the agent asks, nothing is sent to it
        snapshot = driver.counters.snapshot()
        read = int(snapshot.get("events", 0))
        if isinstance(driver, (MqttJsonDriver, MqttDoorDriver)):
            read += int(sum(v for k, v in snapshot.items() if k.startswith("error_")))
        sent = handled.get(driver.device_id, 0)
        if read < sent:
            behind[driver.device_id] = (read, sent)
    return behind
