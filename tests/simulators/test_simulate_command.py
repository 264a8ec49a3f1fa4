"""`warden simulate`, as a user runs it for an agent of their own: every shipped scenario
plays against a real broker (no agent listening: nothing may hang), writes the agent
config and the ground truth; `--dry-run` and `--district` only generate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.config import AgentConfig
from gateway.config import GatewayConfig
from simulators.broker import MosquittoBroker
from simulators.catalogue import load_scenario, shipped_scenarios
from tests.support.scripts import console_script
from warden.clock import FileClock
from warden.config import SiteConfig, load_config


def warden(*args: str) -> subprocess.CompletedProcess[str]:
    # Generous for a loaded 2-core machine: a shipped week (school-week) plays in seconds.
    return subprocess.run([console_script("warden"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", shipped_scenarios())
def test_every_shipped_scenario_plays_against_a_broker(name: str, mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    done = warden(
        "simulate", "--scenario", name, "--speed", "100000", "--seed", "3",
        "--broker", f"{mosquitto.host}:{mosquitto.port}",
        "--agent-config-out", str(tmp_path / "agent.yaml"), "--out", str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    assert "published" in done.stderr and "Traceback" not in done.stderr
    agent = load_config(tmp_path / "agent.yaml", AgentConfig)
    assert {d.id for d in agent.devices} == {d.device for d in load_scenario(name).devices}
    truth = json.loads((tmp_path / "out" / "ground-truth.json").read_text())
    assert (truth["scenario"], truth["seed"]) == (name, 3)
    restarts = [i for i in truth["incidents"] if i["type"] == "broker_restart"]
    assert all(i["injected"] is False for i in restarts)  # it does not own this broker
    assert len(restarts) == (name == "outage")


def test_it_publishes_its_clock_and_writes_a_gateway_config_for_separate_processes(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """What `warden agent --sim-clock` and `warden gateway --sim-clock` need to run on the
    night (tests/faults runs real agent and gateway processes on such a clock)."""
    done = warden(
        "simulate", "--scenario", "fault-drill", "--speed", "100000", "--broker", f"{mosquitto.host}:{mosquitto.port}",
        "--agent-config-out", str(tmp_path / "agent.yaml"), "--out", str(tmp_path / "out"),
        "--sim-clock", str(tmp_path / "night.clock"), "--gateway-config-out", str(tmp_path / "gw" / "gateway.yaml"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scenario = load_scenario("fault-drill")
    assert FileClock(tmp_path / "night.clock").now() == scenario.end_utc  # it stands at the night's end
    gateway = load_config(tmp_path / "gw" / "gateway.yaml", GatewayConfig)
    assert gateway.rules == scenario.rules
    assert load_config(gateway.site_file, SiteConfig) == scenario.site
    assert (gateway.broker.host, gateway.broker.port) == (mosquitto.host, mosquitto.port)


def test_a_dry_run_of_a_district_only_generates_and_says_how_fast(tmp_path: Path) -> None:
    done = warden("simulate", "--district", "4x6", "--dry-run", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "district-4x6: 24 devices, 12:00:00 simulated in" in done.stderr
    truth = json.loads((tmp_path / "ground-truth.json").read_text())
    assert truth["expected_alerts"] and truth["stats"]["emissions"] > 10_000  # meters report every minute


@pytest.mark.parametrize(("args", "message"), [
    (("--district", "4by6", "--dry-run"), "--district: expected BUILDINGSxROOMS"),
    (("--scenario", "no-such-night", "--dry-run"), "no-such-night"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    done = warden("simulate", *args, "--out", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
