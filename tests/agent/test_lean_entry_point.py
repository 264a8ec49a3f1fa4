"""`warden-agent` and `python -m agent`: `warden agent` without typer and rich, for small
boards (agent/main.py). Run for real in subprocesses; the agent against a broker is in
test_agent_process.py."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.agent_process import warden_agent_command, warden_command

ROOT = Path(__file__).resolve().parents[2]
#: The `warden` command's libraries, and the gateway's: none of them is the agent's business.
NOT_IN_AN_AGENT = ("typer", "rich", "click", "gateway", "rules", "simulators", "fastapi", "uvicorn", "matplotlib")

BAD_BAUDRATE = (
    "id: agent-a\nsite: riverside\ndevices:\n"
    "  - driver: patrol_line\n    id: patrol-reader-1\n    port: /dev/ttyUSB0\n    baudrate: fast\n"
)


def run(command: list[str], *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # As tests/test_cli.py: wide columns and no colours, so rich's output of `warden agent`
    # can be compared with the lean command's.
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


LEAN_COMMANDS = {"warden-agent": warden_agent_command(), "python -m agent": [sys.executable, "-m", "agent"]}


@pytest.fixture(params=list(LEAN_COMMANDS))
def lean(request: pytest.FixtureRequest) -> list[str]:
    return LEAN_COMMANDS[request.param]


def test_the_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["warden-agent"].partition(":")
    assert getattr(importlib.import_module(module), function) is importlib.import_module("agent.main").main


def test_the_agent_imports_neither_typer_nor_rich() -> None:
    """Everything the lean command and a running agent import, every driver included."""
    code = (
        "import json, sys, pkgutil, importlib\n"
        "import agent.main, agent.runner, agent.drivers, warden.clock, agent.drivers.modbus_maps\n"
        "for m in pkgutil.iter_modules(agent.drivers.__path__): importlib.import_module('agent.drivers.' + m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout)
    assert "agent.drivers.modbus_rtu" in modules and "agent.runner" in modules  # the check saw them all
    assert [m for m in modules if m.split(".")[0] in NOT_IN_AN_AGENT] == []


def test_help_shows_the_options_of_warden_agent(lean: list[str]) -> None:
    result = run(lean, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--config", "-c", "--log-level", "--sim-clock", "never production"):
        assert option in result.stdout


def test_a_bad_config_is_the_precise_message_and_status_2(lean: list[str], tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(BAD_BAUDRATE)
    result = run(lean, "--config", config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {config}: devices[0].baudrate: expected a valid integer")
    assert "got 'fast'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("files", "options"),
    [
        ({"agent.yaml": BAD_BAUDRATE}, ["-c", "agent.yaml"]),
        ({"agent.yaml": "id: agent-a\nsite: riverside\ndevices: []\n"}, ["-c", "agent.yaml"]),
        ({"agent.yaml": "devices: [\n"}, ["-c", "agent.yaml"]),
        ({}, ["--config", "missing.yaml"]),
        ({}, ["--config", str(ROOT / "config" / "agent.yaml"), "--sim-clock", "night.clock"]),
    ],
    ids=["bad-value", "no-devices", "bad-yaml", "missing-file", "missing-sim-clock"],
)
def test_errors_are_those_of_warden_agent(files: dict[str, str], options: list[str], tmp_path: Path) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    lean = run(warden_agent_command(), *options, cwd=tmp_path)
    typer = run([*warden_command(), "agent"], *options, cwd=tmp_path)
    assert (lean.returncode, lean.stderr) == (typer.returncode, typer.stderr)
    assert lean.returncode == 2 and lean.stderr.startswith("error: ")


def test_a_missing_config_option_is_a_usage_error(lean: list[str]) -> None:
    result = run(lean)
    assert result.returncode == 2
    assert "--config" in result.stderr and "Traceback" not in result.stderr
