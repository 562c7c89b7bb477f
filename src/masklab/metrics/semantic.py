"""Semantic-segmentation scores from confusion matrices: IoU, Dice and pixel accuracy.

Everything is derived from a confusion matrix ``cm[gt, pred]`` (rows = ground-truth class,
columns = predicted class) built with a single ``torch.bincount`` on the inputs' device.
Pixels whose target equals ``ignore_index`` are never counted.

Two kinds of averages are reported:

* **pooled** (``mIoU``, ``mDice``, ``pixel_acc``, ``iou``, ``dice``): one confusion matrix summed
  over the whole dataset, scores computed once from it. Large images weigh more.
* **per image** (``*_image``): scores computed for each image, then averaged over images.

Absent-class rule
-----------------
For a class ``c`` in one confusion matrix let ``TP``, ``FP``, ``FN`` be its counts and
``union = TP + FP + FN``.

* ``union == 0`` (absent from both ground truth and prediction): IoU and Dice are **NaN** and the
  class is left out of every mean (``miou``/``mdice`` use ``nanmean``; the per-image class means
  only count images where the class was scored). Nothing was there to get right or wrong.
* ``TP == 0`` but ``FP > 0`` (predicted, absent from ground truth): IoU and Dice are **0**. A
  hallucinated class is an error and must pull the mean down.
* ``miou``/``mdice`` are NaN when every class is NaN; ``pixel_acc`` is NaN when there are no valid
  (non-ignored) pixels. Such an image (e.g. all ignore) is skipped in the per-image means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric

__all__ = [
    "SemanticMetrics",
    "confusion_matrix",
    "named_scalars",
    "per_image_confusion",
    "per_image_scores",
    "scores_from_confusion",
]


def _bincount_indices(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate inputs and return ``(target * C + pred, valid)`` as int64, both shaped like target.

    Raises ValueError on shape mismatch or on class values outside ``[0, C)`` at non-ignored pixels.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must hold integer class indices (pass logits as (N, C, H, W) to update())")
    # int64 before any arithmetic: bin indices n*C*C + t*C + p overflow uint8/int16 masks quickly.
    target = target.long()
    pred = pred.to(device=target.device, dtype=torch.long)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    bad_target = valid & ((target < 0) | (target >= num_classes))
    bad_pred = valid & ((pred < 0) | (pred >= num_classes))
    # One host sync for both checks; out-of-range values would otherwise land in a wrong bin silently.
    if bool((bad_target.any() | bad_pred.any()).item()):
        if bad_target.any():
            values = torch.unique(target[bad_target]).tolist()
            raise ValueError(
                f"target has values {values} outside [0, {num_classes}) that are not ignore_index={ignore_index}"
            )
        values = torch.unique(pred[bad_pred]).tolist()
        raise ValueError(f"pred has values {values} outside [0, {num_classes}) at non-ignored pixels")
    return target * num_classes + pred, valid


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> torch.Tensor:
    """Pooled confusion matrix.

    pred, target: (N, H, W) (any shape, equal) integer class indices.
    Returns (C, C) int64 on target's device; ``cm[gt, pred]`` counts pixels, ignored pixels excluded.
    """
    idx, valid = _bincount_indices(pred, target, num_classes, ignore_index)
    n_bins = num_classes * num_classes
    # Ignored pixels go to an extra sentinel bin that is dropped: keeps shapes static (no boolean
    # indexing, which would force a device sync) and handles negative ignore values like -100.
    idx = torch.where(valid, idx, n_bins)
    counts = torch.bincount(idx.reshape(-1), minlength=n_bins + 1)
    return counts[:n_bins].reshape(num_classes, num_classes)


def per_image_confusion(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> torch.Tensor:
    """One confusion matrix per image.

    pred, target: (N, H, W) (any shape with leading N, equal) integer class indices.
    Returns (N, C, C) int64 on target's device, ``cm[n, gt, pred]``.
    """
    if target.ndim < 1:
        raise ValueError("per_image_confusion needs a leading image dimension")
    idx, valid = _bincount_indices(pred, target, num_classes, ignore_index)
    n_images = target.shape[0]
    n_bins = num_classes * num_classes
    offsets = torch.arange(n_images, device=idx.device, dtype=torch.long) * n_bins
    idx = idx.reshape(n_images, -1) + offsets[:, None]
    sentinel = n_images * n_bins
    idx = torch.where(valid.reshape(n_images, -1), idx, sentinel)
    counts = torch.bincount(idx.reshape(-1), minlength=sentinel + 1)
    return counts[:sentinel].reshape(n_images, num_classes, num_classes)


def scores_from_confusion(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """IoU, Dice and pixel accuracy from confusion matrices, following the absent-class rule.

    cm: (..., C, C) counts, ``cm[..., gt, pred]``.
    Returns float64 tensors: ``iou``, ``dice`` (..., C); ``miou``, ``mdice``, ``pixel_acc`` (...).
    """
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"cm must have shape (..., C, C), got {tuple(cm.shape)}")
    # float64: exact for integer counts up to 2**53, and means over many images stay accurate.
    cm = cm.to(torch.float64)
    tp = torch.diagonal(cm, dim1=-2, dim2=-1)
    fp = cm.sum(dim=-2) - tp  # predicted as c, ground truth is another class
    fn = cm.sum(dim=-1) - tp  # ground truth is c, predicted as another class
    union = tp + fp + fn
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=cm.device)
    scored = union > 0
    # where() on a safe denominator: no 0/0 warnings and NaN only where the rule says so.
    safe_union = torch.where(scored, union, 1.0)
    iou = torch.where(scored, tp / safe_union, nan)
    dice = torch.where(scored, 2 * tp / torch.where(scored, 2 * tp + fp + fn, 1.0), nan)
    total = cm.sum(dim=(-2, -1))
    pixel_acc = torch.where(total > 0, tp.sum(dim=-1) / torch.where(total > 0, total, 1.0), nan)
    return {
        "iou": iou,
        "dice": dice,
        "miou": torch.nanmean(iou, dim=-1),
        "mdice": torch.nanmean(dice, dim=-1),
        "pixel_acc": pixel_acc,
    }


def per_image_scores(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> dict[str, torch.Tensor]:
    """Scores of each image (for per-sample tables).

    pred, target: (N, H, W) integer class indices.
    Returns float64 ``iou``, ``dice`` (N, C); ``miou``, ``mdice``, ``pixel_acc`` (N,).
    """
    return scores_from_confusion(per_image_confusion(pred, target, num_classes, ignore_index))


class SemanticMetrics(Metric):
    """Dataset-level semantic scores, pooled and per-image averaged, accumulated as on-device sums.

    ``update(pred, target)``: target (N, H, W) integer; pred (N, H, W) class indices or
    (N, C, H, W) logits/probabilities (argmax over dim 1). ``compute()`` returns a flat dict:
    floats ``mIoU``, ``mDice``, ``pixel_acc``, ``mIoU_image``, ``mDice_image``, ``pixel_acc_image``
    and float64 (C,) tensors ``iou``, ``dice``, ``iou_image``, ``dice_image``.
    """

    is_differentiable = False
    higher_is_better = True
    # States are pure sums, so forward() may update a fresh copy and merge it.
    full_state_update = False

    confmat: torch.Tensor
    iou_image_sum: torch.Tensor
    dice_image_sum: torch.Tensor
    class_image_count: torch.Tensor
    miou_image_sum: torch.Tensor
    mdice_image_sum: torch.Tensor
    pixel_acc_image_sum: torch.Tensor
    image_count: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None,
        class_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class_names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        c = num_classes
        f64, i64 = torch.float64, torch.long
        self.add_state("confmat", torch.zeros(c, c, dtype=i64), dist_reduce_fx="sum")
        # Per-image averages are kept as sum + count so that they reduce across processes by summing.
        self.add_state("iou_image_sum", torch.zeros(c, dtype=f64), dist_reduce_fx="sum")
        self.add_state("dice_image_sum", torch.zeros(c, dtype=f64), dist_reduce_fx="sum")
        self.add_state("class_image_count", torch.zeros(c, dtype=i64), dist_reduce_fx="sum")
        self.add_state("miou_image_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("mdice_image_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("pixel_acc_image_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("image_count", torch.zeros((), dtype=i64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. target: (N, H, W); pred: (N, H, W) indices or (N, C, H, W) scores."""
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"logits have {pred.shape[1]} channels, expected num_classes={self.num_classes}")
            pred = pred.argmax(dim=1)
        cms = per_image_confusion(pred, target, self.num_classes, self.ignore_index)
        # Pooled matrix is the sum of the per-image ones: one bincount per batch, not two.
        self.confmat += cms.sum(dim=0)
        s = scores_from_confusion(cms)
        scored = ~torch.isnan(s["iou"])  # (N, C); iou and dice are NaN at the same places
        self.iou_image_sum += torch.where(scored, s["iou"], 0.0).sum(dim=0)
        self.dice_image_sum += torch.where(scored, s["dice"], 0.0).sum(dim=0)
        self.class_image_count += scored.sum(dim=0)
        # An image with any valid pixel has a scored class, so mIoU/mDice/pixel_acc are all finite
        # exactly there; all-ignore images are skipped.
        has_pixels = ~torch.isnan(s["pixel_acc"])
        self.miou_image_sum += torch.where(has_pixels, s["miou"], 0.0).sum()
        self.mdice_image_sum += torch.where(has_pixels, s["mdice"], 0.0).sum()
        self.pixel_acc_image_sum += torch.where(has_pixels, s["pixel_acc"], 0.0).sum()
        self.image_count += has_pixels.sum()

    def compute(self) -> dict[str, float | torch.Tensor]:
        """Reduce the sums once; see the class docstring for the keys."""
        pooled = scores_from_confusion(self.confmat)
        n_img = self.image_count.to(torch.float64)
        n_cls = self.class_image_count.to(torch.float64)
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.confmat.device)

        def mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
            return torch.where(count > 0, total / count.clamp(min=1), nan)

        return {
            "mIoU": pooled["miou"].item(),
            "mDice": pooled["mdice"].item(),
            "pixel_acc": pooled["pixel_acc"].item(),
            "mIoU_image": mean(self.miou_image_sum, n_img).item(),
            "mDice_image": mean(self.mdice_image_sum, n_img).item(),
            "pixel_acc_image": mean(self.pixel_acc_image_sum, n_img).item(),
            "iou": pooled["iou"],
            "dice": pooled["dice"],
            "iou_image": mean(self.iou_image_sum, n_cls),
            "dice_image": mean(self.dice_image_sum, n_cls),
        }

    def named_scalars(self, result: dict[str, float | torch.Tensor], prefix: str) -> dict[str, float]:
        """:func:`named_scalars` with this metric's class names."""
        return named_scalars(result, prefix, self.class_names)


_SCALAR_KEYS = ("mIoU", "mDice", "pixel_acc", "mIoU_image", "mDice_image", "pixel_acc_image")
_PER_CLASS_KEYS = ("iou", "dice")


def named_scalars(
    result: dict[str, float | torch.Tensor], prefix: str, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Flatten a :meth:`SemanticMetrics.compute` result to logging names, dropping NaN values.

    Keys: ``{prefix}/mIoU`` ... ``{prefix}/pixel_acc_image``, then ``{prefix}/iou/{name}`` and
    ``{prefix}/dice/{name}`` per class (pooled). Class names default to the class index.
    """
    head = f"{prefix}/" if prefix else ""
    out: dict[str, float] = {}
    for key in _SCALAR_KEYS:
        if key in result:
            value = float(result[key])
            if not math.isnan(value):
                out[head + key] = value
    for key in _PER_CLASS_KEYS:
        if key not in result:
            continue
        values = torch.as_tensor(result[key]).detach().cpu().tolist()
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(values))]
        if len(names) != len(values):
            raise ValueError(f"got {len(names)} class names for {len(values)} classes in {key!r}")
        for name, value in zip(names, values):
            if not math.isnan(value):
                out[f"{head}{key}/{name}"] = float(value)
    return out
