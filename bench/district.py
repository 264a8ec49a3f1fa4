"""A district end to end (issue 21): S sites x D devices, each campus publishing to an
edge Mosquitto bridged to a central one, two gateway partitions; readings/s, alert
latency p99, and what PostgreSQL state costs over SQLite, both played in the same run.

    python -m bench.district [--sites 50] [--devices 200] [--partitions 2] [--edges 8] [--sqlite-only]

The night (the 4.5-hour one of simulators/sites.py, every incident of every zone inside
it) is generated once and played twice by `warden district --compare` (cli/district.py):
state in SQLite, then in PostgreSQL (a throwaway cluster), on fresh brokers and files
each time. The run fails (exit 1) unless every site's alerts equal its ground truth.
Readings/s is every event stored over the time from the first publish to the last tick;
alert latency is from the publish of an alert's triggering event (or the start of the
tick that opened it) to its announcement, while the night's events stream in.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: The installed `warden` console script beside this Python (bench may not import cli/).
WARDEN = [shutil.which("warden", path=str(Path(sys.executable).parent)) or "warden"]


def run(sites: int, devices: int, partitions: int, edges: int, compare: bool, out: Path) -> tuple[int, dict]:
    command = [*WARDEN, "district", "--sites", str(sites), "--devices", str(devices), "--partitions", str(partitions),
               "--edges", str(edges), "--short", "--out", str(out), "--json", str(out / "figures.json")]  # fmt: skip
    done = subprocess.run([*command, "--compare"] if compare else command, check=False, capture_output=True, text=True)
    if not (out / "figures.json").exists():
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"warden district failed (exit {done.returncode})")
    return done.returncode, json.loads((out / "figures.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--devices", type=int, default=200, help="per site")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--edges", type=int, default=8, help="edge Mosquittos the campuses share")
    parser.add_argument("--sqlite-only", action="store_true", help="skip the PostgreSQL run")
    parser.add_argument("--keep", type=Path, help="keep the installation, data, alerts and figures.json in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warden-bench-district-") as tmp:
        out = args.keep or Path(tmp)
        code, figures = run(args.sites, args.devices, args.partitions, args.edges, not args.sqlite_only, out)
    runs = figures["runs"]
    first = runs[0]
    print(f"{first['sites']} sites x {first['devices']} devices, {first['partitions']} partitions, {first['edges']} edge brokers; "
          f"night generated in {first['generate_seconds']:.0f} s (not timed)")  # fmt: skip
    print(f"{'state':<11} {'events':>9} {'seconds':>8} {'readings/s':>11} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'p99 ratio':>9} {'p99 event':>9} {'p99 tick':>8} {'alerts':>7} {'sites ok':>9} {'standbys':>8}")  # fmt: skip
    for result in runs:
        alerts = sum(len(v["found"]) for v in result["verdicts"])
        good = sum(v["ok"] for v in result["verdicts"])
        print(f"{result['state']:<11} {result['readings']:>9} {result['seconds']:>8.1f} {result['readings_per_s']:>11.0f} "
              f"{result['readings_per_s'] / first['readings_per_s']:>6.2f} {result['p50_ms']:>7.0f} {result['p99_ms']:>7.0f} "
              f"{result['p99_ms'] / max(first['p99_ms'], 1e-9):>9.2f} {result['p99_event_ms']:>9.0f} {result['p99_tick_ms']:>8.0f} "
              f"{alerts:>7} {good:>4}/{len(result['verdicts']):<4} {result['standbys']:>8}")  # fmt: skip
    if code != 0:
        raise SystemExit("some sites' alerts differ from their ground truth")


if __name__ == "__main__":
    main()
