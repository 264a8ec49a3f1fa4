"""The skeleton path, end to end: simulated pty patrol reader and MQTT AC meters ->
real agent -> real Mosquitto -> real gateway (SQLite historian, rules, alert store) ->
HTTP API. Compared with the scenario's ground truth."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.historian.sqlite import SqliteHistorian
from simulators.scenario import SCENARIOS_DIR, load_scenario
from warden.config import AgentConfig, GatewayConfig, SiteConfig, load_config
from warden.demo import run_demo


def test_ac_left_on_night_raises_exactly_the_injected_alert(mosquitto: object, tmp_path: Path) -> None:
    scenario = load_scenario("ac-left-on")
    result = run_demo(scenario, tmp_path, speed=20_000, seed=7)

    found = {(a["rule"], a["subject"]) for a in result.alerts}
    assert found == {(e.rule, e.subject) for e in scenario.expected}
    [alert] = result.alerts
    # A-204's 1.4 kW unit ran from 18:00 (schedule end) to 07:30 (schedule start): 13.5 h.
    assert alert["state"] == "resolved"
    assert alert["details"]["reason"] == "schedule_started"
    assert 13.5 * 1.4 * 0.9 <= alert["details"]["wasted_kwh"] <= 13.5 * 1.4
    assert json.loads((tmp_path / "alerts.json").read_text()) == result.alerts

    # Every simulated reading and tap crossed the broker and is in the historian once.
    site = load_config(tmp_path / "site.yaml", SiteConfig)
    history = SqliteHistorian(load_config(tmp_path / "gateway.yaml", GatewayConfig).historian.path, site)  # type: ignore[union-attr]
    readings = sum(len(history.series(d, q, limit=100_000)) for d in ("ac-a101", "ac-a204") for q in ("power", "energy"))
    taps = history.series("patrol-reader-1", measurement="patrol_tap", limit=1000)
    assert readings == result.totals.readings == 2 * 961 * 2  # two meters, 16 h + 1 samples, two fields
    assert len(taps) == result.totals.taps == 8
    assert result.gateway_counts.get("duplicates", 0) == 0
    assert result.gateway_counts.get("rejected", 0) == 0
    # The configs the demo wrote are valid configs for `warden agent` / `warden gateway`.
    assert load_config(tmp_path / "agent.yaml", AgentConfig).site == "riverside"


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml")))
def test_every_shipped_scenario_raises_exactly_its_ground_truth(name: str, mosquitto: object, tmp_path: Path) -> None:
    scenario = load_scenario(name)
    result = run_demo(scenario, tmp_path, speed=20_000)
    found = sorted((a["rule"], a["subject"]) for a in result.alerts)
    assert found == sorted((e.rule, e.subject) for e in scenario.expected)


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_command_prints_the_alert(broker: str, tmp_path: Path) -> None:
    """The README's main command, as a user runs it (with a faster clock)."""
    warden = shutil.which("warden") or pytest.fail("the warden console script is not installed")
    done = subprocess.run(
        [warden, "demo", "--out", str(tmp_path), "--speed", "20000", "--broker", broker],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "ac_after_hours" in done.stdout and "A-204" in done.stdout
    assert "Traceback" not in done.stderr
    assert sys.executable  # same interpreter family; nothing else to check
