"""A real VictoriaMetrics for tests: it accepts InfluxDB line protocol on /api/v2/write,
so the Influx historian is tested against a real HTTP server, not a mock.

VictoriaMetrics names a series `<measurement>_<field>`, turns tags into labels, keeps
timestamps in milliseconds and stores string fields as the number 0.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from tests.support.scripts import find_program
from warden.process import terminate

#: Overrides where the binary is looked for, e.g. a downloaded release in CI.
BINARY_ENV = "WARDEN_VICTORIA_METRICS"

T = TypeVar("T")


def find_binary() -> Path | None:
    """$WARDEN_VICTORIA_METRICS, else `victoria-metrics` on PATH (Debian's package puts it in /usr/bin)."""
    return find_program(BINARY_ENV, "victoria-metrics")


def free_port() -> int:
    """A loopback port nothing listens on right now (also handy as an unreachable server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], T], what: str, timeout: float = 15.0, interval: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int


class VictoriaMetrics:
    """One victoria-metrics process on a loopback port; stop() and start() keep port and data."""

    def __init__(self, binary: Path, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.data_dir = workdir / "data"
        self.log_path = workdir / "victoria-metrics.log"
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        command = [
            str(self.binary),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",  # tests write fixed dates in the past
            "-search.latencyOffset=0s",  # recent samples are queryable at once
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._up, f"victoria-metrics on {self.url}/health", timeout)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- {self.log_path} ---\n{self._log_tail()}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate gracefully: victoria-metrics persists buffered samples on SIGTERM."""
        if self._process is None:
            return
        terminate(self._process, timeout)
        self._process = None

    def force_flush(self) -> None:
        """Make just-ingested samples visible to queries (they sit in memory for ~1 s)."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10).raise_for_status()

    def samples(self, match: str) -> list[Sample]:
        """Every stored sample of the series matching a selector, e.g. '{site="s1"}'."""
        self.force_flush()
        response = httpx.get(f"{self.url}/api/v1/export", params={"match[]": match}, timeout=10)
        response.raise_for_status()
        found = []
        for line in response.text.splitlines():
            if not line.strip():
                continue
            series = json.loads(line)
            labels = dict(series["metric"])
            name = labels.pop("__name__")
            for value, ts in zip(series["values"], series["timestamps"]):
                found.append(Sample(name, labels, float(value), int(ts)))
        return sorted(found, key=lambda s: (s.timestamp_ms, s.name, sorted(s.labels.items())))

    def wait_for_samples(self, match: str, count: int, timeout: float = 15.0) -> list[Sample]:
        """Poll until at least `count` samples match; a condition wait, not a guess of delay."""
        wait_until(lambda: len(self.samples(match)) >= count, f"{count} samples matching {match}", timeout)
        return self.samples(match)

    def _up(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"victoria-metrics exited with code {self._process.returncode}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
