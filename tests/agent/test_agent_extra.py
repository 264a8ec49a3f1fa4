"""`pip install 'warden[agent]'` on a small board: the agent starts with the agent's
dependencies alone. A subprocess refuses to import what only the `gateway` extra
installs (FastAPI, matplotlib, ...) and still imports every agent module, validates an
agent config and runs `warden-agent`'s argument parsing."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings, normalised (PEP 503)."""
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group(0)).lower() for r in requirements}  # type: ignore[union-attr]


AGENT_DISTS = _names(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["agent"])
GATEWAY_ONLY = _names(PROJECT["optional-dependencies"]["gateway"]) - AGENT_DISTS


def _refused_modules() -> list[str]:
    """Top-level modules that the gateway-only distributions provide (fastapi, matplotlib,
    jinja2, ...), as the installed metadata says."""
    provided = importlib.metadata.packages_distributions()
    return sorted(module for module, dists in provided.items()
                  if any(re.sub(r"[-_.]+", "-", d).lower() in GATEWAY_ONLY for d in dists))  # fmt: skip


AGENT_YAML = """\
id: agent-a
site: riverside
devices:
  - {driver: patrol_line, id: patrol-reader-1, port: /dev/ttyUSB0}
  - driver: mqtt_json
    id: meter-1
    topic: meters/1
    fields: {w: {quantity: power, unit: W}}
"""

PROBE = """\
import importlib, importlib.abc, pkgutil, sys
REFUSED = set(sys.argv[1].split(","))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ImportError(f"refused: {name} is not in the agent extra")
        return None

sys.meta_path.insert(0, Refuse())
import agent.main, agent.runner, agent.drivers
for m in pkgutil.iter_modules(agent.drivers.__path__):
    importlib.import_module("agent.drivers." + m.name)
from pathlib import Path
from agent.config import AgentConfig
from warden.config import load_config
config = load_config(Path(sys.argv[2]), AgentConfig)
assert [d.id for d in config.devices] == ["patrol-reader-1", "meter-1"]
try:
    agent.main.main(["--help"], prog="warden-agent")
except SystemExit as done:
    assert done.code == 0
"""


def test_the_agent_extra_leaves_out_the_gateway_libraries() -> None:
    assert "agent" in PROJECT["optional-dependencies"]
    assert {"fastapi", "matplotlib", "uvicorn", "jinja2"} <= GATEWAY_ONLY
    assert {"paho-mqtt", "pyserial", "pymodbus", "pydantic", "pyyaml"} <= AGENT_DISTS


def test_warden_agent_starts_without_the_gateway_libraries(tmp_path: Path) -> None:
    refused = _refused_modules()
    assert {"fastapi", "matplotlib"} <= set(refused)  # the probe refuses what the brief names, at least
    config = tmp_path / "agent.yaml"
    config.write_text(AGENT_YAML)
    result = subprocess.run([sys.executable, "-c", PROBE, ",".join(refused), str(config)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
