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


def rle_run_lengths(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString, in Python, with its errors named).

    Only :func:`check_rle` uses it: pycocotools' own parser is what decodes, but it trusts its input.
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


def _checked_form(rle: object) -> tuple[list[int], str]:
    """(size, counts) of ``{"size": [H, W], "counts": str}``; ValueError for any other shape of value (O(1))."""
    if not isinstance(rle, Mapping) or set(rle) != {"size", "counts"}:
        raise ValueError(f"{short_repr(rle)} is not {{'size': [H, W], 'counts': str}}")
    size, counts = rle["size"], rle["counts"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"size {short_repr(size)} is not [H, W] of positive ints")
    if not isinstance(counts, str):
        raise ValueError(f"counts is {type(counts).__name__}; expected a compressed RLE string")
    return size, counts


def check_rle(rle: object) -> None:
    """ValueError naming what is wrong unless ``rle`` is a compressed COCO RLE whose runs cover exactly H*W px.

    pycocotools trusts its input: a string whose runs do not add up to H*W decodes to uninitialised memory
    instead of failing. So a string is checked here once, where it enters or is vetted (the COCO import and
    `data check`, which training runs first), and :func:`decode_rle` trusts it on every later read.
    """
    size, counts = _checked_form(rle)
    runs = rle_run_lengths(counts)
    if any(r < 0 for r in runs) or sum(runs) != size[0] * size[1]:
        raise ValueError(
            f"run lengths add up to {sum(runs)} (smallest {min(runs, default=0)}); H*W is {size[0] * size[1]}"
        )


def decode_rle(rle: object, *, check: bool = False) -> np.ndarray:
    """Compressed COCO RLE ``{"size": [H, W], "counts": str}`` -> (H, W) bool, decoded by pycocotools.

    check: run :func:`check_rle` first (where a string is imported or checked). Without it only the value's
    form is checked (ValueError); the runs are trusted as `data check` found them.
    """
    from pycocotools import mask as coco_mask

    if check:
        check_rle(rle)
    size, counts = _checked_form(rle)
    return coco_mask.decode({"size": size, "counts": counts.encode("ascii")}).astype(bool)
