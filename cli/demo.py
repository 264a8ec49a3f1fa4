"""`warden demo`: a whole simulated night, end to end, with nothing installed by hand.

Simulated devices -> (pseudo-terminals, TCP device servers, Modbus RTU, MQTT, spool
folders) -> the real agent -> MQTT broker -> the real gateway (validation, SQLite
historian, rules, alert store) -> HTTP API. The demo reads the alerts back through the
API, like any client, compares them with the scenario's ground truth, and writes both to
the output folder with the configuration files it generated.

The rules are ticked through the night as a live gateway ticks them: every
`tick_minutes` of simulated time the clock stops, the pipeline catches up with what the
devices have sent (a real site's pipeline lags by milliseconds, the accelerated one by
more), and the gateway ticks at that time less its allowed lateness. So the demo pages
what a live gateway would page, including while a broker is down or before a wand is
docked; once every event is stored, a last tick at the night's end judges what is left.
Everything the agent queued is known (by event id), so "every event is stored" is
checked exactly, not guessed from a quiet period. Every alert change the gateway
announces (updates included) is recorded with the simulated time it was announced:
`alert-history.json`, which the ground-truth check reads (a page later withdrawn is
still a page).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import httpx
import yaml

from agent.config import AgentConfig
from agent.drivers.modbus_rtu import ModbusRtuDriver
from agent.drivers.patrol_line import PatrolLineDriver
from agent.drivers.patrol_wand import PatrolWandDriver
from agent.outbox import Stored
from agent.runner import Agent
from gateway.api import ApiServer, create_app
from gateway.auth import hash_token
from gateway.config import GatewayConfig
from gateway.report import ReportFiles, write_morning_report
from gateway.service import Gateway
from gateway.store import AlertChange
from simulators.broker import MosquittoBroker, start_embedded_broker
from simulators.clock import PausableClock
from simulators.ground_truth import GroundTruthCheck, compare_history, write_ground_truth
from simulators.night import Interruption, NightSimulation, SimulationTotals, pending_devices
from simulators.people import PeoplePlayer, Person
from simulators.scenario import Scenario
from simulators.wiring import write_gateway_config, write_yaml
from warden.config import BrokerConfig, SiteConfig, load_config
from warden.events import Event
from warden.i18n import localise, site_names

log = logging.getLogger(__name__)

#: Real seconds to wait for each stage (connections, delivery) before giving up.
STAGE_TIMEOUT = 60.0


@dataclass(frozen=True)
class DemoResult:
    totals: SimulationTotals
    alerts: list[dict[str, Any]]
    gateway_counts: dict[str, float]
    out_dir: Path
    check: GroundTruthCheck
    ground_truth: dict[str, Any]
    report: Path  # the morning report's HTML page
    history: list[dict[str, Any]]  # every alert opened during the night, with each change (alert-history.json)
    locale: str = "en"  # the site's: the language of the report, the alerts' `text` and the printed summary


def run_demo(
    scenario: Scenario,
    out_dir: Path,
    *,
    speed: float = 2400.0,
    seed: int = 1,
    broker_kind: str = "auto",
    progress: Callable[[float], None] | None = None,
    tick_minutes: float = 5.0,
    keep_running: KeepRunning | None = None,
) -> DemoResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    broker = start_embedded_broker(broker_kind)
    # The pipeline reconnects within a fraction of a real second after a broker restart.
    broker_config = BrokerConfig(host=broker.host, port=broker.port, reconnect_min_seconds=0.05, reconnect_max_seconds=0.5)
    clock = PausableClock(scenario.start_utc, speed=speed)
    outage = _BrokerOutage(broker) if isinstance(broker, MosquittoBroker) else None
    live = _LiveTicks(scenario, clock, tick_minutes, outage)
    people = PeoplePlayer.of(scenario, clock)  # repair requests and the like, through the API (simulators/people.py)
    simulation = NightSimulation(
        scenario, broker_config, clock, seed=seed, workdir=out_dir / "devices", outage=outage,
        interruptions=live.interruptions() + (people.interruptions() if people is not None else []),
    )
    gateway = agent = api = None
    try:
        token = keep_running.token if keep_running is not None else None
        staff = [(p, f"wdn_{token_urlsafe(32)}") for p in (people.people.staff if people is not None else [])]
        site, gateway_config, agent_config = _write_configs(scenario, simulation, broker_config, out_dir, token, staff)
        gateway = Gateway(gateway_config, site, clock, tick_every=None)
        history = AlertHistory(clock, site)
        gateway.alert_listeners.append(history.record)
        gateway.start()
        api = ApiServer(create_app(gateway), gateway_config.api.host, gateway_config.api.port)
        api.start()
        if people is not None:
            people.attach(api.url, {person.name: secret for person, secret in staff})
        agent = Agent(agent_config, clock)
        queued = _QueuedIds(agent)
        agent.start()
        if outage is not None:
            outage.attach(agent, gateway)
        _wait_ready(gateway, agent)
        _tick(gateway, scenario.start_utc)  # the rules' first sight of time: the night starts here
        live.attach(gateway, agent, queued, simulation)
        clock.run()
        totals = simulation.run(progress)
        clock.pause()  # the night is over: no poll, scan or heartbeat beyond it while the agent catches up
        _final_reads(agent, clock.now())
        wait_for(lambda: not pending_devices(agent.drivers, totals.handled), "the agent to read every device")
        _wait_stored(gateway, queued)
        _tick(gateway, scenario.end_utc)  # with every event in, the night's deadlines are judged on complete data
        alerts = httpx.get(f"{api.url}/api/alerts", params={"limit": 5000}, timeout=10).raise_for_status().json()
        truth = simulation.ground_truth()
        changes = history.as_list()
        check = compare_history(changes, truth)
        (out_dir / "alerts.json").write_text(json.dumps(alerts, indent=2))
        (out_dir / "alert-history.json").write_text(json.dumps(changes, indent=2, ensure_ascii=False) + "\n")
        write_ground_truth(out_dir / "ground-truth.json", truth)
        (out_dir / "ground-truth-check.json").write_text(json.dumps(check.as_dict(), indent=2) + "\n")
        if people is not None:  # the work orders people made, against what their actions imply
            orders = people.outcome()
            (out_dir / "work-orders.json").write_text(json.dumps(orders, indent=2, ensure_ascii=False) + "\n")
            if not orders["ok"]:
                log.error("work orders differ from the scenario's people", extra={"differences": orders["differences"]})
        report = _write_reports(scenario, gateway, gateway_config, site, out_dir)
        result = DemoResult(totals, alerts, gateway.counts(), out_dir, check, truth, report.html, changes, site.locale)
        if keep_running is not None:
            keep_running.serve(api.url, result)  # returns when told to stop; broker, gateway and API stay up till then
        return result
    finally:
        for part in (agent, api, gateway):
            if part is not None:
                part.stop()
        simulation.close()
        broker.stop()


def _write_reports(
    scenario: Scenario, gateway: Gateway, config: GatewayConfig, site: SiteConfig, out_dir: Path
) -> ReportFiles:
    """The daily report of every day the night touches: the first in `report/`, any
    later one (a week's scenario) in `report-<date>/`. Returns the first."""
    day_start = config.report.day_start
    first = _report_day(scenario.start_utc, site, day_start)
    last = _report_day(scenario.end_utc - timedelta(seconds=1), site, day_start)
    reports = []
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        folder = out_dir / ("report" if n == 0 else f"report-{day.isoformat()}")
        reports.append(write_morning_report(
            config.state_db, gateway.historian, site, day, folder, rules=config.rules, day_start=day_start,
        ))  # fmt: skip
    return reports[0]


def _report_day(at: datetime, site: SiteConfig, day_start: dt_time) -> date:
    """The day whose report covers `at`: its local date, or the day before if before day_start."""
    local = at.astimezone(site.zone)
    return local.date() if local.time() >= day_start else local.date() - timedelta(days=1)


def _write_configs(
    scenario: Scenario, simulation: NightSimulation, broker: BrokerConfig, out_dir: Path, token: str | None = None,
    people: Sequence[tuple[Person, str]] = (),
) -> tuple[SiteConfig, GatewayConfig, AgentConfig]:
    """Write the configuration a real installation would have, then load it back through
    the same validation `warden agent` and `warden gateway` use. `token`: a secret whose
    hash goes into api.tokens as an admin, for a person to sign in to the dashboard.
    `people`: the scenario's staff with a secret each, for a token of the person's role."""
    data = out_dir / "data"
    for name in ("history.db", "state.db", "agent-outbox.db"):
        for stale in data.glob(f"{name}*"):
            stale.unlink()  # a fresh night each run
    write_gateway_config(out_dir / "gateway.yaml", scenario, broker, historian={"type": "sqlite", "path": "data/history.db"})
    if token is not None:
        _add_admin_token(out_dir / "gateway.yaml", token)
    if people:
        add_people_tokens(out_dir / "gateway.yaml", people)
    agent = simulation.agent_config(Path("data/agent-outbox.db"))
    write_yaml(out_dir / "agent.yaml", agent.model_dump(mode="json", exclude_none=True))
    gateway_config = load_config(out_dir / "gateway.yaml", GatewayConfig)
    site = load_config(gateway_config.site_file, SiteConfig)
    return site, gateway_config, load_config(out_dir / "agent.yaml", AgentConfig)


@dataclass(frozen=True)
class KeepRunning:
    """`warden demo --keep-running`: after the night, the broker, gateway and API (with the
    dashboard) stay up until `serve` returns, so a newcomer can look at the result."""

    token: str  # an admin token's secret; only its hash is written to gateway.yaml
    serve: Callable[[str, DemoResult], None]  # gets the API's base URL and the night's result


def _add_admin_token(path: Path, token: str) -> None:
    """An admin entry in api.tokens, holding only the hash. Reads stay public (as with no
    token: a demo on the loopback interface), so every client of the demo still reads."""
    document = yaml.safe_load(path.read_text())
    api = document.setdefault("api", {})
    api.setdefault("tokens", []).append({"name": "demo-admin", "role": "admin", "sha256": hash_token(token)})
    api["public_read"] = True
    write_yaml(path, document)


def add_people_tokens(path: Path, people: Sequence[tuple[Person, str]]) -> None:
    """A token per person of the scenario's staff (hash only); reads stay public, as with
    no token, so the demo's own unauthenticated reads still work."""
    document = yaml.safe_load(path.read_text())
    api = document.setdefault("api", {})
    for person, secret in people:
        entry = {"name": person.name, "role": person.role, "sha256": hash_token(secret)}
        api.setdefault("tokens", []).append(entry | ({"guard": person.guard} if person.guard else {}))
    api["public_read"] = True
    write_yaml(path, document)


class _QueuedIds:
    """Every event id the agent puts in its outbox: the demo waits until the gateway has
    stored exactly these, instead of guessing from a quiet period."""

    def __init__(self, agent: Agent) -> None:
        self._ids: list[str] = []
        self.newest: dict[str, datetime] = {}  # device -> newest event time queued
        self._lock = threading.Lock()
        submit = agent.outbox.submit  # every event goes through it, put() included

        def recording_submit(topic: str, event: Event, on_stored: Stored | None = None) -> int:
            with self._lock:
                self._ids.append(event.id)
                if event.device not in self.newest or event.event_time > self.newest[event.device]:
                    self.newest[event.device] = event.event_time
            return submit(topic, event, on_stored)

        agent.outbox.submit = recording_submit  # type: ignore[method-assign]

    def take(self) -> list[str]:
        with self._lock:
            ids, self._ids = self._ids, []
        return ids


class _BrokerOutage:
    """Restarts the demo's Mosquitto for a scenario's broker_restart incident."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.agent: Agent | None = None
        self.gateway: Gateway | None = None
        self.down = False  # between broker_down and broker_up: nothing can be delivered

    def attach(self, agent: Agent, gateway: Gateway) -> None:
        self.agent, self.gateway = agent, gateway

    def broker_down(self, totals: SimulationTotals) -> None:
        agent, gateway = self._parts()
        # What devices sent before the outage reached the agent (a device's message is lost
        # only while there is no broker, never because the demo stopped it mid-flight).
        wait_for(lambda: not pending_devices(agent.drivers, totals.handled), "the agent to read every device")
        gateway.subscribed.clear()
        agent.devices_subscribed.clear()
        self.broker.stop()
        self.down = True
        log.info("broker stopped for the scenario's outage", extra={"port": self.broker.port})

    def broker_up(self) -> None:
        agent, gateway = self._parts()
        self.broker.start()
        self.down = False
        for what, ready in (
            ("gateway resubscribed", gateway.subscribed),
            ("agent reconnected", agent.uplink_flag.connected),
            ("agent resubscribed its MQTT devices", agent.devices_subscribed),
        ):
            if not ready.wait(STAGE_TIMEOUT):
                raise RuntimeError(f"demo: after the broker restart, {what} did not happen within {STAGE_TIMEOUT}s")
        log.info("broker back for the scenario's outage", extra={"port": self.broker.port})

    def _parts(self) -> tuple[Agent, Gateway]:
        if self.agent is None or self.gateway is None:
            raise RuntimeError("the broker outage needs the agent and the gateway attached")
        return self.agent, self.gateway


class _LiveTicks:
    """Ticks the gateway through the night as a live one ticks: every `minutes` of
    simulated time, with the clock stopped, once the pipeline has caught up with what the
    devices sent (all of it stored, unless the broker is down), at that time less the
    allowed lateness. Data that is late by nature (a wand docked hours after its round,
    events held while a broker is down) stays late, as on a real site."""

    def __init__(self, scenario: Scenario, clock: PausableClock, minutes: float, outage: _BrokerOutage | None) -> None:
        self._scenario, self._clock, self._outage = scenario, clock, outage
        self._step = timedelta(minutes=minutes)
        self._lateness = timedelta(seconds=scenario.rules.allowed_lateness_seconds)
        self._parts: tuple[Gateway, Agent, _QueuedIds, NightSimulation] | None = None
        self._pending: set[str] = set()

    def interruptions(self) -> list[Interruption]:
        start, end = self._scenario.start_utc, self._scenario.end_utc
        count = int((end - start) / self._step)
        times = [start + n * self._step for n in range(1, count + 1)]
        return [Interruption(at, "live tick", lambda at=at: self._tick(at)) for at in times]

    def attach(self, gateway: Gateway, agent: Agent, queued: _QueuedIds, simulation: NightSimulation) -> None:
        self._parts = (gateway, agent, queued, simulation)

    def _tick(self, at: datetime) -> None:
        """At `at` every emission before it is out; the clock may stand past it (a busy
        simulator lags its accelerated clock), so the rules are ticked at `at`, never later."""
        if self._parts is None:
            raise RuntimeError("live ticks need the gateway and the agent attached")
        gateway, agent, queued, simulation = self._parts
        # The accelerated clock runs past poll slots the drivers could not keep: poll the
        # meters that missed theirs (a real driver would have), and scan the wand docks.
        _final_reads(agent, self._clock.now(), newest=queued.newest)
        wait_for(lambda: not pending_devices(agent.drivers, simulation.totals.handled), "the agent to read every device")
        if self._outage is None or not self._outage.down:
            _wait_stored(gateway, queued, self._pending)
        _tick(gateway, at - self._lateness)


class AlertHistory:
    """Every alert change the gateway announced, in order, with the simulated time it was
    announced (`noticed_at`: when a person would have been told) beside the event time."""

    def __init__(self, clock: PausableClock, site: SiteConfig | None = None) -> None:
        """`site`: each message is also kept as `text`, in the site's locale and by names."""
        self._clock = clock
        self._locale = site.locale if site is not None else "en"
        self._names = site_names(site) if site is not None else None
        self._alerts: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def record(self, change: AlertChange) -> None:
        alert, noticed = change.alert, self._clock.now().isoformat()
        with self._lock:
            entry = self._alerts.setdefault(alert.id, {
                "id": alert.id, "rule": alert.rule, "subject": alert.subject, "opened_at": alert.opened_at,
                "noticed_at": noticed, "changes": [],
            })
            text = localise(alert.message, alert.message_id, alert.params, self._locale, self._names)
            entry.update(severity=alert.severity, state=str(alert.state), message=alert.message, details=alert.details, text=text)
            said = (alert.end_message, alert.end_message_id, alert.end_params) if change.action == "resolved" else None
            entry["changes"].append({
                "action": change.action, "at": alert.updated_at, "noticed_at": noticed, "message": change.note or alert.message,
                "text": localise(*said, self._locale, self._names) if said and said[0] else change.note or text,
            })

    def as_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(self._alerts[key])) for key in sorted(self._alerts)]


