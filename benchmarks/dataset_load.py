"""What the manifest path checks cost when a dataset is loaded (#26): `load_dataset` (every row's paths checked,
symlinks followed: one lstat per file, one realpath per folder) against reading the same manifest with the
lexical checks only (the baseline: what loading did before the symlink check), on a dataset of N tiny samples.

    python benchmarks/dataset_load.py [--samples 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from masklab.data import manifest
from masklab.data.classes import ClassTable
from masklab.data.manifest import load_dataset
from masklab.data.writer import DatasetWriter


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    table = ClassTable.from_dict({"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "a"}]})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        image, mask = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)
        with DatasetWriter(root, table) as w:
            for i in range(a.samples):
                w.add(f"s{i:06d}", image, mask, "train")
            w.commit()
        checked = median_seconds(lambda: load_dataset(root), a.repeats)
        real = manifest.LinkCheck
        manifest.LinkCheck = lambda r: None  # row_problems(row, None): the lexical checks alone
        try:
            lexical = median_seconds(lambda: load_dataset(root), a.repeats)
        finally:
            manifest.LinkCheck = real
    print(f"load_dataset, {a.samples} samples (2 files each), median of {a.repeats}:")
    print(f"  lexical path checks only: {lexical * 1000:.0f} ms")
    print(f"  with the symlink check:   {checked * 1000:.0f} ms  ({checked / lexical:.2f}x; "
          f"{(checked - lexical) / (2 * a.samples) * 1e6:.1f} us per file)")


if __name__ == "__main__":
    main()
