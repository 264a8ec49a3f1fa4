"""A real agent process (`warden agent`, or the lean `warden-agent`), whose log lines a
test can wait for."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.support.scripts import console_script


def warden_command() -> list[str]:
    """The installed `warden` command of this environment (tests/support/scripts.py)."""
    return [console_script("warden")]


def warden_agent_command() -> list[str]:
    """The lean agent command, as small boards run it (agent/main.py)."""
    return [console_script("warden-agent")]


class AgentProcess:
    def __init__(self, config: Path, *args: str, command: Sequence[str] | None = None) -> None:
        """`args`: more options, e.g. "--sim-clock", path. `command`: what runs the agent,
        `warden agent` unless given (e.g. `warden_agent_command()`)."""
        command = [*warden_command(), "agent"] if command is None else list(command)
        self.process = subprocess.Popen(
            [*command, "--config", str(config), "--log-level", "INFO", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="agent-stderr", daemon=True)
        self._reader.start()

    def wait_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        """Block until `count` log lines contain `text` (or the process died)."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: sum(text in line for line in self.lines) >= count or self.process.poll() is not None, timeout
            )
            if not found or sum(text in line for line in self.lines) < count:
                raise AssertionError(f"agent never logged {text!r} ({count}x); its log:\n" + "".join(self.lines[-40:]))

    def kill(self) -> int:
        """SIGKILL: no handler runs, nothing is flushed, as a power cut or the OOM killer."""
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._reader.join(timeout=5)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()


def outbox_rows(path: Path) -> int:
    """Events in an agent's outbox file, read with a connection of our own."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=10)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def outbox_ids(path: Path) -> set[str]:
    """Ids of the events in an agent's outbox (queued, not yet acknowledged by the broker)."""
    if not path.exists():
        return set()
    db = sqlite3.connect(path, timeout=10)
    try:
        return {json.loads(body)["id"] for (body,) in db.execute("SELECT body FROM outbox")}
    finally:
        db.close()
