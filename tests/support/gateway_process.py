"""A real `warden gateway` in a subprocess, watched through its HTTP API."""

from __future__ import annotations

import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.agent_process import warden_command
from tests.support.wait import wait_for
from warden.process import terminate


class GatewayProcess:
    """Started on `config`; returns once it is connected to its broker (and its API answers)."""

    def __init__(self, config: Path, api_port: int, log: Path, *args: str, timeout: float = 30.0) -> None:
        self.api_port = api_port
        self.url = f"http://127.0.0.1:{api_port}"
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [*warden_command(), "gateway", "--config", str(config), "--log-level", "WARNING", *args],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip
        wait_for(lambda: self._alive() and bool(self.health().get("connected")), timeout=timeout, what="gateway connected")

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited with {self.process.returncode}; see {self._log.name}")
        return True

    def health(self) -> dict[str, Any]:
        """/api/health, or {} while it does not answer."""
        try:
            return dict(httpx.get(f"{self.url}/api/health", timeout=1).json())
        except (httpx.HTTPError, ValueError):
            return {}

    def last_tick(self) -> datetime | None:
        """The rule time the rules last reached (a tick), from /api/health."""
        tick = self.health().get("last_tick")
        return datetime.fromisoformat(tick) if tick else None

    def alerts(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/api/alerts", params={"limit": 5000}, timeout=10).raise_for_status().json())

    def alert(self, alert_id: int) -> dict[str, Any]:
        """One alert with its history."""
        return dict(httpx.get(f"{self.url}/api/alerts/{alert_id}", timeout=10).raise_for_status().json())

    def freeze(self) -> None:
        """SIGSTOP: a hung gateway; the broker's deliveries pile up unacknowledged in its socket."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> int:
        """SIGKILL: nothing is flushed or acknowledged, as a power cut."""
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def stop(self) -> None:
        terminate(self.process, timeout=15)
        self._log.close()
