"""Region queries: square patches of an image scored on their own, so a labeller draws only where the model is
unsure; the label cost is the patch's area in pixels of the original image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    """A patch (x0, y0, x1, y1), x1 / y1 exclusive, in the original image's pixels; its mean uncertainty."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    @property
    def cost_px(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)


def patch_regions(uncertainty: np.ndarray, width: int, height: int, patch: int) -> list[Region]:
    """The ``patch``-px grid of a (width x height) image (edge patches smaller), each scored by the mean of the
    (h, w) ``uncertainty`` map brought to the image's size (bilinear)."""
    if patch < 8:
        raise ValueError(f"patch={patch}: expected at least 8 px")
    full = cv2.resize(np.asarray(uncertainty, np.float32), (width, height), interpolation=cv2.INTER_LINEAR) \
        if uncertainty.shape != (height, width) else np.asarray(uncertainty, np.float32)
    integral = cv2.integral(full, sdepth=cv2.CV_64F)  # (H + 1, W + 1): block sums in O(1)
    out = []
    for y0 in range(0, height, patch):
        for x0 in range(0, width, patch):
            y1, x1 = min(y0 + patch, height), min(x0 + patch, width)
            total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
            out.append(Region(x0, y0, x1, y1, float(total / ((y1 - y0) * (x1 - x0)))))
    return out
