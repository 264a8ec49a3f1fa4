"""`warden simulate` outlives its broker (issue 17, item 12): killed in the middle of the
night (SIGKILL, as a crash) and started again, the drill waits for it and plays to the end,
as the agent does, instead of dying with "Message publish failed"."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

from simulators.broker import MosquittoBroker
from tests.support.scripts import console_script
from tests.support.wait import wait_for
from warden.clock import FileClock


def test_a_killed_broker_is_waited_for_and_the_night_plays_to_the_end(private_mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    clock_file = tmp_path / "night.clock"
    # normal-night runs 16:00 to 08:00 (16 h); at 4000x that is 14.4 s of real time.
    simulate = subprocess.Popen(
        [console_script("warden"), "simulate", "--scenario", "normal-night", "--speed", "4000", "--seed", "3",
         "--broker", f"{private_mosquitto.host}:{private_mosquitto.port}", "--sim-clock", str(clock_file),
         "--agent-config-out", str(tmp_path / "agent.yaml"), "--out", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        def night_at(hour: int, day: int = 17) -> bool:
            moment = datetime(2026, 11, day, hour, 0, tzinfo=timezone.utc)
            return clock_file.exists() and FileClock(clock_file).now() >= moment

        wait_for(lambda: night_at(18), timeout=30, what="the night to reach 18:00 UTC")
        assert private_mosquitto._process is not None
        private_mosquitto._process.kill()  # SIGKILL: the broker crashes
        private_mosquitto._process.wait(timeout=10)
        private_mosquitto._process = None
        # An hour of the night without a broker: its five MQTT meters publish each minute.
        wait_for(lambda: night_at(19) or simulate.poll() is not None, timeout=30, what="the night to reach 19:00 UTC")
        assert simulate.poll() is None, f"simulate died with the broker:\n{simulate.stderr.read() if simulate.stderr else ''}"
        private_mosquitto.start()
        _, stderr = simulate.communicate(timeout=120)
    finally:
        if simulate.poll() is None:
            simulate.kill()
            simulate.wait(timeout=10)
    assert simulate.returncode == 0, stderr
    assert "Traceback" not in stderr and "published" in stderr, stderr
    assert (tmp_path / "out" / "ground-truth.json").exists()
