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


def distinct_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint8 colours that neighbouring indices tell apart (hues a golden-ratio step apart)."""
    import colorsys

    hues = (seed * 0.137 + np.arange(n) * 0.618033988749895) % 1.0
    rgb = [[round(255 * v) for v in colorsys.hsv_to_rgb(h, 0.85, 0.95)] for h in hues]
    return np.array(rgb, np.uint8).reshape(-1, 3)


def object_outlines(masks: np.ndarray, width: int = 1) -> np.ndarray:
    """(K, H, W) bool: the rim of each (K, H, W) object mask, ``width`` px wide, inside the object."""
    import cv2

    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return np.stack([m & ~cv2.erode(m.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
                     for m in masks.astype(bool)]) if len(masks) else masks.astype(bool)


def overlay_objects(image: np.ndarray, masks: np.ndarray, colors: np.ndarray, alpha: float = 0.3,
                    outline: int = 1) -> np.ndarray:
    """Objects over ``image`` (H, W, 3) uint8: each (K, H, W) mask tinted with its colour ``colors`` (K, 3)
    at ``alpha`` and outlined in it (``outline`` px, opaque). Later objects are drawn over earlier ones."""
    out = image.astype(np.float32)
    rims = object_outlines(masks, outline) if outline else np.zeros_like(masks, bool)
    for mask, rim, color in zip(masks.astype(bool), rims, np.asarray(colors, np.float32)):
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        out[rim] = color
    return out.round().astype(np.uint8)
