"""Pixels per class of label maps: what class weights are computed from.

A task turns a sample's label into an (H, W) class-id map (``Task.label_map``); the counts are cached per label
file content (``<cache_dir>/class_pixels/v1/<manifest>.parquet``, masklab.data.cache), so a later training or a
cross-validation fold of a dataset whose labels did not change reads no label file again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masklab.data.errors import DatasetFormatError

CLASS_PIXELS_DIR = "class_pixels"
CLASS_PIXELS_KEY = "v1"


@dataclass(frozen=True)
class ClassPixels:
    """Pixel counts of a set of masks, per class id (ignore_index pixels not counted).

    ``pixels[c]``: pixels of class c; ``present_in[c]``: all labelled pixels of the masks where c appears (the
    denominator of Eigen & Fergus' class frequency); ``images[c]``: how many masks contain c; ``masks``: how many
    masks were counted.
    """

    pixels: np.ndarray
    present_in: np.ndarray
    images: np.ndarray
    masks: int

    @property
    def share(self) -> np.ndarray:
        """(C,) each class's share of all labelled pixels."""
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros_like(self.pixels, dtype=np.float64)


def mask_value_counts(mask: np.ndarray) -> np.ndarray:
    """(max value + 1,) int64 pixel counts of each value of one (H, W) uint8 mask (what the cache keeps: the class
    table's ignore_index and size are applied when counts are added up, so changing them needs no recount)."""
    return np.bincount(mask.ravel()).astype(np.int64)


def class_counts(values: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """(C,) the counts of class ids 0..C-1 among ``values`` (from :func:`mask_value_counts`), ignored id at 0."""
    out = np.zeros(num_classes, np.int64)
    n = min(num_classes, len(values))
    out[:n] = values[:n]
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        out[ignore_index] = 0
    return out


def label_key(sample: Any) -> str | None:
    """The content hash a sample's label counts are cached under (its mask's, else its objects file's)."""
    return sample.mask_sha256 or sample.objects_sha256


def count_class_pixels(samples: Sequence[Any], label_map: Callable[[Any], np.ndarray], num_classes: int,
                       ignore_index: int | None, manifest_hash: str, cache_dir: str | Path | None = None
                       ) -> ClassPixels:
    """The :class:`ClassPixels` of ``samples`` (manifest rows), ``label_map(sample)`` giving each one's (H, W) uint8
    class ids; counts of unchanged label files come from the cache. A sample without a label is a
    DatasetFormatError."""
    import pyarrow as pa

    from masklab.console import progress
    from masklab.data.cache import cache_file, cached_table, write_table

    missing = [s.id for s in samples if not s.has_target]
    if missing:
        raise DatasetFormatError(f"samples without a label ({', '.join(missing[:3])}"
                                 f"{' ...' if len(missing) > 3 else ''}); class pixel counts need labels")
    path = cache_file(cache_dir, CLASS_PIXELS_DIR, CLASS_PIXELS_KEY, manifest_hash) if cache_dir else None
    table = cached_table(path, ["mask_sha256", "pixels"]) if path else None
    known: dict[str, np.ndarray] = {} if table is None else {
        sha: np.asarray(px, np.int64) for sha, px in zip(table.column("mask_sha256").to_pylist(),
                                                          table.column("pixels").to_pylist())}
    counts: dict[str, np.ndarray] = {}
    todo = [s for s in samples if label_key(s) not in known]
    for s in progress(todo, f"Counting class pixels of {len(todo)} labels"):
        counts[s.id] = mask_value_counts(label_map(s))
    for s in samples:
        if s.id not in counts:
            counts[s.id] = known[label_key(s)]
    if path is not None and todo:
        rows = {label_key(s): counts[s.id] for s in samples if label_key(s)}
        write_table(path, pa.table({"mask_sha256": list(rows), "pixels": [v.tolist() for v in rows.values()]}))
    per_mask = np.stack([class_counts(counts[s.id], num_classes, ignore_index) for s in samples]) if samples \
        else np.zeros((0, num_classes), np.int64)
    present = per_mask > 0
    return ClassPixels(pixels=per_mask.sum(0), present_in=(present * per_mask.sum(1, keepdims=True)).sum(0),
                       images=present.sum(0), masks=len(samples))


def mask_class_pixels(dataset: Any, split: str = "train", cache_dir: str | Path | None = None) -> ClassPixels | None:
    """The :class:`ClassPixels` of the semantic masks of ``split``'s labeled samples, or None when some of them have
    no semantic mask (an instance dataset: its objects are counted by ``data check`` per object)."""
    from masklab.data.images import read_mask

    samples = dataset.labeled(split)
    if not samples or any(not s.mask for s in samples):
        return None
    table = dataset.class_table
    return count_class_pixels(samples, lambda s: read_mask(Path(dataset.root) / s.mask), table.num_classes,
                              table.ignore_index, dataset.manifest_hash, cache_dir)


def class_pixels_line(counts: ClassPixels, names: Sequence[str], split: str = "train") -> str:
    """``class pixels in train (800 masks): background 84.1 %, polyp 15.9 % (in 99 % of masks)``."""
    shares = ", ".join(f"{n} {100 * sh:.3g} % (in {100 * k / max(counts.masks, 1):.3g} % of masks)"
                       for n, sh, k in zip(names, counts.share, counts.images))
    return f"class pixels in {split} ({counts.masks} masks): {shares}"
