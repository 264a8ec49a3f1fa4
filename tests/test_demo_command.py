"""`warden demo`, the installed command, as a newcomer runs it: its output is quiet (no
library noise, the injected line noise summarised), its progress shows the simulated
clock moving, and `--keep-running` leaves a dashboard to look at."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import httpx

from tests.support.scripts import console_script
from warden.process import terminate

SPEED = 20_000  # a 16 h night in about 3 s of simulation
#: What school-night.yaml's incidents cause, read off docs/rules.md (the reasoning is in
#: the scenario file): the AC left on in A-204, wm-b leaking through the 02:00-05:00
#: window, cp-a-204 skipped on the 02:00 round of Wed 18 Nov, door-back forced at 01:30.
SCHOOL_NIGHT = {
    ("ac_after_hours", "A-204"),
    ("water_night_flow", "wm-b"),
    ("patrol_checkpoint", "night-round:2026-11-18T02:00:cp-a-204"),
    ("door_forced", "door-back"),
}
PLAIN = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
CLOCK = re.compile(r"(\d\d:\d\d) · (\d+h(?:\d\dm)?) of 16h")


def test_the_default_demo_is_quiet_and_shows_the_simulated_clock_moving(tmp_path: Path) -> None:
    done = subprocess.run(
        [console_script("warden"), "demo", "--out", str(tmp_path), "--speed", str(SPEED)],
        capture_output=True, text=True, timeout=240, env=PLAIN,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    noisy = [line for line in output.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
    assert noisy == [], output
    # Not a tty: one progress line per tenth of the night, each with the site's clock.
    # 16 h from 16:00, so a tenth is 1h36m: 16:00, 17:36 ... the clocks must differ.
    times = {match.group(1) for match in CLOCK.finditer(done.stderr)}
    assert len(times) >= 5 and "16:00" in times, done.stderr
    assert done.stderr.startswith("school-night:"), done.stderr  # the default night
    # The scenario injects line noise on the patrol reader (faults: every 25 min): counted, summarised once.
    assert re.search(r"The agent dropped and counted \d+ garbled device messages.*patrol-reader-1", done.stderr), done.stderr
    # ... and it prints the night's alerts, judged against the ground truth (the README's promise)
    assert "ac_after_hours" in done.stdout and "A-204" in done.stdout
    assert "match the ground truth" in done.stderr
    assert json.loads((tmp_path / "ground-truth-check.json").read_text())["ok"] is True


def test_keep_running_serves_the_dashboard_until_sigterm(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [console_script("warden"), "demo", "--keep-running", "--out", str(tmp_path), "--speed", str(SPEED)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=PLAIN,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert demo.stderr is not None
        for line in demo.stderr:
            lines.append(line)
            if line.startswith("token"):
                ready.set()
        ready.set()  # exited: let the test fail with the output

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(240) and demo.poll() is None, "".join(lines)
        [url] = [line.split(": ", 1)[1].strip() for line in lines if line.startswith("dashboard: ")]
        [token] = [line.rsplit(": ", 1)[1].strip() for line in lines if line.startswith("token")]
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url.rstrip('/')}/api/me", headers=auth, timeout=30).json()["role"] == "admin"
        alerts = httpx.get(f"{url.rstrip('/')}/api/alerts", headers=auth, params={"limit": 100}, timeout=30).json()
        # The night's alerts are served (the exact set is the ground-truth check's business:
        # tests/test_end_to_end.py runs the default demo and wants "match the ground truth").
        assert SCHOOL_NIGHT <= {(a["rule"], a["subject"]) for a in alerts}
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0, "".join(lines)
    finally:
        terminate(demo, timeout=30)
        reader.join(timeout=10)
