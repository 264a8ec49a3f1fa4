"""The `warden` command: agent, gateway, simulate, demo, district, report, token, state copy, view."""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console

from gateway.config import GatewayConfig
from rules.config import RulesConfig
from warden.config import BrokerConfig, ConfigError, SiteConfig, load_config
from warden.i18n import gettext_for, local_text
from warden.logs import ExpectedFaults, configure_logging
from warden.process import clock_from, stop_on_signal

if TYPE_CHECKING:
    from gateway.lease import Lease

log = logging.getLogger(__name__)
app = typer.Typer(help="warden: facilities and safety-patrol monitoring.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True, soft_wrap=True)  # never break an error message across lines

LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR")]
SimClockFile = Annotated[
    Optional[Path],
    typer.Option(
        "--sim-clock",
        help="For simulated nights and drills only, never production: take the time from this "
        "simulated clock file (written by `warden simulate --sim-clock`) instead of the system clock",
    ),
]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=2)


@contextmanager
def _config_errors() -> Iterator[None]:
    """A bad config file is a message and exit code 2, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def agent(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent config file (YAML or TOML)")],
    log_level: LogLevel = "INFO",
    sim_clock: SimClockFile = None,
) -> None:
    """Run an edge agent: read the configured devices and forward their events.

    `warden-agent` takes the same options with less memory, for small boards."""
    from agent.main import run_agent  # the one agent start-up, shared with `warden-agent`

    with _config_errors():
        run_agent(config, log_level, sim_clock)


@app.command()
def gateway(
    config: Annotated[Path, typer.Option("--config", "-c", help="Gateway config file (YAML or TOML)")],
    log_level: LogLevel = "INFO",
    sim_clock: SimClockFile = None,
) -> None:
    """Run the gateway: ingest events, store them, run the rules, serve the API."""
    from gateway.api import ApiServer, create_app
    from gateway.service import Gateway
    from gateway.sites import load_sites

    stop = stop_on_signal()
    configure_logging(log_level)
    with _config_errors():
        gateway_config = load_config(config, GatewayConfig)
        sites = load_sites(gateway_config, config)  # the partition's sites, each with its rules
        clock = clock_from(sim_clock)
    lease = _wait_for_lease(gateway_config, stop)  # a standby: before the rule state and the MQTT session
    if stop.is_set():  # stopped while a standby
        if lease is not None:
            lease.release()
        return
    # Before the broker sees this gateway's client id: a second gateway on a taken port
    # would otherwise take over the running one's MQTT session before dying.
    _check_port_free(gateway_config.api.host, gateway_config.api.port)
    _warn_guards_without_routes(gateway_config, sites)
    with _config_errors():  # what only the gateway can check, e.g. a bot sink's body template
        service = Gateway(gateway_config, sites, clock)
        app = create_app(service)  # checks each token's sites against the gateway's (a ConfigError names the key)
    service.start()
    api = ApiServer(app, gateway_config.api.host, gateway_config.api.port)
    api.start()
    console.print(f"dashboard on {api.url}/ (API at {api.url}/api/alerts, docs at {api.url}/docs)", highlight=False)
    stop.wait()
    api.stop()
    service.stop()
    if lease is not None:
        lease.release()


@app.command()
def view(
    config: Annotated[Path, typer.Option("--config", "-c", help="View config: the partitions' gateway configs, api")],
    log_level: LogLevel = "INFO",
) -> None:
    """Serve one read-only API over every partition of a district (docs/scale.md): no ingest, no lease."""
    from gateway.api import ApiServer
    from gateway.view import PartitionUnavailable, ViewConfig, create_view_app, open_district

    stop = stop_on_signal()
    configure_logging(log_level)
    with _config_errors():
        view_config = load_config(config, ViewConfig)
        try:
            district = open_district(view_config, config)
        except PartitionUnavailable as exc:  # started before PostgreSQL answers: systemd tries again
            _fail(str(exc))
    try:
        _check_port_free(view_config.api.host, view_config.api.port)
        api = ApiServer(create_view_app(district, view_config.api), view_config.api.host, view_config.api.port)
        api.start()
        shown = f"{len(district.sites)} sites in {len(district.partitions)} partitions"
        console.print(f"view of {shown} on {api.url}/ (API at {api.url}/api/overview)", highlight=False)
        stop.wait()
        api.stop()
    finally:
        district.close()  # the partitions' database sessions, also when the port is taken


def _wait_for_lease(config: GatewayConfig, stop: threading.Event) -> Lease | None:
    """With a `lease:` section, the held gateway.lease.Lease (None without one); losing it
    later ends the process with exit code 3 (gateway/lease.py explains the fencing)."""
    if config.lease is None:
        return None
    from gateway.lease import Lease, fence_and_exit, lease_name
    from gateway.notify import receipts_file, replay_receipts_meanwhile

    replay_receipts_meanwhile(receipts_file(config), config.state_db, stop)  # pages this machine sent (gateway/notify.py)
    lease = Lease(config.lease, lease_name(config), on_lost=fence_and_exit)
    lease.acquire(stop)
    return lease


def _check_port_free(host: str, port: int) -> None:
    """Exit 2 with one line if the API's address cannot be bound (port 0: any free one)."""
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
            probe.bind((host, port))
    except OSError as exc:
        _fail(f"api: cannot listen on {host}:{port}: {exc.strerror or exc} (is another gateway running?)")


