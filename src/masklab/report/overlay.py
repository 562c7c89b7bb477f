"""Blend class masks over images with the class table's colours."""

from __future__ import annotations

import numpy as np

IGNORE_COLOR = (128, 128, 128)


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, palette: np.ndarray, ignore_index: int, alpha: float = 0.45,
    skip_background: bool = True,
) -> np.ndarray:
    """Blend ``mask`` (H, W) class ids over ``image`` (H, W, 3) uint8 with ``palette`` (C, 3) uint8.

    Class 0 is left unpainted when ``skip_background``; ignore pixels are grey. Returns (H, W, 3) uint8.
    """
    colours = np.zeros((256, 3), np.uint8)
    colours[: len(palette)] = palette
    colours[ignore_index % 256] = IGNORE_COLOR
    painted = mask != 0 if skip_background else np.ones(mask.shape, bool)
    out = image.astype(np.float32)
    out[painted] = (1 - alpha) * out[painted] + alpha * colours[mask[painted]]
    return out.round().astype(np.uint8)
