"""Simulator speed and scaling: seconds to generate a 12-hour night of an N-device district,
from 100 to 10 000 devices. Baseline in the same run: encoding the same number of JSON
payloads of the same average size in a bare loop (the least any simulator must do).

    python -m bench.simulator [--sizes 5x20 50x40 ...]
"""

from __future__ import annotations

import argparse
import json
import time

from simulators.district import benchmark, parse_size


def bare_encoding_seconds(messages: int, average_bytes: int) -> float:
    filler = "x" * max(0, average_bytes - 60)
    started = time.perf_counter()
    for n in range(messages):
        json.dumps({"ts": "2026-11-17T19:00:00Z", "n": n, "power_w": 812.5, "pad": filler}).encode()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["5x20", "25x40", "50x40", "100x100"], help="buildings x rooms")
    args = parser.parse_args()
    print(f"{'devices':>8} {'messages':>10} {'events':>10} {'build s':>8} {'generate s':>11} {'total s':>8} {'bare s':>7} {'ratio':>6}")
    for size in args.sizes:
        result = benchmark(*parse_size(size))
        tally = result.tally
        bare = bare_encoding_seconds(tally.emissions, tally.bytes // max(1, tally.emissions))
        print(
            f"{result.devices:>8} {tally.emissions:>10} {tally.events:>10} {result.build_seconds:>8.1f} "
            f"{result.generate_seconds:>11.1f} {result.seconds:>8.1f} {bare:>7.1f} {result.seconds / bare:>6.1f}"
        )


if __name__ == "__main__":
    main()