def _warn_guards_without_routes(
    config: GatewayConfig, sites: list[tuple[SiteConfig, RulesConfig]] | None = None
) -> None:
    """A guard token sees the routes it lists and those naming its guard: with neither, its
    board is empty, which looks like a quiet night rather than a config mistake. `sites`: the
    sites served with their rules (issue 21): a token looks at the routes of the sites it may
    see; none given: the top-level rules'."""
    for token in config.api.tokens:
        if token.role != "guard":
            continue
        seen = [rules for site, rules in sites if not token.sites or site.id in token.sites] if sites else [config.rules]
        routes = [route for rules in seen for route in rules.patrol.routes]  # token.sites empty: every site
        if not any(r.id in token.routes or (token.guard is not None and r.guard == token.guard) for r in routes):
            log.warning(
                "guard token sees no patrol route: no route names its guard, nor is one listed in its routes",
                extra={"token": token.name, "guard": token.guard, "token_routes": token.routes,
                       "guards_named_by_routes": sorted({r.guard for r in routes if r.guard})},
            )  # fmt: skip


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(help="Scenario file, or the name of a shipped one")] = "ac-left-on",
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 2400.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same night")] = 1,
    broker: Annotated[str, typer.Option(help="host:port of the MQTT broker the devices publish to")] = "127.0.0.1:1883",
    agent_config_out: Annotated[Path, typer.Option(help="Where to write the agent config that reads these devices")] = Path("simulated-agent.yaml"),
    start_delay: Annotated[float, typer.Option(help="Real seconds to wait before the night starts (time to start an agent)")] = 0.0,
    out: Annotated[Path, typer.Option(help="Folder for ground-truth.json, and the devices' spool folders")] = Path("out/simulate"),
    district: Annotated[Optional[str], typer.Option(help="Instead of --scenario: a generated district, BUILDINGSxROOMS, e.g. 50x40")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only generate the night's events (no broker, no devices) and time it")] = False,
    sim_clock: Annotated[Optional[Path], typer.Option(
        "--sim-clock", help="Publish the simulated clock to this file, for `warden agent --sim-clock` and "
        "`warden gateway --sim-clock` (simulated nights only)")] = None,
    gateway_config_out: Annotated[Optional[Path], typer.Option(
        help="Also write a gateway config (and site.yaml beside it) with the scenario's site and rules")] = None,
    log_level: LogLevel = "WARNING",
) -> None:
    """Play a scenario's simulated devices against a broker, for an agent started separately.

    Writes the agent config for the devices and, in --out, the ground truth (what was
    injected, where, when, and the alerts it must cause; docs/simulators.md). With
    --sim-clock, a separately started agent and gateway run on the night's clock."""
    configure_logging(log_level)
    night = _simulation_scenario(scenario, district)
    if dry_run:
        _dry_run(night, seed, out)
        return
    _play(
        night, speed=speed, seed=seed, broker=broker, agent_config_out=agent_config_out, start_delay=start_delay,
        out=out, sim_clock=sim_clock, gateway_config_out=gateway_config_out,
    )


def _simulation_scenario(scenario: str, district: str | None) -> Any:
    from simulators.catalogue import load_scenario
    from simulators.district import district_scenario, parse_size

    with _config_errors():
        if district is None:
            return load_scenario(scenario)
        try:
            buildings, rooms = parse_size(district)
        except ValueError as exc:
            _fail(f"--district: {exc}")
        return district_scenario(buildings, rooms)


