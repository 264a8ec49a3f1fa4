"""`warden district`: a district of many sites, end to end, on embedded defaults (issue 21).

Each site's agent publishes what its devices produced (simulators/sites.py: the night's
emissions through the agent's own drivers) to its campus's Mosquitto; every campus broker
is bridged to a central Mosquitto with the shipped deploy/bridge/edge-bridge.conf; the
gateways, one per hash partition (gateway/sites.py), each subscribe at the central broker
to their sites only and judge them with their own zone, calendar and rules. Several
campuses share an edge broker when there are more sites than `edges` (a 2-core machine
runs a handful of Mosquittos, not fifty).

The night is played in steps of `tick_minutes` of simulated time, as the demo does
(cli/demo.py): every site's events of the step are published, the run waits until each
partition has stored exactly the events of its sites (counted by id), then ticks every
gateway at the step's end less the allowed lateness; a last tick at the night's end
judges what is left. Every alert a gateway announces is recorded; each site's alerts
are compared with that site's ground truth, derived from its incidents.

The figures (bench/district.py reads them from `--json`): readings stored per second from
the first publish to the last store, and each alert's latency: from the publish of the
message that carried its triggering event (found by event time) to the announcement, or,
for an alert a tick opened, from the tick's start.
"""

from __future__ import annotations

import bisect
import json
import logging
import multiprocessing
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from cli.demo import wait_for
from gateway.config import GatewayConfig, LeaseConfig
from gateway.lease import Lease
from gateway.service import Gateway
from gateway.sites import load_sites
from gateway.store import AlertChange
from simulators.broker import MosquittoBroker, free_port
from simulators.ground_truth import compare_history
from simulators.scenario import Scenario
from simulators.sites import SHORT_HOURS, SHORT_START_UTC, District, agent_events, district_sites, write_district
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, load_config
from warden.events import encode_events
from warden.mqtt import make_client
from warden.process import terminate

log = logging.getLogger(__name__)

#: Mosquitto's default in-flight window (20) would throttle every publisher and bridge.
BROKER_TUNING = "max_inflight_messages 1000\n"
#: Events per published message, as an agent's uplink batches them.
BATCH = 100
#: Real seconds any stage may take before the run gives up.
STAGE_TIMEOUT = 300.0


@dataclass(frozen=True)
class SiteVerdict:
    site: str
    zone: str
    partition: int
    expected: list[tuple[str, str]]
    found: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    false_pages: list[tuple[str, str]]
    mismatches: int  # values outside the truth's bounds

    @property
    def ok(self) -> bool:
        return not self.missing and not self.false_pages and not self.mismatches


@dataclass(frozen=True)
class DistrictResult:
    sites: int
    devices: int
    partitions: int
    edges: int
    state: str  # "sqlite" or "postgresql"
    readings: int  # events stored, all partitions
    seconds: float  # first publish to the last event stored and the last tick done
    latencies_ms: list[float]  # every alert's
    verdicts: list[SiteVerdict]
    generate_seconds: float = 0.0
    standbys: int = 0  # standby processes that waited on a partition's lease all night
    tick_latencies_ms: list[float] = field(default_factory=list)  # the alerts a tick opened (a subset)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0

    def latency_ms(self, share: float, which: str = "all") -> float:
        """The `share` quantile of the alerts' latencies: all, "tick" (opened by a tick) or
        "event" (opened by an event, queued behind the rest of its step's backlog)."""
        chosen = list(self.latencies_ms)
        if which == "tick":
            chosen = list(self.tick_latencies_ms)
        elif which == "event":
            for value in self.tick_latencies_ms:
                chosen.remove(value)
        ordered = sorted(chosen)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, readings_per_s=self.readings_per_s, p50_ms=self.latency_ms(0.5), p99_ms=self.latency_ms(0.99),
                    p99_event_ms=self.latency_ms(0.99, "event"), p99_tick_ms=self.latency_ms(0.99, "tick"))
        data["verdicts"] = [asdict(v) | {"ok": v.ok} for v in self.verdicts]
        return data


@dataclass
class _Message:
    site: str
    topic: str
    payload: bytes
    events: int
    newest: float  # the newest event time in it, UTC epoch seconds


@dataclass
class _Plan:
    """The night's messages per step, prepared before anything is timed."""

    steps: list[list[_Message]]
    step_ends: list[datetime]
    unique: list[dict[str, int]]  # per step, new event ids per site


