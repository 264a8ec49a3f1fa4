"""Run every benchmark and print its table: `python -m bench` (each also runs alone).

The machine and the figures go into docs/benchmarks.md; each figure is a ratio against a
baseline measured in the same run, because these machines are shared and noisy.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

BENCHMARKS = [
    ("gateway ingest", ["bench.ingest", "--messages", "20000"]),
    ("alert latency", ["bench.latency", "--triggers", "200", "--load", "5000"]),
    ("burst latency, TCP_NODELAY vs Nagle", ["bench.burst"]),
    ("historian", ["bench.historian", "--points", "100000"]),
    ("agent footprint", ["bench.agent_footprint", "--devices", "200", "--seconds", "20"]),
    ("end-to-end acknowledgement: gateway ingest, acks on vs off", ["bench.ingest", "--ack-cost", "--messages", "20000", "--batch", "1"]),
    ("end-to-end acknowledgement: batched ingest, acks on vs off", ["bench.ingest", "--ack-cost", "--messages", "3000", "--batch", "100", "--devices", "100"]),
    ("end-to-end acknowledgement: agent footprint, acks on vs off", ["bench.agent_footprint", "--ack-cost", "--devices", "200", "--seconds", "20"]),
    ("simulator speed and scaling", ["bench.simulator"]),
    ("statistics: bytes per reading, reports, ingest cost", ["bench.statistics"]),
    ("the cross-site overview, 50 sites", ["bench.overview"]),
    ("scaling: gateway ingest, 100 to 10 000 devices", ["bench.ingest", "--batch", "100", "--devices", "100", "1000", "10000"]),
    ("scaling: agent footprint, 50 devices", ["bench.agent_footprint", "--devices", "50", "--seconds", "20"]),
    ("scaling: agent footprint, 500 devices", ["bench.agent_footprint", "--devices", "500", "--seconds", "20"]),
    ("restart: 10 000 devices' rule state, snapshot and journal at their limits", ["bench.restart", "--devices", "10000"]),
    ("catch-up: an hour of 10 000 devices drained while live data flows", ["bench.catch_up"]),
    ("district: 50 sites x 6 devices, edge brokers, 2 partitions + standbys, SQLite vs PostgreSQL", ["bench.district", "--devices", "6"]),
]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {memory_gb:.0f} GiB, Python {platform.python_version()}"


def main() -> None:
    print(f"machine: {machine()}\n")
    for title, module in BENCHMARKS:
        print(f"== {title}: python -m {' '.join(module)}")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", *module], check=False)
        print(f"({time.perf_counter() - started:.0f} s, exit {done.returncode})\n", flush=True)


if __name__ == "__main__":
    main()
