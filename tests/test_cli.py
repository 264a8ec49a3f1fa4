"""The `warden` console script, run for real in a subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.store import StateStore
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.support.scripts import console_script

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
SUBCOMMANDS = ["agent", "gateway", "simulate", "demo", "district", "report", "token"]


def _command() -> list[str]:
    """The installed console script, as a user runs it (never a `python -c` stand-in)."""
    return [console_script("warden")]


def warden(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Wide columns: rich wraps stderr at 80 columns when it is not a terminal, which
    # would split long temporary paths; no colours so the text can be matched.
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [*_command(), *map(str, args)], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# --------------------------------------------------------------------------- help


def test_help_lists_every_subcommand() -> None:
    result = warden("--help")
    assert result.returncode == 0, output(result)
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name: str) -> None:
    result = warden(name, "--help")
    assert result.returncode == 0, output(result)
    assert "Usage" in result.stdout and name in result.stdout
    assert "Traceback" not in output(result)


@pytest.mark.parametrize(("name", "option"), [("agent", "--config"), ("gateway", "--config"), ("report", "--night")])
def test_subcommand_help_shows_its_options(name: str, option: str) -> None:
    assert option in warden(name, "--help").stdout


def test_unknown_subcommand() -> None:
    result = warden("frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in output(result)


# --------------------------------------------------------------------------- config errors


def test_agent_with_a_bad_config_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "id: agent-a\nsite: riverside\ndevices:\n"
        "  - driver: patrol_line\n    id: patrol-reader-1\n    port: /dev/ttyUSB0\n    baudrate: fast\n"
    )
    result = warden("agent", "--config", config)
    assert result.returncode == 2, output(result)
    assert str(config) in result.stderr
    assert "devices[0].baudrate" in result.stderr
    assert "'fast'" in result.stderr
    assert "Traceback" not in output(result)


def test_agent_with_a_relative_config_path(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("id: agent-a\nsite: riverside\ndevices: []\n")
    result = warden("agent", "-c", "agent.yaml", cwd=tmp_path)
    assert result.returncode == 2, output(result)
    assert "agent.yaml: devices" in result.stderr
    assert "Traceback" not in output(result)


def test_gateway_with_a_missing_config(tmp_path: Path) -> None:
    result = warden("gateway", "--config", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2, output(result)
    assert "missing.yaml: file not found" in result.stderr
    assert "Traceback" not in output(result)


def test_gateway_with_a_bad_site_file_names_the_site_file(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text("id: riverside\ntimezone: Mars/Olympus\n")
    (tmp_path / "gateway.yaml").write_text("site_file: site.yaml\n")
    result = warden("gateway", "--config", tmp_path / "gateway.yaml")
    assert result.returncode == 2, output(result)
    assert f"{tmp_path / 'site.yaml'}: timezone:" in result.stderr
    assert "'Mars/Olympus'" in result.stderr
    assert "Traceback" not in output(result)


def test_gateway_with_invalid_yaml(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("site_file: [site.yaml\n")
    result = warden("gateway", "--config", tmp_path / "gateway.yaml")
    assert result.returncode == 2, output(result)
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in output(result)


@pytest.mark.parametrize("name", ["agent", "gateway"])
def test_a_missing_simulated_clock_file_is_a_message_not_a_traceback(name: str, tmp_path: Path) -> None:
    result = warden(name, "--config", CONFIG_DIR / f"{name}.yaml", "--sim-clock", tmp_path / "night.clock")
    assert result.returncode == 2, output(result)
    assert f"--sim-clock: {tmp_path / 'night.clock'}: no simulated clock file there" in result.stderr
    assert "Traceback" not in output(result)


def test_the_sim_clock_option_says_it_is_not_for_production() -> None:
    for name in ("agent", "gateway"):
        assert "never production" in warden(name, "--help").stdout


# --------------------------------------------------------------------------- report


def signal(subject: str, at: datetime, *, site: str = "riverside", action: SignalAction = SignalAction.RAISE) -> AlertSignal:
    return AlertSignal(
        site=site,
        rule="ac_after_hours",
        subject=subject,
        action=action,
        at=at,
        severity=Severity.WARNING,
        message=f"AC in {subject} left on",
        details={"wasted_kwh": 1.5},
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture
def state_db(tmp_path: Path) -> Path:
    """Alerts of several nights. Riverside is Europe/Berlin, UTC+1 in November."""
    path = tmp_path / "state" / "state.db"
    store = StateStore(path)
    store.commit_batch(
        ["evt-00000001", "evt-00000002", "evt-00000003"],
        [
            signal("A-204", utc(2026, 11, 17, 20, 0)),  # 21:00 local: the night of the 17th
            signal("A-101", utc(2026, 11, 19, 21, 0)),  # the night of the 19th
            signal("A-204", utc(2026, 11, 17, 22, 0), site="hillside"),  # another site
        ],
        {},
    )
    store.commit_batch(
        [],
        [
            signal("A-204", utc(2026, 11, 17, 23, 0), action=SignalAction.RESOLVE),
            signal("A-101", utc(2026, 11, 19, 23, 0), action=SignalAction.RESOLVE),
        ],
        {},
    )
    store.close()
    return path


def run_report(state_db: Path, out: Path, night: str = "2026-11-17") -> subprocess.CompletedProcess[str]:
    return warden(
        "report", "--state-db", state_db, "--site", CONFIG_DIR / "site.yaml", "--night", night, "--out", out
    )


def read_report(out: Path) -> tuple[list[dict[str, object]], list[dict[str, str]]]:
    alerts = json.loads((out / "alerts.json").read_text())
    with (out / "alerts.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return alerts, rows


def test_report_writes_the_nights_alerts(tmp_path: Path, state_db: Path) -> None:
    out = tmp_path / "report"
    result = run_report(state_db, out)
    assert result.returncode == 0, output(result)
    assert "1 alert written" in result.stderr  # singular (issue 14)

    alerts, rows = read_report(out)
    assert [(a["site"], a["rule"], a["subject"], a["state"]) for a in alerts] == [
        ("riverside", "ac_after_hours", "A-204", "resolved")
    ]
    assert alerts[0]["opened_at"] == "2026-11-17T20:00:00+00:00"
    assert alerts[0]["resolved_at"] == "2026-11-17T23:00:00+00:00"
    assert alerts[0]["message"] == "AC in A-204 left on"
    assert alerts[0]["details"] == {"wasted_kwh": 1.5}

    assert list(rows[0]) == ["id", "rule", "subject", "state", "severity", "opened_at", "resolved_at", "message"]
    assert [(r["subject"], r["state"], r["severity"], r["opened_at"], r["resolved_at"]) for r in rows] == [
        ("A-204", "resolved", "warning", "2026-11-17T20:00:00+00:00", "2026-11-17T23:00:00+00:00")
    ]
    # the other night's alert and the other site's alert are not in it
    assert "A-101" not in (out / "alerts.csv").read_text()
    assert "hillside" not in (out / "alerts.json").read_text()


def test_report_of_the_other_night(tmp_path: Path, state_db: Path) -> None:
    out = tmp_path / "report-19"
    result = run_report(state_db, out, night="2026-11-19")
    assert result.returncode == 0, output(result)
    alerts, rows = read_report(out)
    assert [(a["subject"], a["state"]) for a in alerts] == [("A-101", "resolved")]
    assert rows[0]["resolved_at"] == "2026-11-19T23:00:00+00:00"


def test_report_includes_an_alert_still_open_from_an_earlier_night(tmp_path: Path, state_db: Path) -> None:
    store = StateStore(state_db)
    store.commit_batch([], [signal("A-GATE", utc(2026, 11, 16, 20, 0))], {})
    store.close()
    out = tmp_path / "report"
    assert run_report(state_db, out).returncode == 0
    alerts, _ = read_report(out)
    assert sorted((a["subject"], a["state"]) for a in alerts) == [("A-204", "resolved"), ("A-GATE", "open")]


def test_report_of_a_quiet_night(tmp_path: Path, state_db: Path) -> None:
    out = tmp_path / "quiet"
    result = run_report(state_db, out, night="2026-11-10")
    assert result.returncode == 0, output(result)
    alerts, rows = read_report(out)
    assert alerts == [] and rows == []


def test_report_night_bounds_are_local_time(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.commit_batch(
        [],
        [
            signal("A-101", utc(2026, 11, 18, 7, 30)),  # 08:30 local on the 18th: after the night
            signal("A-GATE", utc(2026, 11, 17, 16, 0)),  # 17:00 local, resolved 18:30 local: overlaps
        ],
        {},
    )
    store.commit_batch([], [signal("A-GATE", utc(2026, 11, 17, 17, 30), action=SignalAction.RESOLVE)], {})
    store.close()
    out = tmp_path / "report"
    result = run_report(path, out)
    assert result.returncode == 0, output(result)
    alerts, _ = read_report(out)
    assert [a["subject"] for a in alerts] == ["A-GATE"]


@pytest.mark.parametrize("night", ["17/11/2026", "2026-13-01", "tonight"])
def test_report_with_a_bad_night(tmp_path: Path, state_db: Path, night: str) -> None:
    out = tmp_path / "report"
    result = run_report(state_db, out, night=night)
    assert result.returncode == 2, output(result)
    assert f"--night: expected a date like 2026-11-17, got {night!r}" in result.stderr
    assert "Traceback" not in output(result)
    assert not out.exists()


def test_report_with_a_missing_state_db(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    result = run_report(missing, tmp_path / "report")
    assert result.returncode == 2, output(result)
    assert "--state-db" in result.stderr and "does not exist" in result.stderr
    assert not missing.exists()  # not created as an empty database either
    assert "Traceback" not in output(result)


def test_report_with_a_bad_site_file(tmp_path: Path, state_db: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("id: riverside\n")
    result = warden("report", "--state-db", state_db, "--site", site, "--night", "2026-11-17")
    assert result.returncode == 2, output(result)
    assert f"{site}: timezone: required key is missing" in result.stderr
    assert "Traceback" not in output(result)


def test_report_writes_the_morning_report_files(tmp_path: Path, state_db: Path) -> None:
    out = tmp_path / "report"
    assert run_report(state_db, out).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["alerts.csv", "alerts.json", "energy.svg", "report.csv", "report.html", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["energy_kwh"] == 1.5  # the A-204 alert's wasted_kwh
    assert "Morning report" in (out / "report.html").read_text()


def test_report_from_the_gateway_config(tmp_path: Path) -> None:
    """--config gives the state DB, the historian, the site and the patrol routes."""
    from tests.api.night import NIGHT, run_night

    night = run_night(tmp_path / "gateway")
    out = tmp_path / "report"
    result = warden("report", "--config", night.gateway_file, "--night", NIGHT, "--out", out)
    assert result.returncode == 0, output(result)
    # issue 16: litres lost is the leak alert's own figure, since the leak began: 1.0 L/min x
    # 840 min (18:00-08:00) = 840 L (was 180 L, the quiet window alone)
    assert "1.60 kWh wasted (0.51 EUR), 840 L of water lost, 2 checkpoints missed, 2 door incidents, 1 silent devices" in result.stderr
    summary = json.loads((out / "report.json").read_text())["summary"]
    assert (summary["rounds_done"], summary["rounds_scheduled"], summary["checkpoints_late"]) == (1, 3, 1)
    with (out / "report.csv").open(newline="") as handle:
        assert any(row["metric"] == "missed_checkpoint" and row["value"] == "cp-yard" for row in csv.DictReader(handle))


def test_report_needs_a_state_db_or_a_config(tmp_path: Path) -> None:
    result = warden("report", "--site", CONFIG_DIR / "site.yaml", "--night", "2026-11-17", "--out", tmp_path / "r")
    assert result.returncode == 2, output(result)
    assert "--state-db: required (or give --config)" in result.stderr
    result = warden("report", "--night", "2026-11-17")
    assert result.returncode == 2 and "--site: required (or give --config)" in result.stderr


def test_token_prints_a_secret_and_the_config_entry_with_its_hash() -> None:
    import hashlib

    import yaml

    from gateway.config import ApiToken

    result = warden("token", "--name", "facilities-desk", "--role", "maintenance")
    assert result.returncode == 0, output(result)
    *entry_lines, secret = result.stdout.strip().splitlines()
    [entry] = yaml.safe_load("\n".join(entry_lines))
    assert secret.startswith("wdn_") and len(secret) > 40
    assert entry == {"name": "facilities-desk", "role": "maintenance", "sha256": hashlib.sha256(secret.encode()).hexdigest()}
    ApiToken.model_validate(entry)
    assert secret not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "janitor"], "--role: expected one of guard, maintenance, manager, admin, got 'janitor'"),
    (["--role", "guard"], "--guard: a guard token needs the guard's badge id"),
])
def test_token_with_bad_options(args: list[str], message: str) -> None:
    result = warden("token", "--name", "x", *args)
    assert result.returncode == 2, output(result)
    assert message in result.stderr and "wdn_" not in result.stdout