def _dry_run(night: Any, seed: int, out: Path) -> None:
    """Generate every emission of the night and report what and how fast."""
    import time as clock

    from simulators.ground_truth import ground_truth_document, write_ground_truth
    from simulators.timeline import Night, tally

    started = clock.perf_counter()
    counted = tally(Night(night, seed).emissions())
    seconds = clock.perf_counter() - started
    path = write_ground_truth(out / "ground-truth.json", ground_truth_document(night, seed, stats={"emissions": counted.emissions, "events": counted.events}))
    console.print(
        f"{night.name}: {len(night.devices)} devices, {night.duration} simulated in {seconds:.1f} s: "
        f"{counted.emissions} messages, {counted.events} events, {counted.bytes / 1e6:.1f} MB of payloads\n"
        f"ground truth: {path}"
    )


def _play(
    night: Any, *, speed: float, seed: int, broker: str, agent_config_out: Path, start_delay: float, out: Path,
    sim_clock: Path | None, gateway_config_out: Path | None,
) -> None:
    import yaml

    from simulators.clock import PausableClock
    from simulators.ground_truth import write_ground_truth
    from simulators.night import NightSimulation
    from simulators.wiring import write_gateway_config

    host, _, port = broker.rpartition(":")
    with _config_errors():
        try:
            broker_config = BrokerConfig(host=host or "127.0.0.1", port=int(port))
        except ValueError:
            _fail(f"--broker: expected host:port, got {broker!r}")
    clock = PausableClock(night.start_utc, speed=speed, publish=sim_clock)
    simulation = NightSimulation(night, broker_config, clock, seed=seed, workdir=out)
    try:
        agent_config = simulation.agent_config(Path("data/agent-outbox.db"))
        agent_config_out.write_text(yaml.safe_dump(agent_config.model_dump(mode="json", exclude_none=True), sort_keys=False))
        console.print(f"agent config for these devices: {agent_config_out}")
        if gateway_config_out is not None:
            write_gateway_config(gateway_config_out, night, broker_config, historian={"type": "sqlite", "path": "data/history.db"}, api_port=8080)
            console.print(f"gateway config for this site: {gateway_config_out}")
        if sim_clock is not None:
            console.print(f"simulated clock (standing at the night's start until it begins): {sim_clock}")
        threading.Event().wait(start_delay)
        clock.run()
        with _progress_bar(lambda fraction: f"simulating {night.name}: {_night_clock(night, fraction)}") as advance:
            totals = simulation.run(advance)  # returns with the clock paused at the night's end
        truth = write_ground_truth(out / "ground-truth.json", simulation.ground_truth())
    finally:
        simulation.close()
    console.print(
        f"published {totals.readings} readings, {totals.taps} patrol taps and {totals.door_events} door events; "
        f"ground truth: {truth}"
    )


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="Scenario file, or the name of a shipped one")] = "school-night",
    out: Annotated[Path, typer.Option(help="Output folder for configs, data and alerts")] = Path("out/demo"),
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 2400.0,
    seed: Annotated[int, typer.Option(help="Random seed")] = 1,
    broker: Annotated[str, typer.Option(help="Embedded broker: auto (Mosquitto if found, else amqtt), mosquitto, amqtt")] = "auto",
    keep_running: Annotated[bool, typer.Option(
        "--keep-running",
        help="After the night, leave the broker, gateway and dashboard up, print the dashboard's URL and a token; Ctrl-C stops",
    )] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show libraries' warnings, and each device message the agent drops as the scenario garbles it",
    )] = False,
    log_level: LogLevel = "WARNING",
) -> None:
    """Run a simulated night end to end on an embedded broker, print the alerts and check
    them against the scenario's ground truth (shipped: see `simulators/scenarios/`)."""
    from cli.demo import DemoResult, KeepRunning, run_demo
    from gateway.auth import new_token
    from simulators.catalogue import load_scenario

    # Libraries (amqtt, paho, uvicorn, pymodbus) only at WARNING and only with -v; the
    # simulator's injected noise is expected, so the agent's drops are counted, not printed.
    handler = configure_logging(log_level, libraries=logging.WARNING if verbose else logging.CRITICAL + 1)
    with _config_errors():
        night = load_scenario(scenario)
    faults = ExpectedFaults(broker_restart=any(i.type == "broker_restart" for i in night.incidents))
    if not verbose:
        handler.addFilter(faults)
    console.print(f"[bold]{night.name}[/bold]: {night.description}")

    def outcome(result: DemoResult) -> None:
        _print_demo_outcome(result, night.site.zone, faults)

    def serve(url: str, result: DemoResult) -> None:
        stop = stop_on_signal()
        outcome(result)
        console.print(f"dashboard: {url}/", highlight=False)
        console.print(f"token (sign in with it; admin): {keep.token}", highlight=False)
        console.print("The night is over; broker, gateway and dashboard stay up. Ctrl-C stops them.", highlight=False)
        stop.wait()

    keep = KeepRunning(new_token(), serve) if keep_running else None
    with _progress_bar(lambda fraction: f"{night.site.name or night.site.id}: {_night_clock(night, fraction)}") as advance:
        result = run_demo(night, out, speed=speed, seed=seed, broker_kind=broker, progress=advance, keep_running=keep)
    if keep is None:
        outcome(result)