def _wait_ready(gateway: Gateway, agent: Agent) -> None:
    for what, ready in (
        ("gateway subscribed at the broker", gateway.subscribed),
        ("agent connected to the broker", agent.uplink_flag.connected),
        ("agent subscribed to its MQTT devices", agent.devices_subscribed),
        *((f"agent opened {d.config.port}", d.port_open) for d in agent.drivers if isinstance(d, PatrolLineDriver)),
    ):
        if not ready.wait(STAGE_TIMEOUT):
            raise RuntimeError(f"demo: {what} did not happen within {STAGE_TIMEOUT}s")


def _final_reads(agent: Agent, at: datetime, *, newest: Mapping[str, datetime] | None = None) -> None:
    """What the clock-driven drivers would do by `at`, done by hand with the clock
    stopped: every Modbus meter polled (a poll slot the accelerated clock skipped must not
    look like a silent meter; with `newest`, the event time of each device's newest reading,
    only those a poll interval behind) and every wand spool folder scanned."""
    for driver in agent.drivers:
        if isinstance(driver, ModbusRtuDriver):
            last = None if newest is None else newest.get(driver.device_id)
            if last is None or at - last >= timedelta(seconds=driver.config.poll_seconds):
                driver.poll(at)
        elif isinstance(driver, PatrolWandDriver):
            driver.scan()


def _wait_stored(gateway: Gateway, queued: _QueuedIds, remaining: set[str] | None = None) -> None:
    """Until every event the agent queued is stored by the gateway; `remaining` carries
    the ids still awaited from one call to the next."""
    remaining = set() if remaining is None else remaining

    def stored() -> bool:
        remaining.update(queued.take())
        remaining.intersection_update(gateway.store.unseen(remaining))
        return not remaining

    if not gateway.wait_until(stored, STAGE_TIMEOUT):
        raise RuntimeError(f"demo: {len(remaining)} events the agent queued were not stored within {STAGE_TIMEOUT}s")


def _tick(gateway: Gateway, at: datetime) -> None:
    gateway.tick(at)
    if not gateway.wait_until(lambda: gateway.last_tick is not None and gateway.last_tick >= at, STAGE_TIMEOUT):
        raise RuntimeError(f"demo: the rules did not reach {at.isoformat()} within {STAGE_TIMEOUT}s")


def wait_for(condition: Callable[[], bool], what: str, who: str = "demo", timeout: float = STAGE_TIMEOUT,
             interval: float = 0.002) -> None:
    """Poll a condition that has no event to wait on (driver counters, gateway counters);
    RuntimeError naming `who` and `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{who}: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)

