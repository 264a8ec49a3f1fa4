"""The gateway: consumes agent events from MQTT, validates and de-duplicates them,
writes the time series to the historian, feeds the rule engine and stores alerts.

Delivery: the MQTT session is persistent (fixed client id, clean_session false) and
messages are acknowledged by hand, only after their batch is committed. Until then the
broker holds them, and redelivers them after a crash or reconnect; event ids make the
redelivery harmless. The broker's in-flight window (Mosquitto: max_inflight_messages)
bounds how much is held in memory here, so a slow historian slows the broker down
instead of growing a queue; paho's network thread only enqueues, so keep-alives go on.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Callable

import paho.mqtt.client as mqtt

from gateway.historian import Historian, open_historian
from gateway.store import AlertChange, StateStore
from rules.alerts import AlertSignal
from rules.engine import RuleEngine
from warden import topics
from warden.clock import Clock, SystemClock
from warden.config import GatewayConfig, SiteConfig
from warden.events import DeviceStatus, Event, InvalidPayload, decode_events
from warden.mqtt import ConnectionFlag, connect_async, make_client

log = logging.getLogger(__name__)

BATCH_MESSAGES = 200
TICK_REAL_SECONDS = 2.0  # how often time is let pass in the rules, in real seconds


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True)
class _Tick:
    """Asks the worker to let time pass in the rules; queued so rules have one thread."""


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        site: SiteConfig,
        clock: Clock | None = None,
        historian: Historian | None = None,
    ) -> None:
        self.config = config
        self.site = site
        self.clock = clock or SystemClock()
        self.store = StateStore(config.state_db)
        self.historian = historian or open_historian(config.historian, site)
        self.engine = RuleEngine(site, config.rules)
        self.engine.restore(self.store.rule_snapshot())
        self.client = make_client(config.broker, f"warden-gateway-{config.id}", persistent_session=True, manual_ack=True)
        self.flag = ConnectionFlag()
        self.metrics: Counter[str] = Counter()
        self.agents: dict[str, str] = {}  # "site/agent" -> last availability state
        self._queue: queue.Queue[Incoming | _Tick] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.alert_listeners: list[Callable[[AlertChange], None]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda client, userdata, flags, rc, props: self.flag.on_disconnect()
        self.client.on_message = self._on_message
        connect_async(self.client, self.config.broker)
        for name, target in (("worker", self._work), ("ticker", self._tick_loop)):
            thread = threading.Thread(target=target, name=f"gateway-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("gateway started", extra={"site": self.site.id, "historian": self.config.historian.type})

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()
        self.historian.close()
        self.store.close()
        log.info("gateway stopped", extra=dict(self.metrics))

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate()` holds after a processed batch (for tests and the demo)."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True

    # ------------------------------------------------------------------ MQTT (network thread)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode, properties: object) -> None:
        if not self.flag.on_connect(reason_code):
            log.error("broker refused connection", extra={"reason": str(reason_code)})
            return
        client.subscribe([(topics.ALL_EVENTS, 1), (topics.ALL_STATUS, 1)])
        log.info("gateway connected", extra={"broker": f"{self.config.broker.host}:{self.config.broker.port}"})

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self._queue.put(Incoming(message.topic, message.payload, message.mid, message.qos))

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH_MESSAGES:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._process_until_done(batch)

    def _process_until_done(self, batch: list[Incoming | _Tick]) -> None:
        """Retry a batch whose storage failed instead of acknowledging and losing it."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._process(batch)
                return
            except Exception:
                self.metrics["batch_retries"] += 1
                log.exception("storing a batch failed; retrying", extra={"messages": len(batch), "retry_in_s": delay})
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _process(self, batch: list[Incoming | _Tick]) -> None:
        events: list[Event] = []
        for item in batch:
            if isinstance(item, Incoming):
                events.extend(self._accept(item))
        fresh = self._first_sightings(events)
        self.historian.write(fresh)
        signals = [signal for event in fresh for signal in self._evaluate(event)]
        if any(isinstance(item, _Tick) for item in batch):
            signals.extend(self.engine.on_tick(self._rule_time()))
        changes = self.store.commit_batch([e.id for e in fresh], signals, self.engine.snapshot())
        for item in batch:
            if isinstance(item, Incoming) and item.qos > 0:
                self.client.ack(item.mid, item.qos)
        self._announce(changes)
        self.metrics["events_stored"] += len(fresh)
        for event in fresh:
            self.metrics[f"stored_{event.kind}"] += 1
        with self._progress:
            self._progress.notify_all()

    def _accept(self, item: Incoming) -> list[Event]:
        """Validate one message; what cannot be used goes to the dead-letter table."""
        self.metrics["messages"] += 1
        where = topics.parse_agent_topic(item.topic)
        try:
            if where is None:
                raise InvalidPayload(f"topic {item.topic!r} is not warden/v1/<site>/<agent>/<channel>")
            events = decode_events(item.payload, now=self.clock.now())
            for event in events:
                if event.site != where.site or event.site != self.site.id:
                    raise InvalidPayload(f"event {event.id}: site {event.site!r} does not match topic site {where.site!r} / gateway site {self.site.id!r}")
        except InvalidPayload as exc:
            self._reject(item, exc.reason)
            return []
        if where.channel == "status":
            self._note_availability(where.site, where.agent, events)
        self.metrics["events_received"] += len(events)
        return events

    def _reject(self, item: Incoming, reason: str) -> None:
        self.metrics["rejected"] += 1
        self.store.dead_letter(item.topic, item.payload, reason)
        log.warning("rejected message", extra={"topic": item.topic, "reason": reason, "bytes": len(item.payload)})

    def _note_availability(self, site: str, agent: str, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, DeviceStatus):
                self.agents[f"{site}/{agent}"] = event.state.value
                log.info("agent availability", extra={"agent": f"{site}/{agent}", "state": event.state.value})

    def _first_sightings(self, events: list[Event]) -> list[Event]:
        unseen = self.store.unseen(e.id for e in events)
        fresh: list[Event] = []
        for event in events:
            if event.id in unseen:
                unseen.discard(event.id)  # a second copy in the same batch is a duplicate too
                fresh.append(event)
        self.metrics["duplicates"] += len(events) - len(fresh)
        return fresh

    def _evaluate(self, event: Event) -> list[AlertSignal]:
        try:
            return self.engine.on_event(event)
        except Exception:
            self.metrics["rule_errors"] += 1
            log.exception("rule evaluation failed", extra={"event": event.id, "device": event.device})
            return []

    def _announce(self, changes: list[AlertChange]) -> None:
        for change in changes:
            self.metrics[f"alerts_{change.action}"] += 1
            payload = _alert_payload(change)
            self.client.publish(topics.alerts_topic(change.alert.site), payload, qos=1)
            level = logging.DEBUG if change.action == "updated" else logging.INFO
            log.log(level, "alert " + change.action, extra={"rule": change.alert.rule, "subject": change.alert.subject, "text": change.alert.message})
            for listener in self.alert_listeners:
                listener(change)

    def _rule_time(self) -> datetime:
        """Time as the rules may act on it without data: late events get this long to arrive."""
        return self.clock.now() - timedelta(seconds=self.config.rules.allowed_lateness_seconds)

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_REAL_SECONDS):
            self._queue.put(_Tick())

    def health(self) -> dict[str, object]:
        return {
            "connected": self.flag.connected.is_set(),
            "queue_depth": self._queue.qsize(),
            "metrics": dict(self.metrics),
            "historian": self.historian.stats(),
            "agents": dict(self.agents),
        }


def _alert_payload(change: AlertChange) -> bytes:
    return json.dumps({"change": change.action, "alert": asdict(change.alert)}, default=str).encode()
