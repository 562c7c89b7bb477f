"""Time to write the HTML explorer, and its page weight, for N samples (the figure tests/test_explorer.py
does not time: a test asserts the page size only).

Four 96x80 noisy images with a ground-truth and a predicted mask are reused for every sample; the
per-sample table has the columns of a real 3-class evaluation.

    python benchmarks/explorer.py [--samples 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from masklab.data.classes import ClassInfo, ClassTable
from masklab.explore import ExplorerSample, write_explorer

CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "car", (230, 25, 75)),
                      ClassInfo(2, "road", (60, 180, 75))), 255)


def make_files(root: Path, name: str, seed: int, w: int = 96, h: int = 80) -> tuple[Path, Path, Path]:
    """A noisy gradient image (full-size thumbnails), its mask and a shifted prediction, as PNGs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 40 * seed % 256)], -1).astype(float)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    gt = np.zeros((h, w), np.uint8)
    gt[h // 2:, :] = 2
    gt[h // 4: h // 2, w // 4: w // 2] = 1
    pred = np.roll(gt, w // 10, axis=1)
    paths = (root / f"{name}.png", root / f"{name}_gt.png", root / f"{name}_pred.png")
    for arr, path in zip((image, gt, pred), paths):
        Image.fromarray(arr).save(path)
    return paths


def per_sample_table(ids: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = len(ids)
    cols: dict = {"id": ids}
    for name in ("mIoU", "mDice", "boundary_mIoU", "pixel_acc", "conf_mean_max_prob", "conf_mean_entropy",
                 "conf_low_fraction"):
        cols[name] = rng.random(n)
    for cls in CLASSES.names:
        for metric in ("iou", "dice", "boundary_iou"):
            cols[f"{metric}/{cls}"] = rng.random(n)
        for metric in ("tp", "fp", "fn", "true_area", "pred_area"):
            cols[f"{metric}/{cls}"] = rng.integers(0, 8000, n)
        for metric in ("missed", "hallucinated"):
            cols[f"{metric}/{cls}"] = rng.random(n) < 0.1
    return pd.DataFrame(cols)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = [make_files(root, f"f{k}", seed=k) for k in range(4)]
        samples = [ExplorerSample(f"val/{i:05d}", "val", *files[i % 4]) for i in range(a.samples)]
        table = per_sample_table([s.id for s in samples])
        times = []
        for r in range(a.rounds):
            start = time.perf_counter()
            index = write_explorer(root / f"out{r}", CLASSES, samples, table, {}, "benchmark", None)
            times.append(time.perf_counter() - start)
        size = index.stat().st_size
    print(f"explorer, {a.samples} samples: written in {statistics.median(times):.2f} s "
          f"(median of {a.rounds}); index.html {size / 1e6:.2f} MB, {size / a.samples:.0f} bytes per sample")


if __name__ == "__main__":
    main()
