"""Reading the instance objects of every sample: RLE strings decoded by pycocotools as `data check` vetted them
(what training does) against checking each string's runs with the Python parser first (every read did that before).

    python benchmarks/read_objects.py [--samples 200] [--size 256] [--objects 40] [--repeats 5]

Writes a synthetic instance dataset (the synth generator's shapes, one object per visible instance, stored as
compressed COCO RLE by DatasetWriter) under --workdir, then times read_objects over all samples both ways, in
alternation, and prints the best time of each and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from masklab.data.manifest import Dataset
from masklab.data.objects import read_objects
from masklab.data.synth import synth_class_table, synth_sample
from masklab.data.writer import DatasetWriter


def write_dataset(root: Path, samples: int, size: int, max_objects: int) -> Dataset:
    """``samples`` synthetic images of ``size`` px with up to ``max_objects`` shapes each, as RLE objects."""
    with DatasetWriter(root, synth_class_table(3), overwrite=True) as writer:
        for i in range(samples):
            image, mask, instances, classes = synth_sample(i, seed=0, num_shapes=3, size=size, max_objects=max_objects)
            objects = [{"class_id": c, "mask": instances == k} for k, c in sorted(classes.items())]
            writer.add(f"s{i:04d}", image, mask, "train", objects=objects)
        return writer.commit()


def read_all(dataset: Dataset, check: bool) -> int:
    """Read the objects of every sample; returns how many objects were read."""
    return sum(len(read_objects(dataset.root, s, check=check)) for s in dataset.samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--objects", type=int, default=40, help="most objects per image (synth max_objects)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        dataset = write_dataset(Path(tmp) / "objects_bench", args.samples, args.size, args.objects)
        n = read_all(dataset, check=False)
        first = dataset.samples[0]
        assert all(np.array_equal(a, b) for a, b in zip(read_objects(dataset.root, first).masks,
                                                        read_objects(dataset.root, first, check=True).masks))
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.repeats):
            for check in (True, False):
                start = time.perf_counter()
                assert read_all(dataset, check) == n
                best[check] = min(best[check], time.perf_counter() - start)
    print(f"{len(dataset.samples)} samples of {args.size}x{args.size} px, {n} objects "
          f"({n / len(dataset.samples):.1f} per sample); best of {args.repeats}:")
    print(f"  check every RLE string, then decode (before): {best[True]:.3f} s  "
          f"({best[True] / n * 1e6:.0f} us per object)")
    print(f"  decode with pycocotools only (now):           {best[False]:.3f} s  "
          f"({best[False] / n * 1e6:.0f} us per object)")
    print(f"  ratio before/now: {best[True] / best[False]:.1f}x")


if __name__ == "__main__":
    main()