def _print_demo_outcome(result: Any, zone: tzinfo, faults: ExpectedFaults) -> None:
    """The alerts, the verdict against the ground truth, and what the agent dropped."""
    _ = gettext_for(getattr(result, "locale", "en"))  # the site's language (issue 19)
    _print_alerts(result.alerts, zone, _, getattr(result, "locale", "en"))
    check = result.check
    none = _("none")
    verdict = _("[green]match the ground truth[/green]") if check.ok else _(
        "[red]differ from the ground truth[/red]: missing {missing}, false pages {false}, values off {off}"
    ).format(missing=check.missing or none, false=check.false_pages or none, off=check.mismatches or none)
    counts = result.gateway_counts
    console.print(_(
        "{readings} readings, {taps} patrol taps and {doors} door events crossed the wire; gateway stored {stored:.0f} events, "
        "{rejected:.0f} rejected, {duplicates:.0f} duplicates.\n"
        "The alerts {verdict}. Written to {alerts} and {truth}; the morning report is {report}"
    ).format(readings=result.totals.readings, taps=result.totals.taps, doors=result.totals.door_events,
             stored=counts.get("events_stored", 0), rejected=counts.get("rejected", 0),
             duplicates=counts.get("duplicates", 0), verdict=verdict, alerts=result.out_dir / "alerts.json",
             truth=result.out_dir / "ground-truth.json", report=result.report))
    if faults.counts:
        console.print(_(
            "The agent dropped and counted {count} garbled device messages, as the scenario injects them "
            "({summary}); -v shows each."
        ).format(count=sum(faults.counts.values()), summary=faults.summary()), highlight=False)
    if faults.outage:
        console.print(_(
            "The scenario's broker restart cost {count} connection warnings ({parts}); -v shows each."
        ).format(count=sum(faults.outage.values()), parts=", ".join(f"{part} {n}" for part, n in sorted(faults.outage.items()))),
            highlight=False)
    orders = result.out_dir / "work-orders.json"
    if orders.exists():  # a scenario with people (simulators/people.py)
        played = json.loads(orders.read_text())
        console.print(_("{count} work orders made by the scenario's people: {verdict}. Written to {path}").format(
            count=len(played["observed"]), path=orders,
            verdict=_("as their actions imply") if played["ok"] else "; ".join(played["differences"])), highlight=False)


def _night_clock(night: Any, fraction: float) -> str:
    """Where the simulated night stands: `23:41 · 7h41m of 16h` (site time)."""
    elapsed = timedelta(seconds=round(night.duration.total_seconds() * fraction / 60) * 60)
    at = (night.start_utc + elapsed).astimezone(night.site.zone)
    _ = gettext_for(night.site.locale)  # the site's language (issue 19)
    return _("{time} · {elapsed} of {total}").format(
        time=f"{at:%H:%M}", elapsed=_hours_minutes(elapsed), total=_hours_minutes(night.duration))


def _hours_minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


