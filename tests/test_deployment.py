"""deploy/: the systemd units (systemd-analyze verify when present), the compose file
(parsed; every file it mounts or builds from exists; the gateway configs it mounts load),
and the Grafana dashboard (its queries name measurements and tags the historian writes)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig
from gateway.historian.points import event_point
from warden.config import DeviceLocation, SiteConfig, load_config
from warden.events import DeviceStatus, DoorEvent, PatrolTap, Reading

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def test_there_is_a_unit_for_the_gateway_and_one_for_the_agent() -> None:
    assert [u.name for u in UNITS] == ["warden-agent.service", "warden-gateway.service"]


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_a_unit_runs_a_declared_command_with_its_config(unit: Path) -> None:
    service = _unit(unit)["Service"]
    command = shlex.split(service["ExecStart"])
    assert Path(command[0]).name in SCRIPTS  # warden or warden-agent, as pyproject.toml declares
    assert "--config" in command
    assert service["RestartPreventExitStatus"] == "2"  # a config error exits 2: no restart loop
    assert _unit(unit)["Install"]["WantedBy"] == "multi-user.target"


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The executables are not installed here: verify copies that run /bin/true instead."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed; the units were parsed above")
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", unit.read_text(), flags=re.M))
        copies.append(str(copy))
    result = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values, but says so on stderr.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr


# --------------------------------------------------------------------------- compose


BASE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
INFLUX = yaml.safe_load((DEPLOY / "compose.influxdb.yaml").read_text())


def _merged(*files: dict[str, Any]) -> dict[str, Any]:
    """`docker compose -f a -f b`, as far as these files need: services and volumes merged
    key by key (a later file's keys win; lists of depends_on and volumes add up)."""
    merged: dict[str, Any] = {"services": {}, "volumes": {}}
    for document in files:
        merged["volumes"].update(document.get("volumes") or {})
        for name, service in document["services"].items():
            into = merged["services"].setdefault(name, {})
            for key, value in service.items():
                into[key] = into.get(key, []) + value if key in ("depends_on", "volumes") else value
    return merged


COMPOSE = _merged(BASE, INFLUX)


def test_compose_has_the_broker_the_gateway_and_an_optional_influxdb() -> None:
    assert set(BASE["services"]) == {"mosquitto", "gateway"}
    assert {"influxdb", "grafana"} <= set(INFLUX["services"])
    # Compose interpolates a whole file before choosing services: the base file must need
    # no variable, so a plain `docker compose up` works without deploy/.env.
    assert ":?" not in (DEPLOY / "compose.yaml").read_text()
    assert "influxdb" in COMPOSE["services"]["gateway"]["depends_on"]


def test_every_file_compose_mounts_or_builds_from_exists() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"services.{name}.volumes: {source} is missing"
            else:
                assert source in COMPOSE["volumes"], f"services.{name}.volumes: {source} is no named volume"
    build = COMPOSE["services"]["gateway"]["build"]
    context = DEPLOY / build["context"]
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (context / source).exists(), f"{dockerfile.name}: COPY {source}: missing"


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    found = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (DEPLOY / source).resolve()
    return found


def _in_container(service: str, path: str) -> Path | None:
    """The host file behind a path inside a service's container, if a bind mount holds it."""
    for target, source in _mounts(service).items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target):].lstrip("/") if path != target else source
    return None


@pytest.mark.parametrize("files", [[BASE], [BASE, INFLUX]], ids=["compose.yaml", "+compose.influxdb.yaml"])
def test_the_gateway_config_compose_runs_loads_and_names_the_broker_service(files: list[dict[str, Any]]) -> None:
    command = _merged(*files)["services"]["gateway"]["command"]
    host = _in_container("gateway", command[command.index("--config") + 1])
    assert host is not None and host.is_file()
    config = load_config(host, GatewayConfig)
    load_config(config.site_file, SiteConfig)
    assert config.broker.host == "mosquitto" and config.broker.host in COMPOSE["services"]
    assert config.api.host == "0.0.0.0" and f":{config.api.port}" in " ".join(COMPOSE["services"]["gateway"]["ports"])
    for path in (config.state_db, getattr(config.historian, "path", None), getattr(config.historian, "spool_path", None)):
        if path is not None:
            assert str(path).startswith("/var/lib/warden/")  # the warden-data volume, not the read-only config
    assert config.historian.type == ("influxdb" if len(files) == 2 else "sqlite")
    if config.historian.type == "influxdb":
        assert config.historian.url.startswith("http://influxdb:")


def test_the_brokers_files_are_where_its_config_looks() -> None:
    conf = _in_container("mosquitto", "/mosquitto/config/mosquitto.conf")
    assert conf is not None and conf.is_file()
    settings = dict(line.split(None, 1) for line in conf.read_text().splitlines() if line.strip() and not line.startswith("#"))
    assert _in_container("mosquitto", settings["acl_file"]) == (DEPLOY / "acl").resolve()  # the tested ACL, not a copy
    password_dir = _in_container("mosquitto", str(Path(settings["password_file"]).parent))
    assert password_dir is not None and password_dir.is_dir()  # the file itself is made at install
    assert settings["allow_anonymous"] == "false"


# --------------------------------------------------------------------------- grafana


def _written_schema() -> tuple[set[str], set[str]]:
    """Measurements and tag keys the historian writes, from one event of each kind."""
    at = datetime(2026, 11, 17, 21, 0, tzinfo=timezone.utc)
    common = {"site": "s", "device": "d", "event_time": at}
    events = [
        *(Reading(id=f"reading-{q}", quantity=q, value=1.0, unit="u", **common) for q in ("power", "energy", "flow", "volume", "temperature")),
        DoorEvent(id="door-event", action="forced", door="door-back", **common),
        PatrolTap(id="patrol-tap", reader="r", tag="t", **common),
        DeviceStatus(id="status-event", state="heartbeat", **common),
    ]
    points = [event_point(e, DeviceLocation(building="b", room="r", schedule=None)) for e in events]
    return {p.measurement for p in points}, {tag for p in points for tag in p.tags}


def test_the_grafana_dashboard_queries_what_the_historian_writes() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "warden-influxdb.json").read_text())
    measurements, tags = _written_schema()
    queries = [t["query"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert queries
    for query in queries:
        for measurement in re.findall(r'r\._measurement == "([^"]+)"', query):
            assert measurement in measurements, measurement
        for tag in re.findall(r"r\.([a-z_]+) ==", query):
            assert tag.startswith("_") or tag in tags, tag
        for group in re.findall(r"group\(columns: \[([^\]]*)\]\)", query):
            assert set(re.findall(r'"([^"]+)"', group)) <= tags, group
    provisioned = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    uids = {source["uid"] for source in provisioned["datasources"]}
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} <= uids
