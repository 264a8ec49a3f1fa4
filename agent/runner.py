"""The edge agent: runs one driver per configured device, queues every event on disk,
and forwards it to the uplink broker (see agent/uplink.py for the delivery guarantee).

Availability is a retained message on the agent's status topic: "online" after every
(re)connect, "offline" as the last will and on clean shutdown.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable

import paho.mqtt.client as mqtt

from agent.backoff import JitteredBackoff
from agent.drivers.base import Driver
from agent.drivers.door_line import DoorLineDriver
from agent.drivers.modbus_rtu import ModbusBuses, ModbusRtuDriver
from agent.drivers.mqtt_door import MqttDoorDriver
from agent.drivers.mqtt_json import MqttJsonDriver
from agent.drivers.patrol_line import PatrolLineDriver
from agent.drivers.patrol_wand import PatrolWandDriver
from agent.outbox import Outbox
from agent.uplink import UplinkPublisher
from warden import topics
from warden.clock import Clock, SystemClock
from warden.config import (
    AgentConfig,
    BrokerConfig,
    DeviceConfig,
    DoorLineDevice,
    ModbusRtuDevice,
    MqttDoorDevice,
    MqttJsonDevice,
    PatrolLineDevice,
    PatrolWandDevice,
)
from warden.events import DeviceState, DeviceStatus, Event, stable_event_id
from warden.mqtt import ConnectionFlag, connect_async, make_client

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: AgentConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.outbox = Outbox(config.buffer_path, max_events=config.buffer_max_events)
        self.uplink = make_client(config.broker, f"warden-agent-{config.site}-{config.id}")
        self.uplink_flag = ConnectionFlag()
        self.uplink_backoff = _backoff(config.broker)
        self.uplink_connects = 0  # successful (re)connects, published in the agent's heartbeat
        self.publisher = UplinkPublisher(self.uplink, self.outbox)
        self._modbus_buses = ModbusBuses()  # meters daisy-chained on one port share its bus
        self.drivers: list[Driver] = [self._make_driver(device) for device in config.devices]
        self._mqtt_drivers: dict[str, MqttJsonDriver | MqttDoorDriver] = {
            d.topic: d for d in self.drivers if isinstance(d, (MqttJsonDriver, MqttDoorDriver))
        }
        self._device_client = self._make_device_client()
        self.devices_subscribed = threading.Event()  # set once MQTT device topics are subscribed
        self._stop = threading.Event()
        self._drivers_stop = threading.Event()  # stops event sources first, so the queue can be flushed
        self._threads: list[threading.Thread] = []
        self._driver_threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ wiring

    def _make_driver(self, device: DeviceConfig) -> Driver:
        if isinstance(device, PatrolLineDevice):
            return PatrolLineDriver(device, self.config.site, self.emit, self.clock)
        if isinstance(device, MqttJsonDevice):
            return MqttJsonDriver(device, self.config.site, self.emit, self.clock)
        if isinstance(device, ModbusRtuDevice):
            return ModbusRtuDriver(device, self.config.site, self.emit, self.clock, self._modbus_buses.get(device))
        if isinstance(device, PatrolWandDevice):
            return PatrolWandDriver(device, self.config.site, self.emit, self.clock)
        if isinstance(device, MqttDoorDevice):
            return MqttDoorDriver(device, self.config.site, self.emit, self.clock)
        if isinstance(device, DoorLineDevice):
            return DoorLineDriver(device, self.config.site, self.emit, self.clock)
        raise TypeError(f"no driver for {type(device).__name__}")

    def _make_device_client(self) -> mqtt.Client | None:
        """MQTT-native devices share one client: the uplink's, unless a device broker is set."""
        if not self._mqtt_drivers:
            return None
        if self.config.device_broker is None:
            return self.uplink
        return make_client(self.config.device_broker, f"warden-agent-{self.config.site}-{self.config.id}-devices")

    @property
    def status_topic(self) -> str:
        return topics.status_topic(self.config.site, self.config.id)

    @property
    def events_topic(self) -> str:
        return topics.events_topic(self.config.site, self.config.id)

    def _status_payload(self, state: DeviceState) -> bytes:
        now = self.clock.now()
        event = DeviceStatus(
            id=stable_event_id(self.config.site, self.config.id, "status", state, now.isoformat()),
            site=self.config.site,
            device=self.config.id,
            event_time=now,
            state=state,
        )
        return event.model_dump_json(exclude_none=True).encode()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.uplink.will_set(self.status_topic, self._status_payload(DeviceState.OFFLINE), qos=1, retain=True)
        self.uplink.on_connect = self._on_uplink_connect
        self.uplink.on_disconnect = self._on_uplink_disconnect
        self.uplink.on_connect_fail = lambda client, userdata: self.uplink_backoff.apply(client)
        self.uplink.on_publish = lambda client, userdata, mid, rc, props: self.publisher.on_publish(mid)
        if self._device_client is None:
            self.devices_subscribed.set()
        else:
            self._device_client.on_message = self._on_device_message
            self._device_client.on_subscribe = lambda *args: self.devices_subscribed.set()
            if self._device_client is not self.uplink:
                device_backoff = _backoff(self.config.device_broker)  # type: ignore[arg-type]
                self._device_client.on_connect = lambda *args: self._on_device_connect(*args, backoff=device_backoff)
                self._device_client.on_disconnect = lambda client, *args: device_backoff.apply(client)
                self._device_client.on_connect_fail = lambda client, userdata: device_backoff.apply(client)
                connect_async(self._device_client, self.config.device_broker)  # type: ignore[arg-type]
        connect_async(self.uplink, self.config.broker)
        self._spawn("uplink", lambda: self.publisher.run(self._stop, self.uplink_flag.connected))
        self._driver_threads.append(self._spawn("heartbeat", self._heartbeat_loop))
        for driver in self.drivers:
            thread = self._spawn(f"driver-{driver.device_id}", lambda d=driver: d.run(self._drivers_stop))
            self._driver_threads.append(thread)
        log.info("agent started", extra={"agent": self.config.id, "devices": len(self.drivers), "queued": len(self.outbox)})

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Stop reading devices, forward what is queued (up to `flush_timeout`), go offline."""
        self._drivers_stop.set()
        for thread in self._driver_threads:
            thread.join(timeout=5)
        if self.uplink_flag.connected.is_set() and not self.publisher.wait_idle(flush_timeout):
            log.warning("stopping with events still queued on disk", extra={"queued": len(self.outbox)})
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.uplink_flag.connected.is_set():
            self.uplink.publish(self.status_topic, self._status_payload(DeviceState.OFFLINE), qos=1, retain=True).wait_for_publish(2)
        for client in {self.uplink, self._device_client} - {None}:
            client.disconnect()  # type: ignore[union-attr]
            client.loop_stop()  # type: ignore[union-attr]
        self.outbox.close()
        log.info("agent stopped", extra={"agent": self.config.id})

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    # ------------------------------------------------------------------ events

    def emit(self, event: Event) -> None:
        """Called by drivers: the event is on disk when this returns."""
        self.outbox.put(self.events_topic, event)
        self.publisher.notify()

    def _heartbeat_loop(self) -> None:
        while not self.clock.wait(self._drivers_stop, self.config.heartbeat_seconds):
            now = self.clock.now()
            for driver in self.drivers:
                self.emit(self._heartbeat(driver, now))
            self.emit(self._agent_heartbeat(now))

    def _heartbeat(self, driver: Driver, now: datetime) -> DeviceStatus:
        return DeviceStatus(
            id=stable_event_id(self.config.site, driver.device_id, "heartbeat", now.isoformat()),
            site=self.config.site,
            device=driver.device_id,
            event_time=now,
            receive_time=now,
            state=DeviceState.HEARTBEAT,
            counters=driver.counters.snapshot(),
        )

    def _agent_heartbeat(self, now: datetime) -> DeviceStatus:
        """The agent's own health: a growing queue or any shed reading is visible downstream."""
        return DeviceStatus(
            id=stable_event_id(self.config.site, self.config.id, "agent-heartbeat", now.isoformat()),
            site=self.config.site,
            device=self.config.id,
            event_time=now,
            receive_time=now,
            state=DeviceState.HEARTBEAT,
            counters={
                "queued": len(self.outbox),
                "shed_readings": self.outbox.dropped,
                "published": self.publisher.published_events,
                "uplink_connects": self.uplink_connects,
            },
        )

    # ------------------------------------------------------------------ MQTT callbacks

    def _on_uplink_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode, properties: object) -> None:
        if not self.uplink_flag.on_connect(reason_code):
            log.error("uplink broker refused connection", extra={"reason": str(reason_code)})
            return
        self.uplink_backoff.reset()
        self.uplink_connects += 1
        log.info("uplink connected", extra={"broker": f"{self.config.broker.host}:{self.config.broker.port}"})
        # Republish availability and resubscribe on every connect, not just the first.
        client.publish(self.status_topic, self._status_payload(DeviceState.ONLINE), qos=1, retain=True)
        if self._device_client is client:
            self._subscribe_devices(client)
        self.publisher.notify()

    def _on_uplink_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode, properties: object) -> None:
        self.uplink_flag.on_disconnect()
        if not self._stop.is_set():
            delay = self.uplink_backoff.apply(client)
            log.warning(
                "uplink lost; buffering to disk",
                extra={"reason": str(reason_code), "queued": len(self.outbox), "retry_in_seconds": round(delay, 2)},
            )

    def _on_device_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode, properties: object, *, backoff: JitteredBackoff
    ) -> None:
        if not reason_code.is_failure:
            backoff.reset()
            self._subscribe_devices(client)

    def _subscribe_devices(self, client: mqtt.Client) -> None:
        client.subscribe([(topic, 1) for topic in self._mqtt_drivers])

    def _on_device_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        driver = self._mqtt_drivers.get(message.topic)
        if driver is not None:
            driver.handle(message.payload)


def _backoff(broker: BrokerConfig) -> JitteredBackoff:
    return JitteredBackoff(broker.reconnect_min_seconds, broker.reconnect_max_seconds)
