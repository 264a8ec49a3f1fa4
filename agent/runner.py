"""The edge agent: runs one driver per configured device, queues every event on disk,
and forwards it to the uplink broker (see agent/uplink.py for the delivery guarantee).

Availability is a retained message on the agent's status topic: "online" after every
(re)connect, "offline" as the last will and on clean shutdown.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Callable

import paho.mqtt.client as mqtt

from agent.backoff import JitteredBackoff
from agent.config import AgentConfig, DeviceConfig
from agent.drivers.base import Driver, Emit, T
from agent.drivers.mqtt_device import MqttDeviceDriver
from agent.drivers.registry import driver_for
from agent.outbox import Outbox
from agent.uplink import UplinkPublisher
from warden import topics
from warden.clock import Clock, SystemClock
from warden.config import BrokerConfig
from warden.events import DeviceState, DeviceStatus, Event, stable_event_id
from warden.mqtt import ConnectionFlag, client_id_for, connect_async, make_client

if TYPE_CHECKING:
    from agent.drivers.serial_hub import SerialHub

log = logging.getLogger(__name__)

#: The MQTT device callback waits while this many events wait for the disk: it bounds
#: memory, and paces a flood of device messages to the disk instead of letting paho's
#: thread run ahead of every other thread in the process (in the demo, the simulated
#: devices share the process, and were starved at 200).
DEVICE_BACKLOG = 64


class Agent:
    def __init__(self, config: AgentConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.outbox = Outbox(config.buffer_path, max_events=config.buffer_max_events)
        # manual_ack: a device message that comes in on the uplink is acknowledged only
        # once its events are on disk (see _on_device_message). A persistent session: the
        # broker keeps the device subscriptions and queues what devices publish while the
        # agent is reconnecting (a device that reconnects to a restarted broker first would
        # otherwise publish to nobody), and the gateway's acks sent meanwhile.
        uplink_id = client_id_for(config.broker, f"warden-agent-{config.site}-{config.id}")
        self.uplink = make_client(config.broker, uplink_id, persistent_session=True, manual_ack=True)
        self.uplink_flag = ConnectionFlag()
        self.uplink_backoff = _backoff(config.broker)
        self.uplink_connects = 0  # successful (re)connects, published in the agent's heartbeat
        self.publisher = UplinkPublisher(self.uplink, self.outbox, ack_timeout=config.ack_timeout_seconds)
        self.outbox.on_commit = self.publisher.notify
        self._shared: dict[str, object] = {}  # what drivers share, e.g. the Modbus bus of each port
        self._serial_hub: SerialHub | None = None  # one thread reads every selectable serial line
        self.drivers: list[Driver] = [self._make_driver(device) for device in config.devices]
        self._mqtt_drivers: dict[str, MqttDeviceDriver] = {
            d.topic: d for d in self.drivers if isinstance(d, MqttDeviceDriver)
        }
        self._device_client = self._make_device_client()
        self.devices_subscribed = threading.Event()  # set once MQTT device topics are subscribed
        self._device_session = 0  # bumped on every device (re)connect: a stale PUBACK is not sent
        self._stop = threading.Event()
        self._drivers_stop = threading.Event()  # stops event sources first, so the queue can be flushed
        self._threads: list[threading.Thread] = []
        self._driver_threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ wiring

    @property
    def site(self) -> str:
        return self.config.site

    def _make_driver(self, device: DeviceConfig) -> Driver:
        """The device's driver builds itself (agent/drivers/registry.py); heavy libraries
        such as pymodbus are imported then, for the devices configured only."""
        return driver_for(device).build(device, self)

    def serial_line(self, make: Callable[[Emit], Driver], port: str) -> Driver:
        """A serial line driver: read by the shared hub if its port can be selected (the
        hub waits for the disk once per round, so the driver only queues its events),
        else on a thread of its own with the blocking emit."""
        from agent.drivers.serial_hub import SerialHub

        if not SerialHub.takes(port):
            return make(self.emit)
        if self._serial_hub is None:
            self._serial_hub = SerialHub(settle=self.outbox.wait_written)
        driver = make(self._queue_event)
        self._serial_hub.add(driver)  # type: ignore[arg-type]
        return driver

    def shared(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]  # type: ignore[return-value]

    def _make_device_client(self) -> mqtt.Client | None:
        """MQTT-native devices share one client: the uplink's, unless a device broker is set."""
        if not self._mqtt_drivers:
            return None
        if self.config.device_broker is None:
            return self.uplink
        return make_client(
            self.config.device_broker,
            client_id_for(self.config.device_broker, f"warden-agent-{self.config.site}-{self.config.id}-devices"),
            persistent_session=True,  # as the uplink's: devices publishing meanwhile are queued for the agent
            manual_ack=True,
        )

    @property
    def status_topic(self) -> str:
        return topics.status_topic(self.config.site, self.config.id)

    @property
    def events_topic(self) -> str:
        return topics.events_topic(self.config.site, self.config.id)

    @property
    def ack_topic(self) -> str:
        return topics.ack_topic(self.config.site, self.config.id)

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
        self.uplink.message_callback_add(self.ack_topic, self._on_ack)  # before on_message: the gateway's confirmations
        if self._device_client is None:
            self.devices_subscribed.set()
        else:
            self._device_client.on_message = self._on_device_message
            self._device_client.on_subscribe = lambda *args: self._on_devices_subscribed()
            if self._device_client is not self.uplink:
                device_backoff = _backoff(self.config.device_broker)  # type: ignore[arg-type]
                self._device_client.on_connect = lambda *args: self._on_device_connect(*args, backoff=device_backoff)
                self._device_client.on_disconnect = lambda client, *args: device_backoff.apply(client)
                self._device_client.on_connect_fail = lambda client, userdata: device_backoff.apply(client)
                connect_async(self._device_client, self.config.device_broker)  # type: ignore[arg-type]
        connect_async(self.uplink, self.config.broker)
        self._spawn("uplink", lambda: self.publisher.run(self._stop, self.uplink_flag.connected))
        self._driver_threads.append(self._spawn("heartbeat", self._heartbeat_loop))
        hub = self._serial_hub
        if hub is not None:
            self._driver_threads.append(self._spawn("serial-hub", lambda: hub.run(self._drivers_stop)))
        for driver in self.drivers:
            if isinstance(driver, MqttDeviceDriver) or (hub is not None and driver in hub):
                continue  # fed by the device client's callback, or read by the hub
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
        """Called by drivers: the event is on disk when this returns (the outbox wakes
        the publisher after each commit)."""
        self.outbox.put(self.events_topic, event)

    def _queue_event(self, event: Event) -> None:
        """For drivers read by the serial hub, which waits for the disk once per round."""
        self.outbox.submit(self.events_topic, event)

    def _heartbeat_loop(self) -> None:
        while not self.clock.wait(self._drivers_stop, self.config.heartbeat_seconds):
            now = self.clock.now()
            for driver in self.drivers:  # queued together: one transaction, not one per device
                self.outbox.submit(self.events_topic, self._heartbeat(driver, now))
            self.outbox.submit(self.events_topic, self._agent_heartbeat(now))
            self.outbox.wait_written()

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
        if self.publisher.end_to_end:
            client.subscribe(self.ack_topic, qos=1)  # its retained message comes at once
        if self._device_client is client:
            self._subscribe_devices(client)
        self.publisher.reconnected()  # what the last connection carried is sent again unless confirmed

    def _on_uplink_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode, properties: object) -> None:
        self.uplink_flag.on_disconnect()
        if not self._stop.is_set():
            delay = self.uplink_backoff.apply(client)
            log.warning(
                "uplink lost; buffering to disk",
                extra={"reason": str(reason_code), "queued": len(self.outbox), "retry_in_seconds": round(delay, 2)},
            )

    def _on_ack(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.publisher.on_ack(message.payload)
        if message.qos > 0:
            client.ack(message.mid, message.qos)  # manual_ack: nothing to store, acknowledge at once

    def _on_device_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode, properties: object, *, backoff: JitteredBackoff
    ) -> None:
        if not reason_code.is_failure:
            backoff.reset()
            self._subscribe_devices(client)

    def _subscribe_devices(self, client: mqtt.Client) -> None:
        self._device_session += 1
        client.subscribe([(topic, 1) for topic in self._mqtt_drivers])

    def _on_devices_subscribed(self) -> None:
        self.devices_subscribed.set()
        log.info("device topics subscribed", extra={"topics": len(self._mqtt_drivers)})  # a restarted agent is ready

    def _on_device_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """Queue the message's events without waiting for the disk (paho's network thread
        must not block on an fsync), then its PUBACK, which the outbox writer sends in
        turn: after their transaction, and after the PUBACKs of earlier messages."""
        driver = self._mqtt_drivers.get(message.topic)
        failed = False

        def stored(error: Exception | None) -> None:
            nonlocal failed
            failed = failed or error is not None

        if driver is not None:
            driver.handle(message.payload, lambda event: self.outbox.submit(self.events_topic, event, stored))
        session, mid, qos = self._device_session, message.mid, message.qos

        def acknowledge(error: Exception | None) -> None:
            # Not stored: no PUBACK. Nor one into a later session, where the mid may
            # name another message. An unusable payload is acknowledged: it is not stored.
            if not failed and session == self._device_session:
                client.ack(mid, qos)

        self.outbox.call_in_turn(acknowledge)
        self.outbox.wait_queued_below(DEVICE_BACKLOG)


def _backoff(broker: BrokerConfig) -> JitteredBackoff:
    return JitteredBackoff(broker.reconnect_min_seconds, broker.reconnect_max_seconds)
