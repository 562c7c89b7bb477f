"""Start-up time of `masklab --help` (must stay under 1.5 s) against a bare `python -c pass`.

    python benchmarks/cli_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    bare = timed([sys.executable, "-c", "pass"], a.repeats)
    masklab_help = timed([sys.executable, "-m", "masklab.cli", "--help"], a.repeats)
    compose = timed([sys.executable, "-m", "masklab.cli", "train", "--cfg", "job"], a.repeats)
    print(f"python -c pass:            {bare:.3f} s")
    print(f"masklab --help:            {masklab_help:.3f} s  ({masklab_help / bare:.2f}x bare python; limit 1.5 s)")
    print(f"masklab train --cfg job:   {compose:.3f} s  ({compose / bare:.2f}x bare python)")


if __name__ == "__main__":
    main()
