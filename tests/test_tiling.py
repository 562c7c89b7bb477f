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


class RimNet(nn.Module):
    """A bottom-up "network" with a 3x3 receptive field (zero-padded at each tile's edge, like a real one): logits
    (background, interior, boundary) are the blue, red and green channels, smoothed."""

    postprocess = {"min_area": 5}

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            for out, source in ((0, 2), (1, 0), (2, 1)):
                self.conv.weight[out, source] = 1.0 / 9
        self.conv.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255.0) * 8.0


def discs(size: int, centres: list[tuple[int, int]], radius: int) -> np.ndarray:
    """Blue background; each disc a red interior inside a green rim 2 px wide."""
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 2] = 255
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx in centres:
        d = np.hypot(yy - cy, xx - cx)
        image[d <= radius] = (0, 255, 0)
        image[d <= radius - 2] = (255, 0, 0)
    return image


def test_objects_across_tile_seams_come_out_whole():
    """Bottom-up instances are split from the stitched (blended) logits of the whole image, not per tile: discs
    centred on the seams of 64 px tiles come out as one object each, the same objects as predicting the image
    whole."""
    from masklab.tasks import get_task

    # tiles start at 0, 48, 96, 136 (step 48, the last flush with the edge): seams at 48/64, 96/112, 136/144
    centres = [(56, 56), (56, 104), (104, 56), (104, 140), (150, 100), (20, 150)]
    image = discs(200, centres, radius=14)
    task = get_task("instance")
    tiled = task.predict(Predictor(RimNet(), InputRule("pad", multiple=8, tile=64, overlap=16), "cpu"), [image])[0]
    whole = task.predict(Predictor(RimNet(), InputRule("pad", multiple=8, tile=None), "cpu"), [image])[0]
    assert len(whole.masks) == len(tiled.masks) == len(centres)
    for mask in tiled.masks:
        iou = max((mask & other).sum() / (mask | other).sum() for other in whole.masks)
        assert iou > 0.95
