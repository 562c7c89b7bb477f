"""Image/mask pairs for scoring, at the images' own size (no Lightning, no augmentation library)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from masklab.data.images import read_image, read_mask
from masklab.data.manifest import Dataset, Sample


class ScoringPairs(torch.utils.data.Dataset):
    """Item: ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8 class ids, ``id`` str, each at the
    sample's original size unless ``resize`` (image, mask) -> (image, mask) is given."""

    def __init__(self, dataset: Dataset, samples: Sequence[Sample],
                 resize: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None):
        self.root = dataset.root
        self.samples = list(samples)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image, mask = read_image(self.root / s.image), read_mask(self.root / s.mask)
        if self.resize is not None:
            image, mask = self.resize(image, mask)
        return {"image": image, "mask": mask, "id": s.id}


def list_collate(items: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Batch items of different sizes: each key becomes a list, in item order."""
    return {key: [item[key] for item in items] for key in items[0]} if items else {}
