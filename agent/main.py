"""Starting and stopping an edge agent process, and its own lean command.

`run_agent` is the one start-up of an agent process; `warden agent` (cli/main.py) and
`warden-agent` / `python -m agent` (`main` below) both call it. `warden-agent` parses
the same options with argparse instead of typer, and so never imports typer or rich,
which the `warden` command needs for its other subcommands: on a small board that is
memory the agent would carry for its whole life (docs/benchmarks.md). Keep this module,
and everything the running agent imports, free of typer, rich and gateway code;
tests/agent/test_lean_entry_point.py checks it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from agent.config import AgentConfig
from warden.config import ConfigError, load_config
from warden.logs import configure_logging
from warden.process import clock_from, stop_on_signal

SIM_CLOCK_HELP = (
    "For simulated nights and drills only, never production: take the time from this "
    "simulated clock file (written by `warden simulate --sim-clock`) instead of the system clock"
)


def run_agent(config: Path, log_level: str = "INFO", sim_clock: Path | None = None) -> None:
    """Run an agent until SIGTERM or SIGINT, then stop it cleanly (docs/agent.md#shutdown).

    Raises ConfigError, before anything is started, if the config file or the
    `sim_clock` file cannot be used; the message names the file, the key and what was
    expected. Callers print it and exit with status 2.
    """
    stop = stop_on_signal()
    configure_logging(log_level)
    agent_config = load_config(config, AgentConfig)
    clock = clock_from(sim_clock)
    from agent.runner import Agent  # after the config: a bad file is reported without paho's import

    running = Agent(agent_config, clock)
    running.start()
    stop.wait()
    running.stop()


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """`warden-agent`: the same options as `warden agent`, for small boards."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run an edge agent: read the configured devices and forward their events. "
        "The same as `warden agent`, with less memory.",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, metavar="FILE", help="Agent config file (YAML or TOML)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    parser.add_argument("--sim-clock", type=Path, default=None, metavar="FILE", help=SIM_CLOCK_HELP)
    args = parser.parse_args(argv)
    try:
        run_agent(args.config, args.log_level, args.sim_clock)
    except ConfigError as exc:  # a message and exit status 2, never a traceback, as `warden agent`
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
