"""How both explorer front ends draw samples: thumbnail sizes, class and error colours, the class legend, and the
mask, error and image layers. The static page writes these into its files and inline thumbnails; the server renders
them on request (:mod:`masklab.explore.thumbnails`), so a sample looks the same in either.

Layers: a class-index mask (8-bit) is a palette image whose pixel values are the class ids, coloured by the class
table (class 0 transparent where it is shown over the image, ``ignore_index`` grey, any other value magenta); a 16-bit
instance-id map cycles each instance through 255 distinct colours (0 transparent); an error map marks 1 false
positive, 2 false negative, 3 wrong class (0 transparent).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from masklab.data.classes import ClassTable
from masklab.report.overlay import IGNORE_COLOR, distinct_colors

UNKNOWN_COLOR = (255, 0, 255)  # a mask value that is neither a class id nor ignore_index
# Error map codes and colours (also in the pages' legends): false positive, false negative, wrong class.
ERROR_COLORS = {1: (230, 30, 30), 2: (30, 90, 255), 3: (255, 200, 0)}
ERROR_PALETTE = [0, 0, 0, *[c for k in (1, 2, 3) for c in ERROR_COLORS[k]]]
# Instance ids k > 0 cycle through 255 distinct colours; 0 (no instance) is transparent.
INSTANCE_PALETTE = [0, 0, 0, *distinct_colors(255).ravel().tolist()]
# Formats browsers draw exactly as masklab reads them (8-bit RGB or grey): passed on byte for byte at full size.
PLAIN_FORMATS = {("PNG", "RGB"): "image/png", ("PNG", "L"): "image/png", ("JPEG", "RGB"): "image/jpeg",
                 ("JPEG", "L"): "image/jpeg"}


def class_legend(class_table: ClassTable) -> list[dict[str, Any]]:
    """The classes as the pages' legends and overlays read them: [{"id", "name", "color": [r, g, b]}]."""
    return [{"id": c.id, "name": c.name, "color": list(c.color)} for c in class_table.classes]


def class_palette(class_table: ClassTable) -> list[int]:
    """A 256-entry palette (768 ints) for class-index masks: class colours, ignore_index grey, other values
    magenta."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: class_table.num_classes] = class_table.palette()[:256]
    known = np.zeros(256, bool)
    known[: class_table.num_classes] = True
    known[class_table.ignore_index % 256] = True
    palette[~known] = UNKNOWN_COLOR
    palette[class_table.ignore_index % 256] = IGNORE_COLOR
    return palette.ravel().tolist()


def mask_codes(arr: np.ndarray, class_colors: list[int]) -> tuple[np.ndarray, list[int]]:
    """(codes (H, W) uint8, palette) of a single-channel mask: a class-index mask (uint8) keeps its values and gets
    ``class_colors`` (:func:`class_palette`); an instance-id map (wider integers) cycles ids 1.. through
    INSTANCE_PALETTE."""
    if arr.dtype == np.uint8:
        return arr, class_colors
    ids = arr.astype(np.int64)
    return np.where(ids > 0, (ids - 1) % 255 + 1, 0).astype(np.uint8), INSTANCE_PALETTE


def palette_image(codes: np.ndarray, palette: list[int]) -> Image.Image:
    """A palette ("P") image of (H, W) uint8 ``codes``."""
    im = Image.frombytes("P", (codes.shape[1], codes.shape[0]), np.ascontiguousarray(codes, np.uint8).tobytes())
    im.putpalette(palette)
    return im


def error_map(gt: np.ndarray, pred: np.ndarray, class_table: ClassTable) -> np.ndarray:
    """Per-pixel error codes: 1 false positive (a class predicted where the truth is background), 2 false
    negative (a class predicted as background), 3 wrong class (one class predicted as another); 0 elsewhere,
    including ignore pixels. Class 0 is background, as in :func:`masklab.report.overlay.overlay_mask`."""
    valid = (gt != class_table.ignore_index) & (gt < class_table.num_classes) & (gt != pred)
    fp = valid & (pred != 0) & (pred < class_table.num_classes)
    fn = valid & (gt != 0)
    return (fp.astype(np.uint8) + 2 * fn.astype(np.uint8)).astype(np.uint8)


def error_image(gt: np.ndarray, pred: np.ndarray, class_table: ClassTable) -> Image.Image:
    """The error map of two class-index masks of one size as a palette image in ERROR_COLORS (save it with
    ``transparency=0``)."""
    return palette_image(error_map(gt, pred, class_table), ERROR_PALETTE)


def thumb_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) of the thumbnail of a width x height picture: longest side ``side``, aspect kept, never enlarged."""
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def nearest(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """``arr`` (H, W, ...) resized to (height, width, ...) by nearest neighbour, sampling at pixel centres: how
    mask thumbnails keep their values, so a mask's thumbnail lines up with its image's."""
    h, w = arr.shape[:2]
    rows = ((np.arange(height) + 0.5) * h / height).astype(np.intp).clip(0, h - 1)
    cols = ((np.arange(width) + 0.5) * w / width).astype(np.intp).clip(0, w - 1)
    return arr[rows[:, None], cols[None, :]]


def plain_image_type(path: Path) -> str | None:
    """The content type of an image file a browser shows exactly as masklab reads it (PLAIN_FORMATS), else None
    (including a file that cannot be opened)."""
    try:
        with Image.open(path) as im:
            return PLAIN_FORMATS.get((str(im.format), im.mode))
    except Exception:  # noqa: BLE001 - not plain; the caller decodes it and names any problem
        return None


def encode(im: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    """The image encoded as ``fmt`` (PNG, JPEG) with PIL's save options ``kwargs``."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def data_uri(im: Image.Image, fmt: str, **kwargs: Any) -> str:
    """The image as a ``data:image/<fmt>;base64,...`` URI."""
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(encode(im, fmt, **kwargs)).decode("ascii")
