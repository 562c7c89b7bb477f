"""Peak memory of predicting one large image in tiles: an 8000 x 8000 image, a 12-class model (a 1x1 convolution:
what is measured is masklab's tiling, not a network's activations), tiles of 512 px with 64 px overlap, on CPU.

    python benchmarks/large_image_memory.py [--size 8000] [--classes 12]

Prints the process's peak resident memory before and after ``Predictor.classes`` and the size the full float32
logits would have. Goal (issue #30): under 2 GB for 8000 px and 12 classes, whose logits alone are 3.1 GB.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from torch import nn

from masklab.inference.engine import Predictor
from masklab.inference.rule import InputRule


class Pixelwise(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8000)
    p.add_argument("--classes", type=int, default=12)
    a = p.parse_args()
    image = np.random.default_rng(0).integers(0, 255, (a.size, a.size, 3), dtype=np.uint8)
    predictor = Predictor(Pixelwise(a.classes), InputRule("pad", multiple=32, tile=512, overlap=64), "cpu")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    started = time.perf_counter()
    classes = predictor.classes([image])[0]
    took = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    logits = a.size * a.size * a.classes * 4 / 2**20
    print(f"{a.size}x{a.size}, {a.classes} classes: class map {classes.shape} {classes.dtype} in {took:.1f} s; peak "
          f"resident memory {before:.0f} MB before (imports, image), {peak:.0f} MB after (+{peak - before:.0f} MB); "
          f"the full logits would be {logits:.0f} MB")


if __name__ == "__main__":
    main()
