"""The `warden` command: agent, gateway, simulate, demo, report, token."""

from __future__ import annotations

import sys
import threading
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional
from contextlib import contextmanager

import typer
from rich.console import Console

from warden.config import BrokerConfig, ConfigError, GatewayConfig, SiteConfig, load_config
from warden.logs import configure_logging
from warden.process import clock_from, stop_on_signal

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

    stop = stop_on_signal()
    configure_logging(log_level)
    with _config_errors():
        gateway_config = load_config(config, GatewayConfig)
        site = load_config(gateway_config.site_file, SiteConfig)
        clock = clock_from(sim_clock)
    service = Gateway(gateway_config, site, clock)
    service.start()
    api = ApiServer(create_app(service), gateway_config.api.host, gateway_config.api.port)
    api.start()
    console.print(f"API on {api.url}/api/alerts (docs at {api.url}/docs)")
    stop.wait()
    api.stop()
    service.stop()


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
    sim_clock: Annotated[Optional[Path], typer.Option("--sim-clock", help="Publish the simulated clock to this file, for `warden agent --sim-clock` and `warden gateway --sim-clock` (simulated nights only)")] = None,
    gateway_config_out: Annotated[Optional[Path], typer.Option(help="Also write a gateway config (and site.yaml beside it) with the scenario's site and rules")] = None,
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
    from simulators.district import district_scenario, parse_size
    from simulators.scenario import load_scenario

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
        with _progress_bar(f"simulating {night.name}") as advance:
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
    scenario: Annotated[str, typer.Option(help="Scenario file, or the name of a shipped one")] = "ac-left-on",
    out: Annotated[Path, typer.Option(help="Output folder for configs, data and alerts")] = Path("out/demo"),
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 2400.0,
    seed: Annotated[int, typer.Option(help="Random seed")] = 1,
    broker: Annotated[str, typer.Option(help="Embedded broker: auto (Mosquitto if found, else amqtt), mosquitto, amqtt")] = "auto",
    log_level: LogLevel = "WARNING",
) -> None:
    """Run a simulated night end to end on an embedded broker, print the alerts and check
    them against the scenario's ground truth (shipped: see `simulators/scenarios/`)."""
    from simulators.scenario import load_scenario
    from warden.demo import run_demo

    configure_logging(log_level)
    with _config_errors():
        night = load_scenario(scenario)
    console.print(f"[bold]{night.name}[/bold]: {night.description}")
    with _progress_bar(f"simulating {night.duration} of {night.site.name or night.site.id}") as advance:
        result = run_demo(night, out, speed=speed, seed=seed, broker_kind=broker, progress=advance)
    _print_alerts(result.alerts, night.site.zone)
    check = result.check
    verdict = "[green]match the ground truth[/green]" if check.exact else (
        f"[red]differ from the ground truth[/red]: missing {check.missing or 'none'}, unexpected {check.unexpected or 'none'}"
    )
    console.print(
        f"{result.totals.readings} readings, {result.totals.taps} patrol taps and {result.totals.door_events} door events "
        f"crossed the wire; gateway stored {result.gateway_counts.get('events_stored', 0):.0f} events, "
        f"{result.gateway_counts.get('rejected', 0):.0f} rejected, {result.gateway_counts.get('duplicates', 0):.0f} duplicates.\n"
        f"The alerts {verdict}. Written to {result.out_dir / 'alerts.json'} and {result.out_dir / 'ground-truth.json'}; "
        f"the morning report is {result.report}"
    )


@app.command()
def report(
    night: Annotated[str, typer.Option(help="The night, by the date it starts on: YYYY-MM-DD")],
    state_db: Annotated[Optional[Path], typer.Option(help="The gateway's state database (default: from --config)")] = None,
    site: Annotated[Optional[Path], typer.Option(help="Site config file (default: from --config)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Gateway config: state DB, historian, site, routes")] = None,
    historian: Annotated[Optional[Path], typer.Option(help="SQLite historian file (default: from --config)")] = None,
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("out/report"),
) -> None:
    """Write the morning report of one night (18:00 to 08:00 local): report.html, report.json,
    report.csv, energy.svg, and the night's alerts as alerts.json and alerts.csv."""
    from warden.report import write_morning_report

    gateway_config, site_config = _report_configs(config, site)
    state_db = state_db or (gateway_config.state_db if gateway_config else None)
    if historian is None and gateway_config is not None and gateway_config.historian.type == "sqlite":
        historian = gateway_config.historian.path
    try:
        day = date.fromisoformat(night)
    except ValueError:
        _fail(f"--night: expected a date like 2026-11-17, got {night!r}")
    if state_db is None:
        _fail("--state-db: required (or give --config)")
    if not state_db.exists():
        _fail(f"--state-db: {state_db} does not exist")
    if historian is not None and not historian.exists():
        _fail(f"--historian: {historian} does not exist")
    rules = gateway_config.rules if gateway_config else None
    files = write_morning_report(state_db, historian, site_config, day, out, rules=rules)
    _print_alerts(files.report["alerts"], site_config.zone)
    summary = files.report["summary"]
    console.print(
        f"{summary['energy_kwh']:.2f} kWh wasted ({summary['energy_cost']:.2f} {summary['currency']}), "
        f"{summary['litres_lost']:.0f} L of water lost, {summary['checkpoints_missed']} checkpoints missed, "
        f"{summary['door_incidents']} door incidents, {summary['silent_devices']} silent devices"
    )
    console.print(f"{len(files.report['alerts'])} alerts written to {out}; report: {files.html}")


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
) -> None:
    """Make an API token: prints the secret once, and the config entry holding its hash."""
    import yaml

    from pydantic import ValidationError

    from gateway.auth import hash_token, new_token
    from warden.config import ApiToken

    if role not in ("guard", "maintenance", "manager", "admin"):
        _fail(f"--role: expected one of guard, maintenance, manager, admin, got {role!r}")
    if role == "guard" and not guard:
        _fail("--guard: a guard token needs the guard's badge id (their routes are the ones they see)")
    secret = new_token()
    entry = {"name": name, "role": role, "sha256": hash_token(secret), **({"guard": guard} if guard else {})}
    try:
        ApiToken.model_validate(entry)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        _fail(f"--{error['loc'][0]}: {error['msg']}, got {error['input']!r}")
    console.print("Add this entry to api.tokens in gateway.yaml (it holds only the hash):", highlight=False)
    typer.echo(yaml.safe_dump([entry], sort_keys=False), nl=False)
    console.print(f"The token, shown only now: give it to {name}; keep it out of files, logs and URLs.", highlight=False)
    typer.echo(secret)


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[float], None]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # not loaded by `warden agent`

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=1.0)
        yield lambda fraction: progress.update(task, completed=fraction)


def _print_alerts(alerts: list[dict[str, object]], zone: tzinfo) -> None:
    from rich.table import Table  # not loaded by `warden agent`

    table = Table(title=f"{len(alerts)} alert(s)")
    for column in ("rule", "subject", "state", "opened (site time)", "message"):
        table.add_column(column)
    for alert in alerts:
        opened = datetime.fromisoformat(str(alert["opened_at"])).astimezone(zone)
        table.add_row(str(alert["rule"]), str(alert["subject"]), str(alert["state"]), f"{opened:%a %d %b %H:%M}", str(alert["message"]))
    Console().print(table)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
