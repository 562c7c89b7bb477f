"""What an instance sample holds for training and scoring, and how a batch of them collates.

Training item (after augmentation): ``image`` (3, H, W) uint8, ``masks`` (K, H, W) uint8 0/1,
``labels`` (K,) int64 class ids, ``boxes`` (K, 4) float32 xyxy px (x1, y1 exclusive), ``iscrowd``
(K,) uint8, ``id`` str. Scoring item: ``image`` (H, W, 3) uint8 and ``objects`` (an ObjectSet) at
the sample's original size, or both brought to the network's size by an InputRule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from masklab.data.images import read_image
from masklab.data.manifest import Dataset, Sample
from masklab.data.objects import ObjectSet, read_objects


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """(K, 4) float32 xyxy boxes (x1, y1 one past the last pixel) of (K, H, W) masks; an empty mask gets zeros."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if len(rows):
            boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def augment_objects(transform: A.Compose | None, image: np.ndarray, objects: ObjectSet
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image (H', W', 3), masks (K', H', W') uint8, labels (K',), iscrowd (K',)) after ``transform``.

    Every object mask goes through the same geometric transform as the image (albumentations'
    ``masks`` target), so objects stay aligned. Objects that leave the image (a crop, a rotation)
    are dropped; partial ones stay and get boxes from what is left of them. Fill values outside the
    image (``fill_mask``, the ignore index) are not object pixels: only 1 counts.
    """
    masks = objects.masks.astype(np.uint8)
    if transform is not None:
        # albumentations cannot stack zero masks: carry one empty mask through, drop it after.
        out = transform(image=image, masks=masks if len(masks) else np.zeros((1, *image.shape[:2]), np.uint8))
        image = out["image"]
        masks = np.asarray(out["masks"], np.uint8)[: len(objects)] if len(objects) \
            else np.zeros((0, *image.shape[:2]), np.uint8)
    masks = (masks == 1).astype(np.uint8)
    kept = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
    return image, masks[kept], objects.class_ids[kept], objects.iscrowd[kept]


class InstanceSplit(torch.utils.data.Dataset):
    """Labeled samples of one split as training items (see the module docstring)."""

    def __init__(self, dataset: Dataset, samples: Sequence[Sample], transform: A.Compose | None, seed: int = 0):
        self.root = dataset.root
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        from masklab.data.datamodule import item_index

        sample = self.samples[item_index(key, self.transform, self.seed)]
        image, masks, labels, iscrowd = augment_objects(
            self.transform, read_image(self.root / sample.image), read_objects(self.root, sample))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "masks": torch.from_numpy(masks),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "boxes": torch.from_numpy(boxes_of(masks)),
            "iscrowd": torch.from_numpy(iscrowd.astype(np.uint8)),
            "id": sample.id,
        }


def collate_training(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``image`` (N, 3, H, W) when all items share a size (else a list), ``targets``: per item a dict of
    masks, labels, boxes, iscrowd; ``id``: list."""
    images = [it["image"] for it in items]
    same = len({tuple(im.shape) for im in images}) == 1
    return {
        "image": torch.stack(images) if same else images,
        "targets": [{k: it[k] for k in ("masks", "labels", "boxes", "iscrowd")} for it in items],
        "id": [it["id"] for it in items],
    }


class ScoringObjects(torch.utils.data.Dataset):
    """Scoring items: ``image`` (H, W, 3) uint8, ``objects`` ObjectSet, ``id``, at the original size, or
    at the network's size when ``rule`` (an InputRule) is given (bilinear image, nearest masks)."""

    def __init__(self, dataset: Dataset, samples: Sequence[Sample], rule: Any = None):
        self.root = dataset.root
        self.samples = list(samples)
        self.rule = rule

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image, objects = read_image(self.root / sample.image), read_objects(self.root, sample)
        if self.rule is not None and self.rule.mode == "resize" and image.shape[:2] != (self.rule.height,
                                                                                       self.rule.width):
            image = self.rule.resize_image(image)
            size = (self.rule.width, self.rule.height)
            masks = np.stack([cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in
                              objects.masks]).astype(bool) if len(objects) else np.zeros((0, *size[::-1]), bool)
            objects = ObjectSet(objects.class_ids, masks, objects.iscrowd, objects.extra)
        return {"image": image, "objects": objects, "id": sample.id}
