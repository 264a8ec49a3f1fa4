"""Every shipped scenario end to end: simulated devices (pseudo-terminals, TCP device
servers, Modbus RTU, MQTT, wand spool folders) -> real agent -> real Mosquitto -> real
gateway (SQLite historian, rules, alert store) -> HTTP API, compared with the scenario's
ground truth. Each scenario runs once per session (at 20 000 times real time; the `night`
fixture, tests/support/nights.py) and the tests below look at its results from several sides."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from cli.demo import DemoResult
from gateway.config import GatewayConfig
from gateway.historian.points import Point
from gateway.historian.sqlite import SqliteHistorian
from simulators.catalogue import load_scenario, shipped_scenarios
from simulators.guards import guard_taps
from tests.support.nights import SPEED
from tests.support.scripts import console_script
from warden.config import SiteConfig, load_config


def series(result: DemoResult, device: str, *args: Any, **kwargs: Any) -> list[Point]:
    """SqliteHistorian.series on the night's historian, closed again (one connection per
    call would otherwise stay open until the garbage collector finds it)."""
    site = load_config(result.out_dir / "site.yaml", SiteConfig)
    historian = SqliteHistorian(load_config(result.out_dir / "gateway.yaml", GatewayConfig).historian.path, site)  # type: ignore[union-attr]
    try:
        return historian.series(device, *args, **kwargs)
    finally:
        historian.close()


def status_counter(result: DemoResult, device: str, counter: str) -> float:
    """The highest value of a driver counter in the device's stored heartbeats."""
    points = series(result, device, measurement="device_status", limit=100_000)
    return max((float(p.fields.get(counter, 0)) for p in points), default=0.0)


@pytest.mark.parametrize("name", shipped_scenarios())
def test_every_shipped_scenario_pages_exactly_its_ground_truth(name: str, night: Callable[[str], DemoResult]) -> None:
    """Every alert opened during the night, as a live gateway ticks, withdrawn ones included,
    is the truth derived from the incidents (simulators/ground_truth.py, no rule code), and
    the scenario's hand-written `expected` list says the same."""
    scenario = load_scenario(name)
    result = night(name)
    opened = sorted((a["rule"], a["subject"]) for a in result.history)
    assert result.check.ok, result.check.as_dict()
    written = json.loads((result.out_dir / "ground-truth.json").read_text())
    assert sorted((a["rule"], a["subject"]) for a in written["expected_alerts"]) == opened
    if scenario.expected is not None:
        assert sorted((e.rule, e.subject) for e in scenario.expected) == opened
    assert written["warnings"] == []
    assert written["scenario"] == name and written["seed"] == 7
    assert all(incident["injected"] for incident in written["incidents"])
    assert json.loads((result.out_dir / "alert-history.json").read_text()) == result.history
    assert result.gateway_counts.get("rule_errors", 0) == 0
    # The daily report the demo wrote shows every alert of its day, and the summary counts
    # the ones a manager reads first.
    report = json.loads((result.report.parent / "report.json").read_text())
    reported = sorted((a["rule"], a["subject"]) for a in report["alerts"])
    assert set(reported) <= set(opened)
    if (scenario.end_utc - scenario.start_utc).days < 1:  # one report day holds the whole night
        assert reported == sorted((a["rule"], a["subject"]) for a in result.alerts)
        rules = [rule for rule, _ in reported]
        summary = report["summary"]
        # The water family's alerts (docs/rules.md), not water_heating_after_hours, which is energy.
        leak_rules = {"water_night_flow", "water_continuous_flow", "water_burst", "water_wet"}
        assert summary["suspected_leaks"] == sum(r in leak_rules for r in rules)
        assert summary["checkpoints_missed"] == rules.count("patrol_checkpoint")
        assert summary["doors_forced"] == rules.count("door_forced")
        assert summary["silent_devices"] == rules.count("deadman")
        assert (summary["energy_kwh"] > 0) == any(r.endswith("_after_hours") and not r.startswith("door") for r in rules)
    assert result.report.read_text().count("<table") >= 1


