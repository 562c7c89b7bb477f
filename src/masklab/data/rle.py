"""Compressed COCO RLE, the way instance objects are stored: encode a mask, check and decode a string."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from masklab.data.errors import short_repr


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) mask (nonzero = object) -> compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as coco_mask

    if mask.ndim != 2:
        raise ValueError(f"object mask has shape {mask.shape}; expected (H, W)")
    rle = coco_mask.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _rle_run_lengths(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString, in Python).

    pycocotools trusts its input: a string whose runs do not add up to H*W decodes to
    uninitialised memory instead of failing, so every string is parsed and checked here first.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("string ends inside a run length")
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[pos]!r} at {pos} is outside '0'..'o'")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # sign bit of the last 5-bit group
        if len(runs) > 2:
            value += runs[-2]  # runs after the second are stored as differences
        runs.append(value)
    return runs


def decode_rle(rle: object) -> np.ndarray:
    """Compressed COCO RLE ``{"size": [H, W], "counts": str}`` -> (H, W) bool; ValueError if malformed."""
    from pycocotools import mask as coco_mask

    if not isinstance(rle, Mapping) or set(rle) != {"size", "counts"}:
        raise ValueError(f"{short_repr(rle)} is not {{'size': [H, W], 'counts': str}}")
    size, counts = rle["size"], rle["counts"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"size {short_repr(size)} is not [H, W] of positive ints")
    if not isinstance(counts, str):
        raise ValueError(f"counts is {type(counts).__name__}; expected a compressed RLE string")
    runs = _rle_run_lengths(counts)
    if any(r < 0 for r in runs) or sum(runs) != size[0] * size[1]:
        raise ValueError(
            f"run lengths add up to {sum(runs)} (smallest {min(runs, default=0)}); H*W is {size[0] * size[1]}"
        )
    return coco_mask.decode({"size": size, "counts": counts.encode("ascii")}).astype(bool)

