"""`warden district`, the installed command: a small district end to end (edge Mosquittos
bridged to a central one, two gateway partitions) prints each site's alerts and its
verdict, and exits non-zero when a site differs from its ground truth."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import simulators.sites
from cli.main import app
from simulators.sites import SHORT_HOURS, SHORT_START_UTC, district_sites
from tests.simulators.test_sites import hand_truth, partition_by_hand
from tests.support.scripts import console_script

PLAIN = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
LINE = re.compile(r"^(school-\d\d) \(([^,]+), partition (\d)\): (\d+) alerts, (\d+) expected, (matches|DIFFERS[^;]*); found: (.*)$")
#: 4 schools x 10 devices on the 4.5-hour night: a few seconds.
SIZE = ["--sites", "4", "--devices", "10", "--short"]


def verdicts(stdout: str) -> dict[str, tuple[str, int, str, set[tuple[str, str]]]]:
    """site -> (zone, partition, verdict, alerts found) from the printed lines."""
    out = {}
    for line in stdout.splitlines():
        if m := LINE.match(line):
            found = {tuple(item.split(" ", 1)) for item in m.group(7).split(", ")} if m.group(7) != "none" else set()
            out[m.group(1)] = (m.group(2), int(m.group(3)), m.group(6), found)
    return out


def test_a_small_district_finds_every_sites_own_alerts(tmp_path: Path) -> None:
    done = subprocess.run(
        [console_script("warden"), "district", *SIZE, "--out", str(tmp_path), "--json", str(tmp_path / "result.json")],
        capture_output=True, text=True, timeout=180, env=PLAIN,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    printed = verdicts(done.stdout)
    # The same district, generated here: its incidents, and by hand what they page.
    sites = district_sites(4, 10, start=SHORT_START_UTC, hours=SHORT_HOURS).sites
    assert set(printed) == {"school-00", "school-01", "school-02", "school-03"}
    for scenario in sites:
        sid = scenario.site.id
        zone, partition, verdict, found = printed[sid]
        assert (zone, partition, verdict) == (scenario.site.timezone, partition_by_hand(sid, 2), "matches")
        assert found == hand_truth(scenario), sid
    assert {zone for zone, *_ in printed.values()} == {"Asia/Shanghai", "Asia/Tokyo", "Australia/Eucla"}
    assert "every site matches its ground truth" in done.stdout
    figures = json.loads((tmp_path / "result.json").read_text())["runs"][0]
    # 4 sites x 10 devices report every minute for 4.5 h: thousands of readings, all stored
    assert figures["readings"] > 4 * 10 * 4 * 60 and figures["ok"] is True
    assert len(figures["latencies_ms"]) == 4 * 5  # five alerts a site, each announced once


def test_a_site_that_differs_from_its_truth_fails_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The truth written for the run names one alert no incident causes: the command says
    which site differs and exits 1."""
    real = simulators.sites.truth

    def with_a_phantom(scenario: object, seed: int) -> dict[str, object]:
        document = real(scenario, seed)  # type: ignore[arg-type]
        if document["site"] == "school-02":
            document["expected_alerts"].append({"rule": "door_forced", "subject": "door-nowhere", "incident": "phantom",
                                                "values": {}, "tolerance": 0.2, "borderline": False})  # fmt: skip
        return document

    monkeypatch.setattr(simulators.sites, "truth", with_a_phantom)
    result = CliRunner().invoke(app, ["district", *SIZE, "--out", str(tmp_path)], env=PLAIN)
    assert result.exit_code == 1, result.output
    printed = verdicts(result.stdout)
    assert printed["school-02"][2].startswith("DIFFERS: missing [('door_forced', 'door-nowhere')]")
    assert {site: v[2] for site, v in printed.items() if site != "school-02"} == dict.fromkeys(["school-00", "school-01", "school-03"], "matches")
