"""An instance prediction and how network outputs become one (apart from tasks/instance.py so that the task and
its LightningModule share it without importing each other).

Shapes: :class:`InstancePrediction` holds ``masks`` (K, H, W) bool, ``class_ids`` (K,) int64, ``scores`` (K,)
float32, at the image's own size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class InstancePrediction:
    """Objects predicted on one image: masks (K, H, W) bool, class_ids (K,) int64, scores (K,) float32,
    most confident first."""

    masks: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def of(cls, masks: np.ndarray, class_ids: np.ndarray, scores: np.ndarray) -> InstancePrediction:
        """Sorted by descending score, empty masks dropped."""
        masks = np.asarray(masks, bool)
        keep = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
        order = np.argsort(-np.asarray(scores, np.float32)[keep], kind="stable")
        return cls(masks[keep][order], np.asarray(class_ids, np.int64)[keep][order],
                   np.asarray(scores, np.float32)[keep][order])

    def id_map(self) -> np.ndarray:
        """(H, W) uint16: 0 background, k + 1 where object k is (the most confident object on top)."""
        ids = np.zeros(self.masks.shape[1:], np.uint16)
        for k in range(len(self) - 1, -1, -1):  # least confident first, so the most confident is drawn last
            ids[self.masks[k]] = k + 1
        return ids

    def class_map(self) -> np.ndarray:
        """(H, W) uint8 class ids of the objects painted like :meth:`id_map` (semantic view of the prediction)."""
        ids = self.id_map()
        lookup = np.concatenate([[0], self.class_ids]).astype(np.uint8)
        return lookup[ids]


def split_objects(logits: Any, postprocess: dict[str, Any]) -> InstancePrediction:
    """Objects from a bottom-up network's logits (C + 1, H, W) (torch tensor): channel 0 background,
    1..C-1 class interiors, C boundary.

    Seeds are the connected interiors (argmax on a class channel) and the foreground blobs that
    contain no interior (objects thinner than the boundary rim); a watershed over
    1 - P(interior) grows each seed over the pixels argmax calls foreground or boundary, so touching
    objects meet at their shared boundary. Class: the interior channel with the most probability
    mass in the object; score: the object's mean foreground probability (1 - P(background)).
    Objects under ``min_area`` px or ``min_score`` are dropped.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    probs = logits.detach().float().softmax(dim=0).cpu().numpy()
    boundary = probs.shape[0] - 1
    winner = probs.argmax(axis=0)
    interior = (winner > 0) & (winner < boundary)
    seeds, n = ndimage.label(interior)
    # A foreground blob without any interior (an object smaller than the boundary rim is wide) is an
    # object of its own; the watershed would leave it unlabelled.
    blobs, _ = ndimage.label(winner > 0)
    orphans, extra = ndimage.label(np.isin(blobs, np.unique(blobs[seeds > 0]), invert=True) & (blobs > 0))
    seeds = np.where(orphans > 0, orphans + n, seeds)
    n += extra
    if n == 0:
        return InstancePrediction.of(np.zeros((0, *winner.shape), bool), np.zeros(0), np.zeros(0))
    inside = probs[1:boundary].sum(axis=0)
    labels = watershed(1.0 - inside, markers=seeds, mask=winner > 0)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    foreground = np.bincount(flat, weights=(1.0 - probs[0]).ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    mass = np.stack([np.bincount(flat, weights=probs[c].ravel(), minlength=n + 1)[1:] for c in range(1, boundary)])
    classes = mass.argmax(axis=0) + 1
    keep = (area >= int(postprocess.get("min_area", 1))) & (foreground >= float(postprocess.get("min_score", 0.0)))
    ids = np.flatnonzero(keep) + 1
    masks = labels[None] == ids[:, None, None]
    return InstancePrediction.of(masks, classes[keep], foreground[keep])


def from_detections(detections: dict[str, Any], mask_threshold: float = 0.5) -> InstancePrediction:
    """Objects from a Mask R-CNN output dict (``masks`` (K, 1, H, W) in 0..1, ``labels``, ``scores``)."""
    masks = detections["masks"][:, 0].detach().cpu().numpy() >= mask_threshold
    return InstancePrediction.of(masks, detections["labels"].cpu().numpy(), detections["scores"].detach().cpu().numpy())


def predictions_from_output(model: Any, output: Any, postprocess: dict[str, Any] | None = None
                            ) -> list[InstancePrediction]:
    """Instance predictions from a batch of model output: Mask R-CNN's list of dicts, or (N, C + 1, H, W) logits."""
    if getattr(model, "output_kind", "logits") == "detections":
        return [from_detections(d) for d in output]
    settings = postprocess if postprocess is not None else model.postprocess
    return [split_objects(lg, settings) for lg in output]


def coco_results(image_id: int | str, prediction: InstancePrediction) -> list[dict[str, Any]]:
    """COCO results entries (``image_id``, ``category_id`` = class id, compressed RLE ``segmentation``,
    ``bbox`` xywh, ``score``) of one image's prediction."""
    from masklab.data.rle import encode_rle
    from masklab.tasks.instance_data import boxes_of

    boxes = boxes_of(prediction.masks)
    return [{"image_id": image_id, "category_id": int(c), "segmentation": encode_rle(m), "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for m, c, s, b in zip(prediction.masks, prediction.class_ids, prediction.scores, boxes)]
