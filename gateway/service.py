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

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Literal

import paho.mqtt.client as mqtt

from gateway import statistics
from gateway.acks import DeliveryAcks
from gateway.catch_up import CatchUp
from gateway.config import GatewayConfig
from gateway.devices import CampusLinks, DeviceRegistry
from gateway.escalation import EscalationPolicy, overdue
from gateway.historian import Historian, open_historian
from gateway.metrics import GatewayMetrics
from gateway.notify import build_notifier, receipts_file
from gateway.ownership import DeviceOwners
from gateway.report_schedule import ReportScheduler
from gateway.report_schedule import due as report_due
from gateway.rule_inputs import AcceptedMessage, bridge_up, feed, journal_entry, link_message, replay
from gateway.store import AlertChange, DeadLetter, StateStore
from gateway.workorders import RULE as WORK_ORDER_RULE
from gateway.workorders import WorkOrders
from rules.alerts import AlertSignal
from rules.config import RulesConfig
from rules.sites import SiteRules
from warden import topics
from warden.clock import Clock, SystemClock
from warden.config import SiteConfig
from warden.events import (
    DeviceStatus,
    Event,
    InvalidPayload,
    clamp_device_clock,
    decode_events,
    encode_events,
    is_too_far_ahead,
    is_too_old,
    too_far_ahead,
    too_old,
)
from warden.mqtt import ConnectionFlag, client_id_for, connect_async, make_client
from warden.topics import AgentTopic

log = logging.getLogger(__name__)

BATCH_MESSAGES = 200
#: The rules' state is snapshotted at most this often (real seconds) and journalled in
#: between (gateway/store.py): a snapshot is O(devices), a journal entry O(batch) ...
SNAPSHOT_SECONDS = 5.0
#: ... and no more often than keeps snapshots under this share of the worker's time ...
SNAPSHOT_TIME_SHARE = 0.05
#: ... unless the journal holds this many events: it bounds the replay after a crash.
JOURNAL_MAX_EVENTS = 200_000


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True)
class _Tick:
    """Asks the worker to let time pass in the rules; queued so rules have one thread.
    `at` None: the clock's time less the allowed lateness."""

    at: datetime | None = None


@dataclass(frozen=True)
class _Decoded:
    """A batch taken from the queue and validated, waiting for its turn to be stored."""

    items: list[Incoming | _Tick]
    accepted: list[tuple[Incoming, AgentTopic, list[Event]]]
    refused: list[DeadLetter]
    links: list[AcceptedMessage] = field(default_factory=list)  # campus bridges' up/down (rule_inputs.link_message)


