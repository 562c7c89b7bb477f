"""Cross-validation folds, stored in the manifest's ``fold`` so every later run sees the same ones.

Folds are assigned once (a seeded shuffle of the sorted ids dealt round-robin, so fold sizes differ
by at most one) and kept: a second ``cv`` with the same number of folds reuses them, and samples
added since get the fold that is smallest at that moment (seeded order), so no earlier sample moves.
Another number of folds is refused unless ``reassign`` is asked for, since it would silently change
which model saw which sample.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from masklab.data.manifest import Dataset, Sample, load_dataset, read_manifest, write_manifest
from masklab.errors import UserError

# The split a fold's view gives samples outside cross-validation that carry a train or held-out name.
EXCLUDED_SPLIT = "cv_excluded"


@dataclass(frozen=True)
class FoldPlan:
    """``folds``: {sample id: fold in 0..k-1} of the samples cross-validation covers; ``changed``:
    whether the manifest was rewritten (new assignments)."""

    k: int
    folds: dict[str, int]
    changed: bool

    def members(self, fold: int) -> list[str]:
        """Sample ids of ``fold``, in id order."""
        return sorted(i for i, f in self.folds.items() if f == fold)


def deal_folds(ids: Sequence[str], k: int, seed: int, existing: dict[str, int] | None = None) -> dict[str, int]:
    """{id: fold}: ``existing`` kept; every other id (a seeded shuffle of them, sorted first so the
    result does not depend on their order) goes to the fold with the fewest members, lowest first."""
    folds = dict(existing or {})
    sizes = [0] * k
    for f in folds.values():
        sizes[f] += 1
    new = sorted(i for i in ids if i not in folds)
    random.Random(seed).shuffle(new)
    for sample_id in new:
        smallest = min(range(k), key=lambda f: (sizes[f], f))
        folds[sample_id] = smallest
        sizes[smallest] += 1
    return folds


def covered_samples(dataset: Dataset, splits: Sequence[str]) -> list[Sample]:
    """Labeled samples of ``splits`` (the ones cross-validation trains and predicts on). Splits the dataset does not
    have are left out with a warning naming them (a dataset imported with ``split_mode=none`` has only ``train``);
    none of them there is a UserError."""
    present = [s for s in splits if s in dataset.split_names]
    if not present:
        raise UserError(f"cv.splits: {list(splits)} not in dataset {dataset.root} (splits: {dataset.split_names})")
    if len(present) < len(splits):
        from masklab.console import logger

        logger(__name__).warning(f"cv.splits: {[s for s in splits if s not in present]} not in dataset "
                                 f"{dataset.root}; cross-validating the samples of {present}")
    return [s for s in dataset.samples if s.split in present and s.labeled]


def ensure_folds(dataset: Dataset, k: int, splits: Sequence[str], seed: int, reassign: bool = False
                 ) -> tuple[Dataset, FoldPlan]:
    """The dataset (re-read when its manifest was rewritten) and the fold of every covered sample.

    Raises UserError for k < 2, fewer covered samples than folds, or stored folds made for another
    k (unless ``reassign``: then every covered sample is dealt again)."""
    if not isinstance(k, int) or k < 2:
        raise UserError(f"cv.folds={k}: expected an integer >= 2")
    covered = covered_samples(dataset, splits)
    if len(covered) < k:
        raise UserError(f"cv.folds={k}: only {len(covered)} labeled samples in splits {list(splits)} of "
                        f"{dataset.root}; each fold needs at least one")
    stored = {s.id: s.fold for s in covered if s.fold is not None}
    outside = sorted({f for f in stored.values() if not isinstance(f, int) or not 0 <= f < k})
    if outside and not reassign:
        raise UserError(f"{dataset.root / 'manifest.jsonl'}: samples carry folds {outside} from an earlier "
                        f"cross-validation, outside 0..{k - 1} of cv.folds={k}; use cv.folds={max(outside) + 1} "
                        f"to keep them, or cv.reassign=true to deal all {len(covered)} samples again")
    folds = deal_folds([s.id for s in covered], k, seed, existing={} if reassign else stored)
    if all(stored.get(i) == f for i, f in folds.items()) and len(stored) == len(folds):
        return dataset, FoldPlan(k, folds, changed=False)
    # Rewrite through the manifest on disk (not the loaded copy) so rows keep every key verbatim.
    rows = read_manifest(dataset.root)
    write_manifest(dataset.root, [replace(s, fold=folds[s.id]) if s.id in folds else s for s in rows])
    return load_dataset(dataset.root), FoldPlan(k, folds, changed=True)


def fold_view(dataset: Dataset, plan: FoldPlan, fold: int, held_out: str = "val") -> Dataset:
    """The dataset as fold ``fold``'s training sees it: covered samples of ``fold`` in split ``held_out``,
    the other covered samples in ``train``; uncovered samples of those two split names in
    ``EXCLUDED_SPLIT`` (so they join neither); everything else (test, pool) as it was."""
    def moved(s: Sample) -> Sample:
        if s.id not in plan.folds:
            return replace(s, split=EXCLUDED_SPLIT) if s.split in ("train", held_out) else s
        return replace(s, split=held_out if plan.folds[s.id] == fold else "train")

    return replace(dataset, samples=[moved(s) for s in dataset.samples])