@app.command()
def district(
    sites: Annotated[int, typer.Option(help="Schools in the district, each a site of its own")] = 6,
    devices: Annotated[int, typer.Option(help="Devices per site")] = 30,
    partitions: Annotated[int, typer.Option(help="Gateway partitions (sites split by a hash of their id)")] = 2,
    edges: Annotated[Optional[int], typer.Option(help="Edge brokers the campuses share (default: one per site, at most 8)")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for the generated installation, data and alerts")] = Path("out/district"),
    seed: Annotated[int, typer.Option(help="Random seed")] = 1,
    short: Annotated[bool, typer.Option("--short", help="The benchmark's 4.5-hour night instead of 12 hours")] = False,
    postgres: Annotated[bool, typer.Option(
        "--postgres", help="Keep each partition's state in PostgreSQL (a throwaway cluster, simulators/postgres.py)",
    )] = False,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Play the same night twice, state in SQLite then in PostgreSQL, and print the ratios",
    )] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures and verdicts here")] = None,
    log_level: LogLevel = "WARNING",
) -> None:
    """Run a simulated district of many sites end to end (edge brokers bridged to a central
    one, partitioned gateways) and check each site's alerts against its ground truth.
    Exits 1 if any site differs."""
    from cli.district import play, postgres_databases, prepare
    from simulators.postgres import PostgresServer

    configure_logging(log_level, libraries=logging.CRITICAL + 1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a clean stop: the brokers and standbys it started end too
    say = lambda text: console.print(text, highlight=False)  # noqa: E731
    prepared = prepare(sites, devices, edges=edges, seed=seed, short=short, progress=say)
    states = ["sqlite", "postgresql"] if compare else ["postgresql" if postgres else "sqlite"]
    server = PostgresServer() if "postgresql" in states else None
    results = []
    try:
        for state in states:
            state_dbs = postgres_databases(server.dsn, partitions) if server is not None and state == "postgresql" else None
            folder = out / state if compare else out
            lease_dsn = server.dsn if state_dbs is not None else None  # and a standby per partition
            results.append(play(prepared, folder, partitions=partitions, state_dbs=state_dbs, lease_dsn=lease_dsn, progress=say))
    finally:
        if server is not None:
            server.close()
    for result in results:
        _print_district(result)
    document: dict[str, Any] = {"runs": [r.as_dict() for r in results]}
    if compare:
        sqlite, pg = results
        document["postgresql_over_sqlite"] = {
            "readings_per_s": pg.readings_per_s / sqlite.readings_per_s,
            "p99_ms": pg.latency_ms(0.99) / max(sqlite.latency_ms(0.99), 1e-9),
        }
        typer.echo(f"PostgreSQL over SQLite: readings/s x{document['postgresql_over_sqlite']['readings_per_s']:.2f}, "
                   f"alert latency p99 x{document['postgresql_over_sqlite']['p99_ms']:.2f}")  # fmt: skip
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=2) + "\n")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _print_district(result: Any) -> None:
    """Each site's alerts and verdict, then the district's figures (cli/district.py DistrictResult)."""
    for verdict in result.verdicts:
        found = ", ".join(f"{rule} {subject}" for rule, subject in verdict.found) or "none"
        outcome = "matches" if verdict.ok else (
            f"DIFFERS: missing {verdict.missing or 'none'}, false pages {verdict.false_pages or 'none'}, "
            f"values off {verdict.mismatches}"
        )
        typer.echo(f"{verdict.site} ({verdict.zone}, partition {verdict.partition}): "
                   f"{len(verdict.found)} alerts, {len(verdict.expected)} expected, {outcome}; found: {found}")  # fmt: skip
    typer.echo(
        f"district: {result.sites} sites x {result.devices} devices, {result.partitions} partitions, {result.edges} edge brokers, "
        f"{result.state} state: {result.readings} events in {result.seconds:.1f} s ({result.readings_per_s:.0f}/s), "
        f"alert latency p50 {result.latency_ms(0.5):.0f} ms, p99 {result.latency_ms(0.99):.0f} ms "
        f"(opened by an event p99 {result.latency_ms(0.99, 'event'):.0f} ms, by a tick {result.latency_ms(0.99, 'tick'):.0f} ms); "
        + ("every site matches its ground truth" if result.ok else "SOME SITES DIFFER FROM THEIR GROUND TRUTH")
    )


