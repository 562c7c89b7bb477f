"""The server's images and masks, rendered on request: small thumbnails for the grid, full-size layers for the
detail view, each kept in a byte-bounded LRU cache keyed by the file's path, size and modification time (an edited
mask is rendered again).

Layers, drawn as the static page draws them (:mod:`masklab.explore.rendering`): ``image`` (JPEG thumbnail; the
original file at full size when a browser shows it as masklab reads it), ``gt`` / ``pred`` (palette PNGs coloured by
the class table, background transparent, ignore grey; a 16-bit instance-id map is coloured per instance instead)
and, full size only, ``error`` (1 false positive, 2 false negative, 3 wrong class).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cachetools import LRUCache
from PIL import Image

from masklab.data.classes import ClassTable
from masklab.data.images import read_image, read_mask
from masklab.explore.rendering import (
    class_palette,
    encode,
    error_image,
    mask_codes,
    nearest,
    palette_image,
    plain_image_type,
    thumb_size,
)

THUMB_SIDE = 128  # longest side of a grid thumbnail, pixels
JPEG_QUALITY = 72


class LayerError(LookupError):
    """A layer cannot be rendered: the file is missing (``missing``) or unreadable; the message names it."""

    def __init__(self, message: str, missing: bool):
        super().__init__(message)
        self.missing = missing


class Renderer:
    """Renders the layers of sample files; ``thumb`` and ``full`` return (bytes, content type)."""

    def __init__(self, class_table: ClassTable, side: int = THUMB_SIDE, cache_bytes: int = 96 << 20):
        self.class_table = class_table
        self.side = side
        # Keys (path, layer, size, file size, mtime, ...); an entry weighs its bytes, so cache_bytes bounds the total.
        self.cache: LRUCache[tuple, tuple[bytes, str]] = LRUCache(maxsize=cache_bytes, getsizeof=_weight)
        self._cache_lock = threading.Lock()  # LRUCache is not thread-safe; the server renders in several threads
        self._class_palette = class_palette(class_table)

    def thumb(self, path: Path, layer: str) -> tuple[bytes, str]:
        """The grid thumbnail of ``path`` (longest side ``side`` px, never enlarged) as ``layer``."""
        return self._cached(path, layer, "thumb", lambda: self._render_thumb(path, layer))

    def full(self, path: Path, layer: str) -> tuple[bytes, str]:
        """The full-size rendering of ``path`` as ``layer`` (image, gt or pred)."""
        return self._cached(path, layer, "full", lambda: self._render_full(path, layer))

    def error(self, gt: Path, pred: Path) -> tuple[bytes, str]:
        """The full-size error map of a ground truth and a prediction (palette PNG, 0 transparent)."""

        def render() -> tuple[bytes, str]:
            a, b = self._read_mask(gt), self._read_mask(pred)
            if a.shape != b.shape or a.ndim != 2 or a.dtype != np.uint8 or b.dtype != np.uint8:
                raise LayerError(f"{pred} ({b.shape}, {b.dtype}) cannot be compared with {gt} ({a.shape}, "
                                 f"{a.dtype}); expected two class-index masks of one size", missing=False)
            return _png(error_image(a, b, self.class_table), transparency=0), "image/png"

        return self._cached(pred, "error", "full", render, extra=_stamp(gt))

    def clear_cache(self) -> None:
        """Forget every rendering (e.g. to time cold requests)."""
        with self._cache_lock:
            self.cache.clear()

    # ------------------------------------------------------------------ rendering
    def _cached(self, path: Path, layer: str, size: str, render: Callable[[], tuple[bytes, str]],
                extra: tuple = ()) -> tuple[bytes, str]:
        """``render()``'s answer for this file's current contents, rendered once while it stays in the cache."""
        key = (str(path), layer, size, *_stamp(path), *extra)
        with self._cache_lock:
            hit = self.cache.get(key)
        if hit is None:
            hit = render()  # outside the lock: other threads' cache hits must not wait for a slow decode
            with self._cache_lock:
                try:
                    self.cache[key] = hit
                except ValueError:
                    pass  # larger than the whole budget: served, never kept
        return hit

    def _render_thumb(self, path: Path, layer: str) -> tuple[bytes, str]:
        if layer == "image":
            im, size = self._open_image(path, draft=True)
            im = im.resize(self.thumb_size(*size), Image.Resampling.BOX)
            return encode(im, "JPEG", quality=JPEG_QUALITY), "image/jpeg"
        # The image's size rule, so that a mask of the image's size lines up with its thumbnail.
        codes, palette = self._mask_codes(path)
        small = nearest(codes, *self.thumb_size(codes.shape[1], codes.shape[0]))
        return _png(palette_image(small, palette), transparency=0), "image/png"

    def _render_full(self, path: Path, layer: str) -> tuple[bytes, str]:
        if layer == "image":
            plain = plain_image_type(path)
            if plain:
                try:
                    return path.read_bytes(), plain
                except FileNotFoundError:  # removed a moment ago
                    raise LayerError(f"{path}: missing", missing=True) from None
            return _png(self._open_image(path, draft=False)[0]), "image/png"
        return _png(palette_image(*self._mask_codes(path)), transparency=0), "image/png"

    def _open_image(self, path: Path, draft: bool) -> tuple[Image.Image, tuple[int, int]]:
        """The image as masklab reads it (RGB; 16-bit scaled per image) and its stored (width, height); decoded at
        reduced size when ``draft`` allows."""
        try:
            with Image.open(path) as im:
                size = im.size
                if im.mode in ("RGB", "L", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                    if draft and im.format == "JPEG":
                        im.draft("RGB", self.thumb_size(*size))  # decode at 1/2..1/8 size: far faster for big JPEGs
                    return im.convert("RGB"), size
            return Image.fromarray(read_image(path)), size
        except FileNotFoundError:
            raise LayerError(f"{path}: missing", missing=True) from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a message, not a crash
            raise LayerError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:160]})", missing=False) from exc

    def _read_mask(self, path: Path) -> np.ndarray:
        try:
            return read_mask(path)
        except FileNotFoundError:
            raise LayerError(f"{path}: missing", missing=True) from None
        except Exception as exc:  # noqa: BLE001
            raise LayerError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:160]})", missing=False) from exc

    def _mask_codes(self, path: Path) -> tuple[np.ndarray, list[int]]:
        """(codes, palette) of a class-index mask (8-bit) or instance-id map (16-bit), index 0 transparent."""
        arr = self._read_mask(path)
        if arr.ndim != 2:
            raise LayerError(f"{path}: has shape {arr.shape}; expected a single-channel mask", missing=False)
        return mask_codes(arr, self._class_palette)

    def thumb_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) of the thumbnail of a width x height picture: longest side ``side``, never enlarged."""
        return thumb_size(width, height, self.side)


def _weight(value: tuple[bytes, str]) -> int:
    """A cache entry's weight: its encoded bytes."""
    return len(value[0])


def _stamp(path: Path) -> tuple[int, int]:
    """(size, mtime ns) of a file, so a cache entry of an edited file is not reused; (-1, -1) when missing."""
    try:
        st = Path(path).stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def _png(im: Image.Image, **kwargs) -> bytes:
    # Level 1: these are sent over the loopback, so encoding time matters more than bytes.
    return encode(im, "PNG", compress_level=1, **kwargs)
