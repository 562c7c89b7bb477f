"""Tiled prediction of large images: Gaussian-blended tiles handed out in bands, so the class map of an image far
larger than memory would hold as full-resolution logits comes out with memory bounded by the tile."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import torch
from torch import nn

from masklab.inference.engine import Predictor, blend_window
from masklab.inference.rule import InputRule


class Pixelwise(nn.Module):
    """A 1x1 convolution: each pixel's logits depend on that pixel alone, so tiles must equal the whole image."""

    def __init__(self, classes: int = 12):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255.0)


def test_banded_classes_equal_the_whole_image_and_the_bands_cover_each_row_once():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (900, 700, 3), dtype=np.uint8)
    model = Pixelwise()
    tiled = Predictor(model, InputRule("pad", multiple=32, tile=256, overlap=48), "cpu")
    whole = Predictor(model, InputRule("pad", multiple=32, tile=None), "cpu")
    assert np.array_equal(tiled.classes([image])[0], whole.classes([image])[0])
    # (each band is a view of the running sums, valid until the next is asked for: kept as copies here)
    bands = [(s, b.clone()) for s, b in tiled.tiled_bands(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous())]
    starts = [s for s, _ in bands]
    assert starts == sorted(starts) and starts[0] == 0
    assert sum(b.shape[1] for _, b in bands) == 900 and all(b.shape[2] == 700 for _, b in bands)
    assert all(s + b.shape[1] == n for (s, b), (n, _) in zip(bands, bands[1:]))  # contiguous, no row twice
    assert torch.allclose(tiled.logits([image])[0], whole.logits([image])[0], atol=1e-5)


def test_the_blend_window_weighs_a_tiles_centre_most_and_never_zero():
    w = blend_window(64, 96, 64, torch.device("cpu"))
    assert w.shape == (64, 96) and float(w.min()) >= 1e-3 and float(w.max()) <= 1.0
    assert float(w[32, 48]) > float(w[32, 0]) and float(w[32, 48]) > float(w[0, 48])


def test_a_large_image_needs_far_less_memory_than_its_logits():
    """A 4000 x 4000 image with 12 classes: its full logits would be 732 MB of float32; the class map comes out with
    the process's peak memory (measured in a fresh process) growing by less than half of that (248 MB measured).
    The 8000 px figure: benchmarks/large_image_memory.py."""
    script = textwrap.dedent("""
        import resource, sys, numpy as np, torch
        sys.path.insert(0, sys.argv[1])
        from test_tiling import Pixelwise
        from masklab.inference.engine import Predictor
        from masklab.inference.rule import InputRule
        image = np.random.default_rng(0).integers(0, 255, (4000, 4000, 3), dtype=np.uint8)
        predictor = Predictor(Pixelwise(12), InputRule("pad", multiple=32, tile=512, overlap=64), "cpu")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        classes = predictor.classes([image])[0]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(classes.shape[0], classes.shape[1], classes.dtype, before // 1024, peak // 1024)
    """)
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    h, w, dtype, before_mb, peak_mb = done.stdout.split()
    assert (h, w, dtype) == ("4000", "4000", "uint8")
    logits_mb = 4000 * 4000 * 12 * 4 / 2**20
    assert int(peak_mb) - int(before_mb) < logits_mb / 2, done.stdout  # (megabytes)
