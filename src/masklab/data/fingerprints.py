"""Image fingerprints for duplicate search: a hash of the decoded pixels and a 64-bit perceptual hash.

The pixel hash finds exact duplicates however the file is encoded (a PNG and a BMP of the same pixels
match; a re-saved file whose bytes differ matches). The perceptual hash (pHash: the signs of an image's
lowest 8x8 DCT frequencies against their median, as imagehash computes it) survives resizing, JPEG
re-encoding and small colour changes, so pairs within a few bits are near-duplicate candidates; it is
weak against crops and shifts, which the embedding search catches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HASH_BITS = 64
HASH_BYTES = HASH_BITS // 8


@dataclass(frozen=True)
class Fingerprint:
    """``pixels``: sha256 hex of the (H, W, C) uint8 pixels and their shape; ``phash``: 8 bytes, bit order as
    numpy.packbits of imagehash's 8x8 boolean matrix (row-major)."""

    pixels: str
    phash: bytes


def pixel_hash(pixels: np.ndarray) -> str:
    """sha256 hex of an image's decoded pixels (any shape, uint8) including the shape, so a 2x8 and an 8x2
    image of the same bytes differ."""
    h = hashlib.sha256(repr(tuple(pixels.shape)).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def perceptual_hash(image: Image.Image) -> bytes:
    """The 64-bit pHash of a PIL image as 8 bytes (imagehash.phash, hash_size 8)."""
    import imagehash

    bits = imagehash.phash(image, hash_size=8).hash  # (8, 8) bool
    return np.packbits(bits.reshape(-1)).tobytes()


def fingerprint(image: Image.Image) -> Fingerprint:
    """Both fingerprints of a loaded PIL image, as masklab reads images: RGB (alpha dropped, palette and grey
    expanded), so a grey PNG and its RGB copy are the same pixels."""
    rgb = image.convert("RGB")
    return Fingerprint(pixel_hash(np.asarray(rgb)), perceptual_hash(rgb))


def hamming(a: bytes, b: bytes) -> int:
    """Bits that differ between two perceptual hashes."""
    return int.from_bytes(bytes(x ^ y for x, y in zip(a, b)), "big").bit_count()


def hash_matrix(hashes: Iterable[bytes]) -> np.ndarray:
    """(N, 8) uint8: the hashes stacked, as faiss' binary indexes take them."""
    rows = [np.frombuffer(h, np.uint8) for h in hashes]
    return np.stack(rows) if rows else np.zeros((0, HASH_BYTES), np.uint8)


FINGERPRINTS_DIR = "fingerprints"
FINGERPRINT_KEY = "sha256+phash8"  # what the cached values are: change it when the hashes change


def read_fingerprint(path: Path) -> Fingerprint:
    """Both fingerprints of an image file (decoded the way masklab reads images)."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I", "F"):
            from masklab.data.images import read_image

            return fingerprint(Image.fromarray(read_image(path)))
        return fingerprint(im)


def fingerprint_dataset(dataset: Any, cache_dir: str | Path | None = None,
                        samples: Sequence[Any] | None = None) -> dict[str, Fingerprint]:
    """{sample id: Fingerprint} of ``samples`` (default: all) of a loaded dataset, reusing cached values of
    unchanged image files (masklab.data.cache); unreadable images are left out (``data check`` names them)."""
    import pyarrow as pa

    from masklab.console import progress
    from masklab.data.cache import cache_file, cached_table, write_table

    chosen = list(dataset.samples if samples is None else samples)
    path = cache_file(cache_dir, FINGERPRINTS_DIR, FINGERPRINT_KEY, dataset.manifest_hash) if cache_dir else None
    table = cached_table(path, ["image_sha256", "pixels", "phash"]) if path else None
    known = {} if table is None else {
        sha: Fingerprint(px, bytes(ph)) for sha, px, ph in zip(*(table.column(c).to_pylist()
                                                                 for c in ("image_sha256", "pixels", "phash")))}
    found: dict[str, Fingerprint] = {}
    todo = [s for s in chosen if s.image_sha256 not in known]
    for s in chosen:
        if s.image_sha256 in known:
            found[s.id] = known[s.image_sha256]
    for s in progress(todo, f"Hashing {len(todo)} images"):
        try:
            found[s.id] = read_fingerprint(dataset.root / s.image)
        except (OSError, ValueError, SyntaxError):  # unreadable: data check reports it
            continue
    if path is not None and todo:
        rows = [(s.image_sha256, found[s.id]) for s in chosen if s.id in found]
        write_table(path, pa.table({"image_sha256": [r[0] for r in rows], "pixels": [r[1].pixels for r in rows],
                                    "phash": pa.array([r[1].phash for r in rows], pa.binary(HASH_BYTES))}))
    return found