@app.command()
def report(
    night: Annotated[Optional[str], typer.Option("--day", "--night", help="The day, by its date: YYYY-MM-DD (--night: the former name)")] = None,
    month: Annotated[Optional[str], typer.Option("--month", help="Instead of a day: the monthly report of YYYY-MM (meter readings CSV, HTML)")] = None,
    state_db: Annotated[Optional[str], typer.Option(
        help="The gateway's state database: a file or a postgresql:// URL (default: from --config)")] = None,
    site: Annotated[Optional[Path], typer.Option(help="Site config file (default: from --config)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Gateway config: state DB, historian, site, routes")] = None,
    historian: Annotated[Optional[Path], typer.Option(help="SQLite historian file (default: from --config)")] = None,
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("out/report"),
    day_start: Annotated[Optional[str], typer.Option(help="Local time the day starts, HH:MM (default: report.day_start of --config, else 08:00)")] = None,
) -> None:
    """Write the morning report of one day (08:00 to 08:00 local by default, the night
    included): report.html, report.json, report.csv, energy.svg, and the day's alerts as
    alerts.json and alerts.csv."""
    from datetime import time as wall_time

    from gateway.report import report_period, write_morning_report

    gateway_config, site_config = _report_configs(config, site)
    state_db = _state_db_option(state_db) or (gateway_config.state_db if gateway_config else None)
    if month is not None:
        return _month_report(state_db, site_config, month, out, gateway_config.rules.patrol.routes if gateway_config else (),
                             gateway_config.work_orders if gateway_config else None)
    if night is None:
        _fail("--day or --month: required")
    if historian is None and gateway_config is not None and gateway_config.historian.type == "sqlite":
        historian = gateway_config.historian.path
    try:
        day = date.fromisoformat(night)
    except ValueError:
        _fail(f"--day/--night: expected a date like 2026-11-17, got {night!r}")
    try:
        start = wall_time.fromisoformat(day_start) if day_start else (gateway_config.report.day_start if gateway_config else wall_time(8, 0))
    except ValueError:
        _fail(f"--day-start: expected a local time like 08:00, got {day_start!r}")
    try:
        report_period(site_config, day, start)
    except ValueError as exc:
        _fail(f"--day/--night: {exc}")
    if state_db is None:
        _fail("--state-db: required (or give --config)")
    if isinstance(state_db, Path) and not state_db.exists():
        _fail(f"--state-db: {state_db} does not exist")
    if historian is not None and not historian.exists():
        _fail(f"--historian: {historian} does not exist")
    rules = gateway_config.rules if gateway_config else None
    files = write_morning_report(state_db, historian, site_config, day, out, rules=rules, day_start=start)
    _print_alerts(files.report["alerts"], site_config.zone)
    summary = files.report["summary"]
    console.print(
        f"{summary['energy_kwh']:.2f} kWh wasted ({summary['energy_cost']:.2f} {summary['currency']}), "
        f"{summary['litres_lost']:.0f} L of water lost, {summary['checkpoints_missed']} checkpoints missed, "
        f"{summary['door_incidents']} door incidents, {summary['silent_devices']} silent devices"
    )
    written = len(files.report["alerts"])
    console.print(f"{written} alert{'' if written == 1 else 's'} written to {out}; report: {files.html}")


def _state_db_option(value: str | None) -> str | Path | None:
    """`--state-db`: a postgresql:// URL as given, anything else a file path."""
    from gateway.db import is_postgres_url

    return value if value is None or is_postgres_url(value) else Path(value)


def _month_report(state_db: str | Path | None, site: SiteConfig, month: str, out: Path, routes: Any = (), work_orders: Any = None) -> None:
    """`warden report --month`: the month's meter readings (CSV for finance), HTML and JSON."""
    from gateway.monthly import parse_month, write_monthly_report

    try:
        parse_month(month)
    except ValueError as exc:
        _fail(f"--{exc}")
    if state_db is None or (isinstance(state_db, Path) and not state_db.exists()):
        _fail(f"--state-db: {state_db or 'required (or give --config)'}{' does not exist' if state_db else ''}")
    paths = write_monthly_report(state_db, site, month, out, routes, work_orders)
    console.print(f"monthly report {month} written: {paths['csv']}, {paths['html']}")


def _report_configs(config: Path | None, site: Path | None) -> tuple[GatewayConfig | None, SiteConfig]:
    with _config_errors():
        gateway_config = load_config(config, GatewayConfig) if config else None
        site_file = site or (gateway_config.site_file if gateway_config else None)
        if site_file is None:
            _fail("--site: required (or give --config)")
        return gateway_config, load_config(site_file, SiteConfig)


