"""Pixels from disk: images, semantic masks, v1 instance-id maps, per-object PNGs, and the structural file check."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

# PIL modes that hold one value per pixel; anything else is not a per-object mask.
_SINGLE_CHANNEL = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I")
# A PNG's last chunk: length 0, type IEND, and the CRC of that type (the same in every PNG).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# Where the end chunk is looked for: some tools append bytes after it, never this many.
_PNG_TAIL = 1 << 16


@contextmanager
def strict_image_loading() -> Iterator[None]:
    """Truncated images fail (Pillow's global LOAD_TRUNCATED_IMAGES off) and Pillow's warnings about odd
    chunks or EXIF stay quiet: real failures surface as exceptions, which importers turn into problems."""
    load_truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated


def verify_file(path: Path) -> None:
    """Pillow's structural check (chunk CRCs, missing end); load() alone accepts a PNG cut after its pixels.

    Pillow stops at the type of a PNG's IEND chunk, so a PNG cut or damaged in its last bytes (an interrupted
    copy) would pass: its end chunk is checked here too."""
    with Image.open(path) as im:
        im.verify()
        png = im.format == "PNG"
    if png:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - _PNG_TAIL))
            if _PNG_END not in fh.read():
                raise ValueError("broken PNG file: the IEND end chunk is cut or damaged")


def read_object_png(path: Path) -> np.ndarray:
    """A per-object PNG as (H, W) bool (nonzero = object); ValueError when it is not single-channel."""
    verify_file(path)  # chunk CRCs and end: these files carry no checksum in the manifest
    with Image.open(path) as im:
        im.load()  # full decode: a truncated file fails here
        if im.mode not in _SINGLE_CHANNEL:
            raise ValueError(f"mode {im.mode}; expected a single-channel PNG (nonzero = object)")
        return np.asarray(im) != 0


def read_image(path: Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, whatever its mode on disk (L, RGBA, P, I;16).

    The stored pixel grid is used as is; an EXIF orientation tag is NOT applied, because masks
    are stored on that same grid. `data check` warns about such tags so a user can decide.
    16-bit images are min-max scaled per image to 0..255.
    """
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            span = max(arr.max() - arr.min(), 1e-12)
            arr = ((arr - arr.min()) / span * 255).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """Read a class-index mask as (H, W) uint8 (the file is a single-channel PNG)."""
    with Image.open(path) as im:
        return np.asarray(im)


def read_instances(path: Path) -> np.ndarray:
    """Read an instance-id map as (H, W) int32 (16-bit PNG, 0 = no instance)."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int32)