def committed_rules(served: Sequence[tuple[SiteConfig, RulesConfig]], store: StateStore) -> tuple[SiteRules, int]:
    """The rules of `served` as of `store`'s last committed batch: the last snapshot with the journal
    since replayed onto it; and how many journal entries were replayed. The gateway restarts its
    rules this way; the view across partitions (gateway/view.py) reads their patrol rounds."""
    engine = SiteRules(list(served))
    engine.restore(store.rule_snapshot())
    journal = store.rule_journal()
    for entry in journal:
        replay(engine, entry)
    return engine, len(journal)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        site: SiteConfig | Sequence[SiteConfig] | Sequence[tuple[SiteConfig, RulesConfig]],
        clock: Clock | None = None,
        historian: Historian | None = None,
        tick_every: float | None | Literal["config"] = "config",
    ) -> None:
        """`tick_every`: real seconds between ticks, by default `rules.tick_seconds`; None:
        time passes in the rules only through tick(), as when a simulation replays a
        night faster than the pipeline follows it. `site`: the site served, or several (issue 21),
        each alone or with its own rules (gateway/sites.py: load_sites); alone: the top-level rules."""
        self.config = config
        self.tick_every = config.rules.tick_seconds if tick_every == "config" else tick_every
        served = _served(config, site)
        #: Every site this gateway serves, by id, in configured order (the API reads this).
        self.sites: dict[str, SiteConfig] = {s.id: s for s, _ in served}
        self._rules: dict[str, RulesConfig] = {s.id: rules for s, rules in served}
        #: The only site of a single-site gateway; with several, the first (serve requests by self.sites).
        self.site = served[0][0]
        site = self.site
        several = list(self.sites.values()) if len(self.sites) > 1 else None
        self.clock = clock or SystemClock()
        self.store = StateStore(config.state_db, clock=self.clock, dead_letters=config.dead_letters)  # people and escalation act on this clock
        # hourly statistics live in state.db, committed with each batch; rows from before sites are the first site's
        self.store.read(lambda db: statistics.create_schema(db, site.id))
        self.statistics = statistics.StatisticsWriter(config.statistics.on_watts)
        self.historian = historian or open_historian(config.historian, several or site)
        #: Where the history ended at the last commit (None: the historian has no positions).
        self._history_position = self.store.historian_position() or self.historian.position()
        self._discard_uncommitted_history()
        self.metrics = GatewayMetrics(lambda: self._queue.qsize(), self.historian.stats)
        self.store.on_dead_letters_pruned = self.metrics.dead_letters_pruned.inc
        #: Which agent may speak for which device, per site: two sites may both have an "ac-1".
        self._owners = {site_id: DeviceOwners(rules.deadman) for site_id, rules in self._rules.items()}
        self.owners = self._owners[site.id]
        self._next_snapshot = 0.0  # monotonic time; the first batch snapshots
        self._journal_events = 0
        self.engine = self._committed_rules()
        client_id = client_id_for(config.broker, f"warden-gateway-{config.id}")
        self.client = make_client(config.broker, client_id, persistent_session=True, manual_ack=True)
        self._sync_topic = topics.gateway_sync_topic(client_id)
        self.acks = DeliveryAcks(self.client)  # tells agents what is durably stored (gateway/acks.py)
        self.catch_up = CatchUp(config.rules.catch_up_max_seconds)  # no tick before the session's backlog is in
        self._marker = b""
        self.flag = ConnectionFlag()
        self.subscribed = threading.Event()  # set once the broker confirmed the subscriptions
        self.agents: dict[str, str] = {}  # "site/agent" -> last availability state
        #: Each bridged campus's link as last heard (gateway time) and its last cuts; sites without a bridge: absent.
        self.campus_links = CampusLinks()
        self.campus_links.restore(self.engine.latest_cuts())  # a cut begun before a restart keeps its start
        self._queue: queue.Queue[Incoming | _Tick] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._tick_pending = threading.Event()  # at most one periodic tick waits in the queue
        self.last_tick: datetime | None = None  # rule time of the last committed tick
        self.patrol_rounds: list[dict[str, object]] = self.engine.rounds_state()
        self._threads: list[threading.Thread] = []
        self.alert_listeners: list[Callable[[AlertChange], None]] = []
        self.notifier = build_notifier(config.alerts, self.client, self.metrics.registry, self.store,
                                       several or site,  # outbox in state.db; each alert told in its site's language
                                       receipts_file(config))  # this machine's receipts of pages sent, beside its files
        self.metrics.watch_state(lambda: [(a.severity, a.rule, a.subject) for a in self.store.alerts_live()], lambda: dict(self.agents))
        self.escalation = EscalationPolicy(config.alerts.escalation)
        self.work_orders = WorkOrders(config.state_db, config.work_orders, site.id, self.clock, self.notifier,  # issue 18
                                      site_of_room=self._site_of_room)
        self.metrics.watch_work_orders(lambda: [o.category for o in self.work_orders.open_orders() if overdue(o, self.clock.now())],
                                       config.work_orders.categories)
        self.escalation_checked_at: datetime | None = None  # gateway clock of the last escalation check
        self.link = BrokerLink(config.broker.host, config.broker.port, config.broker.reconnect_max_seconds)
        self.devices = DeviceRegistry()  # last seen and counters per device, for the API
        self.events_stored = 0  # a plain count to wait on: counts() walks every metric
        self._clocks_told: set[tuple[str, str]] = set()  # devices whose fast clock was logged (once each; then counted)
        self._ahead: _Decoded | None = None  # the next batch, validated while this one was stored
        #: Writes each batch's history while the worker runs the rules (see _process).
        self._historian_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-historian")
        send = config.report.send
        #: Each site's daily and monthly reports, made in its own zone.
        self.site_reports = {} if send.daily_at is None and send.monthly_at is None else self._report_schedulers()
        self.reports = self.site_reports.get(site.id)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = lambda client, userdata: self.link.failed()
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.notifier.start()
        connect_async(self.client, self.config.broker)
        threads = (("worker", self._work), ("ticker", self._tick_loop), ("retention", self._retention_loop),
                   ("reports", self._report_loop))
        for name, target in threads:
            if name == "ticker" and self.tick_every is None:
                continue
            if name == "reports" and not self.site_reports:
                continue
            if name == "retention" and not hasattr(self.historian, "prune"):
                continue  # InfluxDB keeps what its bucket's retention says
            thread = threading.Thread(target=target, name=f"gateway-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("gateway started",
                 extra={"site": self.site.id, "sites": list(self.sites), "historian": self.config.historian.type})

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if not any(thread.is_alive() for thread in self._threads):
            self._snapshot_on_stop()
        for reports in self.site_reports.values():
            reports.close()  # the reports thread has stopped: its connections go with it
        self.notifier.stop()
        self.client.disconnect()
        self.client.loop_stop()
        self._historian_writer.shutdown(wait=True)
        self.historian.close()
        # before the store closes: counting reads the live alerts, and would open a connection that stays open
        log.info("gateway stopped", extra={name: int(n) for name, n in self.counts().items()})  # counters count
        self.store.close()
        self.work_orders.close()

    def rules_for(self, site_id: str) -> RulesConfig:
        """The rules configuration a site is judged by (its routes, rooms and thresholds)."""
        return self._rules[site_id]

    def config_for(self, site_id: str) -> GatewayConfig:
        """The gateway config with a site's own rules, for code that reads `config.rules` (reports)."""
        rules = self._rules[site_id]
        return self.config if rules is self.config.rules else self.config.model_copy(update={"rules": rules})

    def _site_of_room(self, room: str) -> str | None:
        """The served site with a room of this id (a work order's site); ValueError naming
        `site` when several sites have it: the order's site is asked for, not guessed."""
        found = [s.id for s in self.sites.values() if any(r.id == room for b in s.buildings for r in b.rooms)]
        if len(found) > 1:
            raise ValueError(f"site: room {room!r} is in sites {', '.join(found)}; say which")
        return found[0] if found else None

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
        self._marker = self.catch_up.connected()
        # Only the served sites' topics: gateways of other sites or partitions share the broker.
        served = [(topic, 1) for site in self.sites for topic in (topics.site_events(site), topics.site_status(site))]
        served += [(topics.bridge_state_topic(site), 1) for site in self.sites]  # campus bridges, if any (retained)
        client.subscribe([*served, (self._sync_topic, 1)])
        self.link.connected()

    def _on_subscribe(self, client: mqtt.Client, *args: object) -> None:
        client.publish(self._sync_topic, self._marker, qos=1)  # comes back behind the backlog
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object, properties: object) -> None:
        self.flag.on_disconnect()
        if not self._stop.is_set():  # not our own disconnect on stop
            self.link.lost(str(reason_code))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._sync_topic:
            self.catch_up.marker(message.payload)
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        self.catch_up.received()
        self._queue.put(Incoming(message.topic, message.payload, message.mid, message.qos))

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stop.is_set():
            batch, self._ahead = self._ahead or self._decode(self._take(wait=0.2)), None
            if batch is not None:
                self._process_until_done(batch)

    def _take(self, wait: float | None) -> list[Incoming | _Tick]:
        """Up to BATCH_MESSAGES queued items; waits `wait` seconds for the first (None: not at all)."""
        try:
            batch = [self._queue.get(timeout=wait) if wait else self._queue.get_nowait()]
        except queue.Empty:
            return []
        while len(batch) < BATCH_MESSAGES:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _decode(self, items: list[Incoming | _Tick]) -> _Decoded | None:
        """Validate a batch: what can be decided before its turn to be stored."""
        if not items:
            return None
        accepted: list[tuple[Incoming, AgentTopic, list[Event]]] = []
        refused: list[DeadLetter] = []
        links: list[AcceptedMessage] = []
        for item in items:
            if isinstance(item, Incoming) and (site := topics.parse_bridge_topic(item.topic)) is not None:
                links += self._link_fact(item, site)
            elif isinstance(item, Incoming):
                outcome, letters = self._accept(item)
                refused += letters
                if outcome is not None:
                    accepted.append(outcome)
        return _Decoded(items, accepted, refused, links)

    def _link_fact(self, item: Incoming, site: str) -> list[AcceptedMessage]:
        """A campus bridge's state, stamped on the gateway's clock as it arrives (the retained
        copy at each reconnect is a repeat the rules ignore)."""
        up = bridge_up(item.payload)
        if up is None:
            log.warning("ignored a bridge state that is neither 1 nor 0", extra={"topic": item.topic, "bytes": len(item.payload)})
            return []
        log.info("campus link", extra={"site": site, "state": "up" if up else "down"})
        self.campus_links.heard(site, up, self.clock.now())
        return [link_message(item.topic, up, self.clock.now())]

    def _process_until_done(self, batch: _Decoded) -> None:
        """Retry a batch whose storage failed instead of acknowledging and losing it."""
        delay = 0.5
        failed = False
        while not self._stop.is_set():
            try:
                if failed:
                    self._rewind_to_last_commit()
                self._process(batch)
                return
            except Exception as exc:
                failed = True
                self.metrics.batch_retries.inc()
                extra = {"messages": len(batch.items), "retry_in_s": delay, "error": repr(exc)}
                if delay == 0.5:  # the full traceback once per stuck batch, then one line a retry
                    log.exception("storing a batch failed; retrying without acknowledging", extra=extra)
                else:
                    log.warning("storing a batch still fails; retrying", extra=extra)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _rewind_to_last_commit(self) -> None:
        """The rules and the history may hold part of a failed batch: take both back to
        the last commit, so the retry neither counts nor stores its events twice. The
        history is cut on its writer thread, after any write still under way."""
        self.engine = self._committed_rules()
        self._historian_writer.submit(self._discard_uncommitted_history).result()

    def _discard_uncommitted_history(self) -> None:
        position = self._history_position
        if position is None:
            return
        discarded = self.historian.discard_after(position)
        if discarded:
            log.warning("discarded history of a batch that was never committed; the broker redelivers it",
                        extra={"points": discarded, "position": position})  # fmt: skip

    def _committed_rules(self) -> SiteRules:
        """The rules as of the last committed batch: the last snapshot with the
        journal since replayed onto it (timers carry on across restarts)."""
        served = [(self.sites[site_id], rules) for site_id, rules in self._rules.items()]
        engine, replayed = committed_rules(served, self.store)
        if replayed:
            self._next_snapshot = 0.0  # replayed once; the next batch snapshots
        engine.on_error = self._rule_failed
        return engine

    def _process(self, decoded: _Decoded) -> None:
        batch, accepted, refused = decoded.items, decoded.accepted, decoded.refused
        events = [event for _, _, message_events in accepted for event in message_events]
        fresh = self._first_sightings(events)
        # The history is written on its own thread while the rules run here, and the
        # next batch is validated: the historian's SQLite or HTTP work mostly runs without
        # the GIL, so they overlap on two cores. It is done before this batch commits; if
        # it failed, the whole batch is retried.
        history = self._historian_writer.submit(self._write_history, fresh)
        messages = [*decoded.links, *_with_fresh(accepted, fresh)]
        ticks = [item for item in batch if isinstance(item, _Tick)]
        tick_at = max(t.at or self._rule_time() for t in ticks) if ticks else None
        with self.metrics.rules_seconds.time():
            signals = feed(self.engine, messages, tick_at)
        stats = self.config.statistics
        hourly = self.statistics.prepare(self.store.write, fresh) if stats.enabled else None
        if self._ahead is None:
            self._ahead = self._decode(self._take(wait=None))
        position = history.result()
        with self.metrics.commit_seconds.time():
            changes = self._commit(fresh, signals, refused, messages, tick_at, position, hourly)
        self._history_position = position
        self.acks.acknowledge(((where, [e.id for e in evs]) for _, where, evs in accepted), refused)  # only once committed
        for item in batch:
            if isinstance(item, Incoming) and item.qos > 0:
                self.client.ack(item.mid, item.qos)
        self.catch_up.processed(sum(isinstance(item, Incoming) for item in batch))
        if ticks:
            self._tick_pending.clear()
            changes += self._escalate()
            self._forget_old_event_ids()
        self._announce(changes)
        self._count_batch(sum(isinstance(item, Incoming) for item in batch), events, fresh, refused)
        if tick_at is not None:
            self.last_tick = tick_at
        self.patrol_rounds = self.engine.rounds_state()  # a copy the API can read while rules move on
        self.devices.observe(fresh)
        with self._progress:
            self._progress.notify_all()

    def _write_history(self, fresh: list[Event]) -> str | None:
        with self.metrics.historian_seconds.time():
            return self.historian.write(fresh)

    def _commit(
        self,
        fresh: list[Event],
        signals: list[AlertSignal],
        refused: list[DeadLetter],
        messages: list[AcceptedMessage],
        tick_at: datetime | None,
        historian_position: str | None,
        hourly: str | None = None,
    ) -> list[AlertChange]:
        """Commit the batch with either a snapshot of the rules or its journal entry, and
        its hourly statistics (`hourly`, from StatisticsWriter.prepare) in the same transaction."""
        started = time.monotonic()
        ids = [e.id for e in fresh]
        also = (lambda db: statistics.apply(db, hourly)) if hourly is not None else None
        if started < self._next_snapshot and self._journal_events < JOURNAL_MAX_EVENTS:
            entry = journal_entry(messages, tick_at)
            changes = self.store.commit_batch(ids, signals, None, refused, journal_entry=entry,
                                              historian_position=historian_position, also=also)
            self._journal_events += len(fresh) + 1
            return changes
        changes = self.store.commit_batch(ids, signals, self.engine.snapshot(), refused,
                                          historian_position=historian_position, also=also)
        cost = time.monotonic() - started
        self._next_snapshot = started + max(SNAPSHOT_SECONDS, cost / SNAPSHOT_TIME_SHARE)
        self._journal_events = 0
        return changes

    def _accept(self, item: Incoming) -> tuple[tuple[Incoming, AgentTopic, list[Event]] | None, list[DeadLetter]]:
        """Validate one message; what cannot be used is kept as a dead letter. Events
        stamped outside the sane time window (a device clock gone wrong), or for a device
        the sending agent does not serve (gateway/ownership.py), are refused one by one, so
        the rest of their batch is kept; a message as a whole is refused for anything else."""
        where = topics.parse_agent_topic(item.topic)
        try:
            if where is None:
                raise InvalidPayload(f"topic {item.topic!r} is not warden/v1/<site>/<agent>/<channel>", "bad_topic")
            events = decode_events(item.payload)
            for event in events:
                if event.site != where.site or event.site not in self.sites:
                    served = ", ".join(map(repr, self.sites))
                    raise InvalidPayload(f"event {event.id}: site {event.site!r} does not match topic site {where.site!r} "
                                         f"/ gateway site(s) {served}", "site_mismatch")
        except InvalidPayload as exc:
            return None, [DeadLetter(item.topic, item.payload, exc.reason, exc.code)]
        kept = [clamp_device_clock(event) for event in events]  # a fast device clock: kept at receive_time, flagged
        if any(a is not b for a, b in zip(kept, events)):
            events, item = kept, Incoming(item.topic, encode_events(kept), item.mid, item.qos)  # the journal replays it
        refusals = [(event, self._refusal(event, where.agent)) for event in events]
        letters = [DeadLetter(item.topic, encode_events([e]), why.reason, why.code) for e, why in refusals if why is not None]
        if letters:
            events = [event for event, why in refusals if why is None]
            if not events:
                return None, letters
            # The rule journal replays the payload: it must hold only what was accepted.
            item = Incoming(item.topic, encode_events(events), item.mid, item.qos)
        if where.channel == "status":
            self._note_availability(where.site, where.agent, events)
        return (item, where, events), letters

    def _refusal(self, event: Event, agent: str) -> InvalidPayload | None:
        """Why one event of an otherwise valid message is refused, or None."""
        if is_too_far_ahead(event, self.clock.now()):
            return too_far_ahead(event)
        if is_too_old(event):
            return too_old(event)
        owner = self._owners[event.site].owner(agent, event.device)
        if owner is not None:
            return InvalidPayload(f"event {event.id}: device {event.device!r} is served by agent {owner!r}, not {agent!r}", "not_owner")
        return None

    def _count_batch(self, messages: int, events: list[Event], fresh: list[Event], refused: list[DeadLetter]) -> None:
        """Counted once the batch is committed, so a retried batch is not counted twice."""
        self.metrics.messages.inc(messages)
        for kind, n in Counter(e.kind for e in events).items():
            self.metrics.received.labels(kind).inc(n)
        for kind, n in Counter(e.kind for e in fresh).items():
            self.metrics.stored.labels(kind).inc(n)
        self.metrics.duplicates.inc(len(events) - len(fresh))
        self.events_stored += len(fresh)
        for event in events:
            if event.device_time is not None:
                self.metrics.clock_ahead.labels(event.kind).inc()
                if (event.site, event.device) not in self._clocks_told:  # once per device: the metric and device view count the rest
                    self._clocks_told.add((event.site, event.device))
                    ahead = (event.device_time - event.event_time).total_seconds()
                    log.warning("device clock ahead", extra={"site": event.site, "device": event.device, "ahead_s": ahead})
        for letter in refused:
            self.metrics.rejected.labels(letter.code).inc()
            log.warning("rejected message", extra={"topic": letter.topic, "code": letter.code, "reason": letter.reason, "bytes": len(letter.payload)})

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
        return fresh

    def _rule_failed(self, rule: str, exc: Exception) -> None:
        """The engine skipped a rule that raised; the event is stored all the same."""
        self.metrics.rule_errors.inc()
        log.error("rule evaluation failed", exc_info=exc, extra={"rule": rule})

    def _announce(self, changes: list[AlertChange], by: str | None = None) -> None:
        """Tell the sinks and listeners; `by`: the person behind the changes (None: the rules)."""
        for change in changes:
            if change.action == "resolved" and change.alert.rule != WORK_ORDER_RULE:
                self._tell_work_order(change.alert.id, by)
            self.metrics.alerts.labels(change.alert.rule, change.action).inc()
            self.notifier.notify(change)  # MQTT alerts topic, webhooks, mail: see gateway/notify.py
            level = logging.DEBUG if change.action == "updated" else logging.INFO
            log.log(level, "alert " + change.action, extra={"rule": change.alert.rule, "subject": change.alert.subject,
                                                             "text": change.alert.message, "note": change.note})
            for listener in self.alert_listeners:
                listener(change)

    def _escalate(self) -> list[AlertChange]:
        """Alerts people left waiting climb a level, judged on the gateway's clock
        (gateway/escalation.py). Idempotent, so a failure just waits for the next tick."""
        now = self.clock.now()
        try:
            changes = self.store.escalate(self.escalation.decider(now), at=now)
            self.work_orders.escalate(lambda order: self.escalation.due_work_order(order, now), now)  # notifies itself
        except Exception:
            log.exception("escalation check failed; retried on the next tick")
            return []
        self.escalation_checked_at = now
        return changes

    def _forget_old_event_ids(self) -> None:
        """Housekeeping on the tick; a failure only postpones it to the next."""
        try:
            if self.store.forget_old_event_ids(timedelta(days=self.config.dedup_window_days)):
                log.info("forgot the oldest generation of seen event ids", extra={"window_days": self.config.dedup_window_days})
        except Exception:
            log.exception("could not forget old event ids; retried on the next tick")

    def acknowledge(self, alert_id: int, by: str, note: str | None = None) -> AlertChange:
        """A person acknowledges an alert; notified like any other change."""
        change = self.store.acknowledge(alert_id, by, note)
        self._announce([change])
        return change

    def assign(self, alert_id: int, to: str, by: str, note: str | None = None) -> AlertChange:
        """A dispatcher names the person an alert is for; shown live like any other change."""
        change = self.store.assign(alert_id, to, by, note)
        self._announce([change])
        return change

    def resolve(self, alert_id: int, by: str, note: str | None = None) -> AlertChange:
        change = self.store.resolve(alert_id, by, note)
        self._announce([change], by=by)
        return change

    def _tell_work_order(self, alert_id: int, by: str | None) -> None:
        """An open work order made from a resolved alert records it (gateway/workorders.py);
        a failure costs only that history step, never the alert's own notification."""
        try:
            self.work_orders.alert_resolved(alert_id, by)
        except Exception:
            log.exception("could not note the resolved alert on its work order", extra={"alert": alert_id})

    def tick(self, at: datetime) -> None:
        """Let the rules act on time having reached `at` (e.g. the end of a replayed night)."""
        self._queue.put(_Tick(at))

    def _rule_time(self) -> datetime:
        """Time as the rules may act on it without data: late events get this long to arrive."""
        return self.clock.now() - timedelta(seconds=self.config.rules.allowed_lateness_seconds)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_every or self.config.rules.tick_seconds):
            if not self.catch_up.caught_up():
                continue  # the broker's backlog first: its data is not late, only queued
            if not self._tick_pending.is_set():
                self._tick_pending.set()
                self._queue.put(_Tick())

    def _report_schedulers(self) -> dict[str, ReportScheduler]:
        """A scheduler per site, each judged by its own rules; several share the tables, scoped."""
        from gateway.report_jobs import build_scheduler  # the renderers: only when reports are scheduled

        scoped = len(self.sites) > 1
        schedulers = {}
        for site in self.sites.values():
            config = self.config_for(site.id)
            schedulers[site.id] = build_scheduler(config, site, self.store, self._history_of(config, site), scoped)
        return schedulers

    def _history_of(self, config: GatewayConfig, site: SiteConfig) -> Callable[[], object]:
        """The report history of one site, opened when a report is made."""
        from gateway.report_jobs import report_history

        return lambda: report_history(config, self.historian, site)

    def _report_loop(self) -> None:
        """Daily and monthly reports when due on the gateway's clock (gateway/report_schedule.py),
        each site's in its own zone."""
        send = self.config.report.send
        while True:
            now = self.clock.now()
            for site_id, reports in self.site_reports.items():
                try:
                    reports.run_due(report_due(send, self.sites[site_id].zone, self.config.report.day_start, now), now)
                except Exception:
                    log.exception("making or sending a scheduled report failed; retried later", extra={"site": site_id})
            if self._stop.wait(send.retry_seconds):
                return

    def _retention_loop(self) -> None:
        """Raw points older than the retention go, a bounded step at a time, off the ingest
        path (the historian's lock is held one step at a time; statistics stay forever)."""
        stats = self.config.statistics
        while not self._stop.wait(stats.prune_every_seconds):
            self.prune_history()

    def prune_history(self) -> int:
        """One pruning pass: steps of `prune_rows` until nothing older is left; how many."""
        stats = self.config.statistics
        prune = getattr(self.historian, "prune", None)  # SqliteHistorian only
        if stats.raw_retention_days is None or prune is None:
            return 0
        pruned = 0
        try:
            # The data's own "now" if it is behind the clock: a replayed or simulated past is
            # not pruned under a live clock, only once newer data follows it.
            newest = getattr(self.historian, "last_written_time", lambda: None)()
            now = self.clock.now() if newest is None else min(self.clock.now(), newest)
            before = now - timedelta(days=stats.raw_retention_days)
            while not self._stop.is_set():
                step = int(prune(before, stats.prune_rows))
                pruned += step
                if step < stats.prune_rows:
                    break
        except Exception:
            log.exception("pruning raw history failed; retried on the next pass")
        if pruned:
            log.info("pruned raw history", extra={"points": pruned, "before": before.isoformat()})
        return pruned

    def _snapshot_on_stop(self) -> None:
        """With the worker gone, the engine is the committed state: snapshot it, so the
        next start replays no journal. If that fails, the journal is still there."""
        try:
            self.store.commit_batch([], [], self.engine.snapshot())
        except Exception:
            log.exception("could not snapshot the rules on stop; the next start replays the journal")

    def counts(self) -> dict[str, float]:
        return self.metrics.counts()

    def health(self) -> dict[str, object]:
        return {
            "connected": self.flag.connected.is_set(),
            "queue_depth": self._queue.qsize(),
            "metrics": self.counts(),
            "historian": self.historian.stats(),
            "agents": dict(self.agents),
            "campus_links": self.campus_links.health(),  # "campus unreachable" vs "agents offline"; the last cuts
            "last_tick": self.last_tick.isoformat() if self.last_tick else None,  # rule time the rules last reached
        }


