"""Assigning samples to splits at import time: seeded, proportional and reproducible."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from masklab.data.manifest import SPLITS
from masklab.errors import UserError

DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType({"train": 0.8, "val": 0.1, "test": 0.1})


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """{split: share} over train/val/test, missing ones 0; ValueError unless non-negative and summing to 1."""
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise UserError(f"fractions: unknown split(s) {sorted(unknown)}; expected keys from {list(SPLITS)}")
    out = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    if any(v < 0 for v in out.values()) or abs(sum(out.values()) - 1.0) > 1e-6:
        raise UserError(f"fractions: {dict(fractions)} must be non-negative and sum to 1")
    return out


def random_splits(ids: Iterable[str], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """{id: split}: a seeded shuffle of the sorted ids, cut by ``fractions`` (from :func:`check_fractions`)
    with largest-remainder rounding. The result depends only on the set of ids, not their order."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n = len(order)
    wanted = [s for s in SPLITS if fractions[s] > 0]
    exact = {s: n * fractions[s] for s in wanted}
    counts = {s: int(exact[s]) for s in wanted}
    for s in sorted(wanted, key=lambda s: (counts[s] - exact[s], SPLITS.index(s)))[: n - sum(counts.values())]:
        counts[s] += 1
    # A split asked for should not end up empty on a small dataset (an empty val breaks training).
    for s in wanted:
        donor = max(wanted, key=lambda d: counts[d])
        if counts[s] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[s] += 1
    split_of: dict[str, str] = {}
    start = 0
    for s in wanted:
        split_of.update(dict.fromkeys(order[start : start + counts[s]], s))
        start += counts[s]
    return split_of