def _site_messages(args: tuple[Scenario, int, float, float, int]) -> list[list[tuple[bytes, int, float, int]]]:
    """One site's messages per step: (payload, events, newest event time, new ids)."""
    scenario, seed, start, step, count = args
    steps: list[list[tuple[bytes, int, float, int]]] = [[] for _ in range(count)]
    pending: list[list[Any]] = [[] for _ in range(count)]
    for made, event in agent_events(scenario, seed):
        pending[min(count - 1, max(0, int((made - start) // step)))].append(event)
    seen: set[str] = set()
    for n, events in enumerate(pending):
        for at in range(0, len(events), BATCH):
            chunk = events[at:at + BATCH]
            fresh = {e.id for e in chunk} - seen
            seen |= fresh
            steps[n].append((encode_events(chunk), len(chunk), max(e.event_time.timestamp() for e in chunk), len(fresh)))
    return steps


def plan_night(district: District, tick_minutes: float, workers: int = 2) -> _Plan:
    """Every site's events, batched and encoded per step (in `workers` processes)."""
    first = district.sites[0]
    start, end = first.start_utc.timestamp(), first.end_utc.timestamp()
    step = tick_minutes * 60
    count = max(1, int(-(-(end - start) // step)))
    jobs = [(s, district.seed, start, step, count) for s in district.sites]
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: a fork taken while another thread holds a lock (logging's) deadlocks the child
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            per_site = pool.map(_site_messages, jobs, chunksize=1)
    else:
        per_site = [_site_messages(job) for job in jobs]
    steps: list[list[_Message]] = [[] for _ in range(count)]
    unique: list[dict[str, int]] = [defaultdict(int) for _ in range(count)]
    for scenario, site_steps in zip(district.sites, per_site, strict=True):
        sid = scenario.site.id
        topic = topics.events_topic(sid, scenario.agent)
        for n, messages in enumerate(site_steps):
            for payload, events, newest, fresh in messages:
                steps[n].append(_Message(sid, topic, payload, events, newest))
                unique[n][sid] += fresh
    ends = [min(first.end_utc, first.start_utc + timedelta(seconds=step * (n + 1))) for n in range(count)]
    return _Plan(steps, ends, [dict(u) for u in unique])


@dataclass
class _Announcements:
    """Every alert change the gateways announced, with the real time it was announced."""

    by_site: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    opened: list[tuple[float, str, float]] = field(default_factory=list)  # (wall, site, opened_at epoch)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, change: AlertChange) -> None:
        wall, alert = time.perf_counter(), change.alert
        with self.lock:
            entry = self.by_site[alert.site].setdefault(alert.id, {
                "id": alert.id, "rule": alert.rule, "subject": alert.subject, "opened_at": alert.opened_at, "changes": [],
            })
            entry["details"] = alert.details
            entry["changes"].append({"action": change.action, "at": alert.updated_at})
            if change.action == "opened":
                self.opened.append((wall, alert.site, datetime.fromisoformat(str(alert.opened_at)).timestamp()))


class _Agents:
    """One MQTT client per site, as its agent, connected to the site's edge broker."""

    def __init__(self, district: District, edges: list[BrokerConfig]) -> None:
        self.clients: dict[str, mqtt.Client] = {}
        for scenario in district.sites:
            broker = edges[district.edge_of(scenario.site.id)]
            client = make_client(broker, f"district-{scenario.agent}")
            client.max_inflight_messages_set(1000)
            client.connect(broker.host, broker.port)
            client.loop_start()
            self.clients[scenario.site.id] = client

    def publish(self, messages: list[_Message], sent: dict[str, list[tuple[float, float]]]) -> None:
        infos = []
        for message in messages:
            infos.append(self.clients[message.site].publish(message.topic, message.payload, qos=1))
            sent[message.site].append((message.newest, time.perf_counter()))
        for info in infos:
            info.wait_for_publish(STAGE_TIMEOUT)

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


def _wait(condition: Callable[[], bool], what: str) -> None:
    """Poll a counter that has no event to wait on."""
    wait_for(condition, what, "district", STAGE_TIMEOUT, interval=0.005)


def _bridges_up(central: BrokerConfig, sites: list[str]) -> None:
    """Until every campus's bridge announces itself up at the central broker (its retained
    notification, deploy/bridge/edge-bridge.conf)."""
    up: set[str] = set()
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with lock:
            if message.payload == b"1":
                up.add(message.topic.split("/")[3])

    client = make_client(central, "district-bridge-watch")
    client.on_connect = lambda c, *a: c.subscribe(f"{topics.ROOT}/_bridge/+/state", qos=1)
    client.on_message = on_message
    client.connect(central.host, central.port)
    client.loop_start()
    try:
        _wait(lambda: set(sites) <= up, f"every campus bridge to come up (of {len(sites)})")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; still down: {', '.join(sorted(set(sites) - up))}") from None
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True)
class Prepared:
    """A district and its night, generated once; `play` may run it more than once."""

    district: District
    plan: _Plan
    generate_seconds: float


def prepare(
    sites: int, devices: int, *, edges: int | None = None, seed: int = 1, short: bool = False, tick_minutes: float = 15.0,
    progress: Callable[[str], None] | None = None,
) -> Prepared:
    """Generate the district and encode its night. `edges`: edge brokers (default: one per
    site, at most 8: each is a Mosquitto process on this machine)."""
    window = {"start": SHORT_START_UTC, "hours": SHORT_HOURS} if short else {}
    district = district_sites(sites, devices, seed=seed, edges=edges or min(sites, 8), **window)
    started = time.perf_counter()
    plan = plan_night(district, tick_minutes)
    generated = time.perf_counter() - started
    if progress is not None:
        progress(f"generated {sum(m.events for s in plan.steps for m in s)} events of {district.devices} devices in {generated:.1f} s")
    return Prepared(district, plan, generated)


def run_district(
    sites: int,
    devices: int,
    out: Path,
    *,
    partitions: int = 2,
    edges: int | None = None,
    seed: int = 1,
    short: bool = False,
    tick_minutes: float = 15.0,
    state_dbs: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DistrictResult:
    """Generate, write, start and play a district; compare each site with its truth."""
    prepared = prepare(sites, devices, edges=edges, seed=seed, short=short, tick_minutes=tick_minutes, progress=progress)
    return play(prepared, out, partitions=partitions, state_dbs=state_dbs, progress=progress)


def play(
    prepared: Prepared, out: Path, *, partitions: int = 2, state_dbs: list[str] | None = None,
    lease_dsn: str | None = None, progress: Callable[[str], None] | None = None,
) -> DistrictResult:
    """Write the installation into `out`, start its brokers and gateways, play the night.
    `state_dbs`: each partition's postgresql:// URL instead of a SQLite file each.
    `lease_dsn`: each partition's gateway holds its lease there, and a standby process per
    partition (`warden gateway` on the standby config) waits for it all night."""
    say = progress or (lambda text: None)
    district, plan, generated = prepared.district, prepared.plan, prepared.generate_seconds
    sites, devices = len(district.sites), len(district.sites[0].devices)
    out.mkdir(parents=True, exist_ok=True)
    central = MosquittoBroker(workdir=out / "brokers" / "central", extra_config=BROKER_TUNING)
    brokers = [central]
    gateways: list[Gateway] = []
    agents: _Agents | None = None
    leases: list[Lease] = []
    standbys: list[_Standby] = []
    try:
        central_config = BrokerConfig(host=central.host, port=central.port)
        edge_configs = [BrokerConfig(host="127.0.0.1", port=free_port()) for _ in range(district.edges)]
        files = write_district(district, out, partitions=partitions, central=central_config, edges=edge_configs,
                               state_dbs=state_dbs, lease_dsn=lease_dsn)  # fmt: skip
        for n, (config, conf_file) in enumerate(zip(edge_configs, files.edge_files, strict=True)):
            brokers.append(MosquittoBroker(config.port, out / "brokers" / f"edge-{n}", BROKER_TUNING + conf_file.read_text()))
        _bridges_up(central_config, [s.site.id for s in district.sites])
        say(f"{district.edges} edge broker(s) bridged to the central broker")
        clock = ManualClock(district.sites[0].start_utc)
        heard = _Announcements()
        partition_of_site: dict[str, int] = {}
        for index, path in enumerate(files.gateway_files):
            config = load_config(path, GatewayConfig)
            if lease_dsn is not None:  # this process holds the partition: its standby waits
                leases.append(_hold_lease(lease_dsn, config.id))
            gateway = Gateway(config, load_sites(config, path), clock, tick_every=None)
            gateway.alert_listeners.append(heard.record)
            gateway.start()
            if not gateway.subscribed.wait(STAGE_TIMEOUT):
                raise RuntimeError(f"district: gateway {config.id} did not subscribe")
            partition_of_site |= {sid: index for sid in gateway.sites}
            gateways.append(gateway)
        if set(partition_of_site) != {s.site.id for s in district.sites}:
            raise RuntimeError("district: the partitions do not serve every site")
        if lease_dsn is not None:
            standbys = [_Standby(path, out / "logs") for path in files.standby_files]
            _wait(lambda: all(s.waiting() for s in standbys), "every standby to wait for its partition's lease")
            say(f"{len(standbys)} standby gateway process(es) waiting for their partition's lease")
        agents = _Agents(district, edge_configs)
        lateness = timedelta(seconds=district.sites[0].rules.allowed_lateness_seconds)
        sent: dict[str, list[tuple[float, float]]] = defaultdict(list)
        ticks: list[tuple[float, float]] = []
        want = [0] * len(gateways)
        base = [g.events_stored for g in gateways]

        def tick(at: datetime) -> None:
            issued = time.perf_counter()
            for gateway in gateways:
                gateway.tick(at)
            _wait(lambda: all(g.last_tick is not None and g.last_tick >= at for g in gateways), f"the rules to reach {at}")
            ticks.append((issued, time.perf_counter()))

        play_started = time.perf_counter()
        tick(district.sites[0].start_utc)
        for n, (messages, end) in enumerate(zip(plan.steps, plan.step_ends, strict=True)):
            agents.publish(messages, sent)
            for sid, fresh in plan.unique[n].items():
                want[partition_of_site[sid]] += fresh
            _wait(lambda: all(g.events_stored - b >= w for g, b, w in zip(gateways, base, want, strict=True)),
                  f"every event up to {end} to be stored")  # fmt: skip
            clock.advance(end - clock.now())
            tick(end - lateness)
            if n % 4 == 3:
                say(f"{end.isoformat()}: {sum(want)} events stored")
        tick(district.sites[0].end_utc)
        seconds = time.perf_counter() - play_started
        latencies, tick_latencies = _latencies(heard, sent, ticks)
        verdicts = []
        for scenario, truth_file in zip(district.sites, files.truth_files.values(), strict=True):
            sid = scenario.site.id
            history = sorted(heard.by_site.get(sid, {}).values(), key=lambda a: a["id"])
            (out / "alerts").mkdir(exist_ok=True)
            (out / "alerts" / f"{sid}.json").write_text(json.dumps(history, indent=2, default=str) + "\n")
            check = compare_history(history, json.loads(truth_file.read_text()))
            verdicts.append(SiteVerdict(sid, scenario.site.timezone, partition_of_site[sid], check.expected, check.found,
                                        check.missing, check.false_pages, len(check.mismatches)))  # fmt: skip
        result = DistrictResult(
            sites, devices, partitions, district.edges, "postgresql" if state_dbs else "sqlite", sum(want), seconds,
            latencies, verdicts, generated, len(standbys), tick_latencies,
        )
        (out / "result.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        return result
    finally:
        if agents is not None:
            agents.close()
        for standby in standbys:  # before the leases go, or they would take over
            standby.stop()
        for gateway in gateways:
            gateway.stop()
        for lease in leases:
            lease.release()
        for broker in reversed(brokers):
            broker.stop()


def _hold_lease(dsn: str, name: str) -> Lease:
    """Take partition `name`'s lease at once (the first holder has no one to wait for)."""
    lease = Lease(LeaseConfig(dsn=dsn, name=name), name, on_lost=lambda: log.error("district: lease lost", extra={"lease": name}))
    if not lease.acquire(threading.Event(), grace=False):
        raise RuntimeError(f"district: could not take the lease of {name}")
    return lease


def warden_command() -> list[str]:
    """The installed `warden` console script beside this Python (a `python -c` stand-in
    only where it is not installed)."""
    script = shutil.which("warden", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from cli.main import main; main()"]


class _Standby:
    """`warden gateway --config <partition>-standby.yaml`, a process of its own, waiting
    for the partition's lease; its log goes to a file."""

    def __init__(self, config: Path, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / f"{config.stem}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [*warden_command(), "gateway", "--config", str(config), "--log-level", "INFO"],
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def waiting(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"district: the standby exited ({self.process.returncode}); see {self.log}")
        return "standby: waiting for the lease" in self.log.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.process, timeout=10)


def postgres_databases(dsn: str, partitions: int) -> list[str]:
    """A database per partition on the server of `dsn` (one database holds one partition's
    state, gateway/db.py), created afresh; their URLs."""
    base, _, _ = dsn.rpartition("/")
    with psycopg.connect(dsn, autocommit=True) as db:
        for index in range(partitions):
            db.execute(f"DROP DATABASE IF EXISTS district_p{index}")
            db.execute(f"CREATE DATABASE district_p{index}")
    return [f"{base}/district_p{index}" for index in range(partitions)]


def _latencies(
    heard: _Announcements, sent: dict[str, list[tuple[float, float]]], ticks: list[tuple[float, float]]
) -> tuple[list[float], list[float]]:
    """Milliseconds from each alert's trigger to its announcement: the tick it was announced
    in, or else the first message of its site holding an event at or after its opening.
    Every alert's, and those a tick opened."""
    out, by_tick = [], []
    for wall, site, opened_at in heard.opened:
        during = [issued for issued, done in ticks if issued <= wall <= done]
        if during:
            out.append((wall - during[0]) * 1000)
            by_tick.append(out[-1])
            continue
        messages = sent.get(site, [])
        newest = [m[0] for m in messages]
        n = bisect.bisect_left(newest, opened_at)
        candidates = [published for _, published in messages[n:] if published <= wall] or [m[1] for m in messages if m[1] <= wall][-1:]
        if candidates:
            out.append((wall - min(candidates)) * 1000)
    return out, by_tick