def test_ac_left_on_counts_every_reading_once_and_the_energy_wasted(night: Callable[[str], DemoResult]) -> None:
    result = night("ac-left-on")
    [alert] = result.alerts
    # A-204's 1.4 kW unit ran from 18:00 (schedule end) to 07:30 (schedule start): 13.5 h.
    assert alert["state"] == "resolved"
    assert alert["details"]["reason"] == "schedule_started"
    assert 13.5 * 1.4 * 0.9 <= alert["details"]["wasted_kwh"] <= 13.5 * 1.4
    assert json.loads((result.out_dir / "alerts.json").read_text()) == result.alerts
    # Every simulated reading and tap crossed the broker and is in the historian once.
    readings = sum(len(series(result, d, q, limit=100_000)) for d in ("ac-a101", "ac-a204") for q in ("power", "energy"))
    taps = series(result, "patrol-reader-1", measurement="patrol_tap", limit=1000)
    assert readings == result.totals.readings == 2 * 961 * 2  # two meters, 16 h + 1 samples, two fields
    assert len(taps) == result.totals.taps == 8
    assert result.gateway_counts.get("duplicates", 0) == 0
    assert result.gateway_counts.get("rejected", 0) == 0
    # The configs the demo wrote are valid configs for `warden agent` / `warden gateway`.
    assert load_config(result.out_dir / "agent.yaml", AgentConfig).site == "riverside"


def test_the_normal_night_absorbs_every_fault_without_an_alert(night: Callable[[str], DemoResult]) -> None:
    """The false-alarm check is only worth something if the faults really happened."""
    result = night("normal-night")
    assert result.alerts == []
    kinds = result.totals.by_kind
    assert kinds["malformed"] > 0 and kinds["noise"] > 0 and kinds["duplicate"] > 0
    assert result.gateway_counts["duplicates"] > 0  # re-sent lines and messages, dropped by event id
    for reason in ("garbage", "bad_checksum", "truncated", "too_long"):
        assert status_counter(result, "patrol-reader-1", f"error_{reason}") > 0, reason
        assert status_counter(result, "ctl-back", f"error_{reason}") > 0, reason
    assert status_counter(result, "ac-a204", "error_not_json") > 0
    assert status_counter(result, "ctl-gate", "error_bad_event") > 0
    # Every device type delivered: Modbus (pty and TCP), serial lines (pty and TCP), MQTT, the wand dock.
    for device, measurement in (("light-a101", "power"), ("ac-a102", "power"), ("ctl-gym", "door"),
                                ("ctl-back", "door"), ("wm-a", "volume"), ("wet-b", "wet")):
        assert series(result, device, measurement, limit=5), (device, measurement)
    assert len(series(result, "dock-1", measurement="patrol_tap", limit=100)) == 3  # uploaded hours later


def test_the_outage_restarts_the_broker_and_loses_only_what_mqtt_devices_sent_meanwhile(
    night: Callable[[str], DemoResult],
) -> None:
    result = night("outage")
    [restart] = [i for i in result.ground_truth["incidents"] if i["type"] == "broker_restart"]
    assert restart["injected"] and restart["alerts"] == []
    assert sum(result.totals.lost.values()) > 0  # MQTT devices could not publish while it was down
    assert result.ground_truth["stats"]["lost_in_outage"] == sum(result.totals.lost.values())
    # What the serial reader said while the broker was down was buffered by the agent and arrived.
    down, up = (datetime.fromisoformat(restart[k].replace("Z", "+00:00")) for k in ("start", "end"))
    heartbeats = series(result, "patrol-reader-1", measurement="device_status", since=down, limit=100_000)
    assert [p for p in heartbeats if down < p.time <= up]


def test_missed_patrol_uploads_the_wand_hours_later_with_the_original_tap_times(night: Callable[[str], DemoResult]) -> None:
    result = night("missed-patrol")
    scenario = load_scenario("missed-patrol")
    walked = guard_taps(scenario, scenario.guard("guard-kim"), seed=7)
    taps = series(result, "dock-1", measurement="patrol_tap", limit=100)
    assert sorted(t.time.timestamp() for t in taps) == sorted(t.t for t in walked)  # cp-fence was skipped
    docked = scenario.instant(scenario.guard("guard-kim").dock_at)  # type: ignore[arg-type]
    assert all((docked - t.time).total_seconds() > 2 * 3600 for t in taps)


def test_demo_command_on_the_embedded_broker_prints_the_alert(tmp_path: Path) -> None:
    """The README's main command on a machine without Mosquitto (amqtt from PyPI); with
    Mosquitto, tests/test_demo_command.py plays it."""
    broker = "amqtt"
    warden = console_script("warden")
    done = subprocess.run(
        [warden, "demo", "--out", str(tmp_path), "--speed", str(SPEED), "--broker", broker],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "ac_after_hours" in done.stdout and "A-204" in done.stdout
    assert "match the ground truth" in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "ground-truth-check.json").read_text())["ok"] is True


def test_demo_command_runs_a_named_scenario(tmp_path: Path) -> None:
    warden = console_script("warden")
    done = subprocess.run(
        [warden, "demo", "--scenario", "door-incidents", "--out", str(tmp_path), "--speed", str(SPEED)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "door_forced" in done.stdout and "match the ground truth" in done.stderr