class BrokerLink:
    """The gateway's view of its broker connection, for the log: the first failure to
    reach the broker and every change of state at WARNING, with host and port; repeated
    failures while paho backs off (up to `retry_max_s`) at DEBUG only."""

    def __init__(self, host: str, port: int, retry_max_s: float) -> None:
        self.where = {"host": host, "port": port}
        self.retry_max_s = retry_max_s
        self.state = "starting"  # starting, connected, lost, unreachable
        self.failures = 0  # failed attempts since the last connection

    def failed(self) -> None:
        self.failures += 1
        if self.state == "unreachable":
            log.debug("MQTT broker still unreachable", extra={**self.where, "attempts": self.failures})
            return
        log.warning("cannot reach the MQTT broker; retrying with back-off, quietly until it answers",
                    extra={**self.where, "retry_max_s": self.retry_max_s})  # fmt: skip
        self.state = "unreachable"

    def connected(self) -> None:
        if self.state == "starting":
            log.info("gateway connected", extra={"broker": f"{self.where['host']}:{self.where['port']}"})
        else:
            log.warning("MQTT broker connection back", extra={**self.where, "was": self.state, "failed_attempts": self.failures})
        self.state, self.failures = "connected", 0

    def lost(self, reason: str) -> None:
        if self.state == "connected":
            log.warning("lost the MQTT broker connection; reconnecting", extra={**self.where, "reason": reason})
            self.state = "lost"


def _served(
    config: GatewayConfig, site: SiteConfig | Sequence[SiteConfig] | Sequence[tuple[SiteConfig, RulesConfig]]
) -> list[tuple[SiteConfig, RulesConfig]]:
    """Each site served with its rules (a site given alone: the top-level rules); ids unique."""
    given = [site] if isinstance(site, SiteConfig) else list(site)
    served = [item if isinstance(item, tuple) else (item, config.rules) for item in given]
    if not served:
        raise ValueError("site: a gateway serves at least one site")
    ids = [s.id for s, _ in served]
    if len(set(ids)) != len(ids):
        raise ValueError(f"site: each site served once, got {ids}")
    return served


def _with_fresh(accepted: list[tuple[Incoming, AgentTopic, list[Event]]], fresh: list[Event]) -> list[AcceptedMessage]:
    """Each message with the events of it seen for the first time (copies within the
    batch included: only the first counts)."""
    first = {id(event) for event in fresh}
    return [
        AcceptedMessage(item.topic, item.payload, where.agent, where.channel, events, [e for e in events if id(e) in first])
        for item, where, events in accepted
    ]