@app.command()
def token(
    name: Annotated[str, typer.Option(help="Who will hold it, e.g. facilities-desk")],
    role: Annotated[str, typer.Option(help="guard, maintenance, manager or admin")],
    guard: Annotated[Optional[str], typer.Option(help="role guard: the guard's badge id")] = None,
    site: Annotated[Optional[list[str]], typer.Option(help="A site it may see (repeat for several); none: every site")] = None,
) -> None:
    """Make an API token: prints the secret once, and the config entry holding its hash."""
    import yaml
    from pydantic import ValidationError

    from gateway.auth import hash_token, new_token
    from gateway.config import ApiToken

    if role not in ("guard", "maintenance", "manager", "admin"):
        _fail(f"--role: expected one of guard, maintenance, manager, admin, got {role!r}")
    if role == "guard" and not guard:
        _fail("--guard: a guard token needs the guard's badge id (their routes are the ones they see)")
    secret = new_token()
    entry = {"name": name, "role": role, "sha256": hash_token(secret), **({"guard": guard} if guard else {}),
             **({"sites": site} if site else {})}  # issue 21: tokens scoped to sites
    try:
        ApiToken.model_validate(entry)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        _fail(f"--{error['loc'][0]}: {error['msg']}, got {error['input']!r}")
    console.print("Add this entry to api.tokens in gateway.yaml (it holds only the hash):", highlight=False)
    typer.echo(yaml.safe_dump([entry], sort_keys=False), nl=False)
    console.print(f"The token, shown only now: give it to {name}; keep it out of files, logs and URLs.", highlight=False)
    typer.echo(secret)


state_app = typer.Typer(help="The gateway's state database.", no_args_is_help=True)
app.add_typer(state_app, name="state")


@state_app.command("copy")
def state_copy(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Gateway config: state_db, sites, lease")] = None,
    source: Annotated[Optional[Path], typer.Option("--from", help="The SQLite state file (default: state_db of --config)")] = None,
    target: Annotated[Optional[str], typer.Option("--to", help="postgresql:// URL of an empty database (default: state_db of --config)")] = None,
    site: Annotated[Optional[str], typer.Option(help="The site an old file's statistics belong to (default: the first of --config)")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite the warden state the target already holds")] = False,
    log_level: LogLevel = "WARNING",
) -> None:
    """Copy a stopped gateway's SQLite state (alerts, work orders, statistics, outbox, rules)
    into PostgreSQL, ids kept, in one transaction; prints each table's rows (docs/scale.md)."""
    from cli.state import run_copy
    from gateway.state_copy import StateCopyError

    configure_logging(log_level)
    with _config_errors():
        try:
            run_copy(config, source, target, site, replace, typer.echo)
        except StateCopyError as exc:
            _fail(str(exc))


@contextmanager
def _progress_bar(describe: Callable[[float], str]) -> Iterator[Callable[[float], None]]:
    """A bar labelled `describe(fraction done)`, which moves with it. Where stderr is no
    terminal (a CI log, a pipe) a bar cannot redraw: one plain line per tenth instead.
    The bar stops at 1.0, so what is printed next is not glued to it."""
    if not console.is_terminal:
        console.print(describe(0.0), highlight=False)
        printed = {0}

        def line(fraction: float) -> None:
            tenth = int(fraction * 10)
            if tenth not in printed:
                printed.add(tenth)
                console.print(describe(fraction), highlight=False)

        yield line
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # not loaded by `warden agent`

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(describe(0.0), total=1.0)

        def advance(fraction: float) -> None:
            progress.update(task, completed=fraction, description=describe(fraction))
            if fraction >= 1.0:
                progress.stop()

        yield advance


def _print_alerts(alerts: list[dict[str, object]], zone: tzinfo, _: Callable[[str], str] = str, locale: str = "en") -> None:
    """`_`: the translator of the readers' `locale`; `text` is the message in it (from the API)."""
    from rich.table import Table  # not loaded by `warden agent`

    table = Table(title=_("{count} alert(s)").format(count=len(alerts)))
    for column in (_("rule"), _("subject"), _("state"), _("opened (site time)"), _("message")):
        table.add_column(column)
    for alert in alerts:
        opened = datetime.fromisoformat(str(alert["opened_at"])).astimezone(zone)
        table.add_row(str(alert["rule"]), str(alert["subject"]), _(str(alert["state"])),
                      local_text(opened, "%a %d %b %H:%M", locale),
                      str(alert.get("text") or alert["message"]))
    Console().print(table)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
