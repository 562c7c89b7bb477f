"""Images and masks rendered for the explorer page on demand: small thumbnails for the grid, full-size layers for
the detail view, each kept in a byte-bounded LRU cache keyed by the file's path, size and modification time (an
edited mask is rendered again).

Layers: ``image`` (JPEG thumbnail; the original file at full size when a browser shows it as masklab reads it),
``gt`` / ``pred`` (palette PNGs coloured by the class table, background transparent, ignore grey; a 16-bit
instance-id map is coloured per instance instead) and, full size only, ``error`` (1 false positive, 2 false
negative, 3 wrong class, in the static explorer's colours).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cachetools import LRUCache
from PIL import Image

from masklab.data.classes import ClassTable
from masklab.data.images import read_image, read_mask
from masklab.explore.static_page import ERROR_COLORS, error_map
from masklab.report.overlay import IGNORE_COLOR, distinct_colors

THUMB_SIDE = 128  # longest side of a grid thumbnail, pixels
JPEG_QUALITY = 72
UNKNOWN_COLOR = (255, 0, 255)  # a mask value that is neither a class id nor ignore_index
# Formats browsers draw exactly as masklab reads them (8-bit RGB or grey): sent byte for byte at full size.
PLAIN_FORMATS = {("PNG", "RGB"): "image/png", ("PNG", "L"): "image/png", ("JPEG", "RGB"): "image/jpeg",
                 ("JPEG", "L"): "image/jpeg"}


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
        palette = np.zeros((256, 3), np.uint8)
        palette[: class_table.num_classes] = class_table.palette()[:256]
        known = np.zeros(256, bool)
        known[: class_table.num_classes] = True
        known[class_table.ignore_index % 256] = True
        palette[~known] = UNKNOWN_COLOR
        palette[class_table.ignore_index % 256] = IGNORE_COLOR
        self._class_palette = palette.ravel().tolist()
        # Instance ids k > 0 cycle through 255 distinct colours; 0 (no instance) is transparent.
        self._instance_palette = [0, 0, 0, *distinct_colors(255).ravel().tolist()]

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
            im = Image.fromarray(error_map(a, b, self.class_table))
            im.putpalette([0, 0, 0, *[c for k in (1, 2, 3) for c in ERROR_COLORS[k]]])
            return _png(im, transparency=0), "image/png"

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
            return _encode(im, "JPEG", quality=JPEG_QUALITY), "image/jpeg"
        # The image's size rule, so that a mask of the image's size lines up with its thumbnail.
        mask = self._mask_image(path)
        return _png(mask.resize(self.thumb_size(*mask.size), Image.Resampling.NEAREST), transparency=0), "image/png"

    def _render_full(self, path: Path, layer: str) -> tuple[bytes, str]:
        if layer == "image":
            try:
                with Image.open(path) as im:
                    plain = PLAIN_FORMATS.get((str(im.format), im.mode))
                if plain:
                    return path.read_bytes(), plain
            except FileNotFoundError:
                raise LayerError(f"{path}: missing", missing=True) from None
            except Exception:  # noqa: BLE001 - _open_image below names the problem
                pass
            return _png(self._open_image(path, draft=False)[0]), "image/png"
        return _png(self._mask_image(path), transparency=0), "image/png"

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

    def _mask_image(self, path: Path) -> Image.Image:
        """A palette image of a class-index mask (8-bit) or instance-id map (16-bit), index 0 transparent."""
        arr = self._read_mask(path)
        if arr.ndim != 2:
            raise LayerError(f"{path}: has shape {arr.shape}; expected a single-channel mask", missing=False)
        if arr.dtype == np.uint8:
            codes, palette = arr, self._class_palette
        else:
            ids = arr.astype(np.int64)
            codes, palette = np.where(ids > 0, (ids - 1) % 255 + 1, 0).astype(np.uint8), self._instance_palette
        im = Image.frombytes("P", (codes.shape[1], codes.shape[0]), np.ascontiguousarray(codes).tobytes())
        im.putpalette(palette)
        return im

    def thumb_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) of the thumbnail of a width x height picture: longest side ``side``, never enlarged."""
        scale = min(1.0, self.side / max(width, height, 1))
        return max(1, round(width * scale)), max(1, round(height * scale))


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


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png(im: Image.Image, **kwargs) -> bytes:
    # Level 1: these are sent over the loopback, so encoding time matters more than bytes.
    return _encode(im, "PNG", compress_level=1, **kwargs)
