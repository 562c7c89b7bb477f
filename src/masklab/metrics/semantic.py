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

Boundary IoU (optional, see :mod:`masklab.metrics.boundary`) follows the same rule with the
boundary union: a class whose boundary union is 0 is NaN and left out of the means, and an image
with no scored class is skipped in ``mBoundaryIoU_image``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from masklab.metrics.boundary import (
    DEFAULT_IGNORE_CONVENTION,
    _boundary_counts_checked,
    boundary_dilation,
    boundary_iou_from_counts,
    check_ignore_convention,
)
from masklab.metrics.labels import argmax_classes, checked_labels

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
    """Validate inputs and return ``(target * C + pred, valid)`` as int64, both shaped like target."""
    target, pred, valid = checked_labels(pred, target, num_classes, ignore_index)
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
    target, pred, valid = checked_labels(pred, target, num_classes, ignore_index)
    return _per_image_confusion_checked(target, pred, valid, num_classes)


def _per_image_confusion_checked(
    target: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """:func:`per_image_confusion` on inputs already through :func:`checked_labels`."""
    idx = target * num_classes + pred
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


def _boundary_d(target: torch.Tensor, dilation_ratio: float) -> int:
    if target.ndim != 3:
        raise ValueError(f"boundary scores need (N, H, W) pred and target, got {tuple(target.shape)}")
    return boundary_dilation(target.shape[-2], target.shape[-1], dilation_ratio)


def per_image_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None,
    boundary: bool = False,
    dilation_ratio: float = 0.02,
    boundary_ignore: str = DEFAULT_IGNORE_CONVENTION,
) -> dict[str, torch.Tensor]:
    """Scores of each image (for per-sample tables).

    pred, target: (N, H, W) integer class indices.
    Returns float64 ``iou``, ``dice`` (N, C); ``miou``, ``mdice``, ``pixel_acc`` (N,); and the raw
    int64 (N, C) counts of the per-image confusion matrices: ``tp``, ``fp``, ``fn``,
    ``true_area`` (= tp + fn, ground-truth pixels) and ``pred_area`` (= tp + fp, predicted pixels),
    and those matrices themselves as int64 ``confusion`` (N, C, C) (rows = ground truth).
    With ``boundary=True`` also float64 ``boundary_iou`` (N, C), ``boundary_miou`` (N,) and int64
    ``boundary_intersection``, ``boundary_union`` (N, C) (see :mod:`masklab.metrics.boundary`; ``boundary_ignore``
    is its convention for void pixels near a contour).
    """
    if target.ndim < 1:
        raise ValueError("per_image_scores needs a leading image dimension")
    d = _boundary_d(target, dilation_ratio) if boundary else 0
    target, pred, valid = checked_labels(pred, target, num_classes, ignore_index)
    cms = _per_image_confusion_checked(target, pred, valid, num_classes)
    out = scores_from_confusion(cms)
    tp = torch.diagonal(cms, dim1=-2, dim2=-1)
    true_area = cms.sum(dim=-1)
    pred_area = cms.sum(dim=-2)
    out.update(tp=tp, fp=pred_area - tp, fn=true_area - tp, true_area=true_area, pred_area=pred_area, confusion=cms)
    if boundary:
        inter, union = _boundary_counts_checked(target, pred, valid, num_classes, d,
                                                check_ignore_convention(boundary_ignore))
        biou = boundary_iou_from_counts(inter, union)
        out.update(
            boundary_iou=biou,
            boundary_miou=torch.nanmean(biou, dim=-1),
            boundary_intersection=inter,
            boundary_union=union,
        )
    return out


class SemanticMetrics(Metric):
    """Dataset-level semantic scores, pooled and per-image averaged, accumulated as on-device sums.

    ``update(pred, target)``: target (N, H, W) integer; pred (N, H, W) class indices or
    (N, C, H, W) logits/probabilities (argmax over dim 1). ``compute()`` returns a flat dict:
    floats ``mIoU``, ``mDice``, ``pixel_acc``, ``mIoU_image``, ``mDice_image``, ``pixel_acc_image``
    and float64 (C,) tensors ``iou``, ``dice``, ``iou_image``, ``dice_image``.

    ``boundary=True`` adds Boundary IoU with band width ``boundary_dilation(H, W, dilation_ratio)``
    (per batch, from its image size): float ``mBoundaryIoU`` (pooled: intersections and unions
    summed over the dataset), ``mBoundaryIoU_image`` and float64 (C,) ``boundary_iou``,
    ``boundary_iou_image``; ``boundary_ignore`` is the convention for void pixels near a contour
    (:data:`masklab.metrics.boundary.IGNORE_CONVENTIONS`).
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
    # only with boundary=True
    boundary_inter: torch.Tensor
    boundary_union: torch.Tensor
    boundary_iou_image_sum: torch.Tensor
    boundary_class_image_count: torch.Tensor
    mboundary_iou_image_sum: torch.Tensor
    boundary_image_count: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None,
        class_names: Sequence[str] | None = None,
        boundary: bool = False,
        dilation_ratio: float = 0.02,
        boundary_ignore: str = DEFAULT_IGNORE_CONVENTION,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        boundary_dilation(1, 1, dilation_ratio)  # validates the ratio now rather than at the first update
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class_names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary = boundary
        self.dilation_ratio = dilation_ratio
        self.boundary_ignore = check_ignore_convention(boundary_ignore)
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
        if boundary:  # only then: a boundary-free metric keeps exactly its old states
            self.add_state("boundary_inter", torch.zeros(c, dtype=i64), dist_reduce_fx="sum")
            self.add_state("boundary_union", torch.zeros(c, dtype=i64), dist_reduce_fx="sum")
            self.add_state("boundary_iou_image_sum", torch.zeros(c, dtype=f64), dist_reduce_fx="sum")
            self.add_state("boundary_class_image_count", torch.zeros(c, dtype=i64), dist_reduce_fx="sum")
            self.add_state("mboundary_iou_image_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
            self.add_state("boundary_image_count", torch.zeros((), dtype=i64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor | None = None, target: torch.Tensor | None = None,
               counts: dict[str, torch.Tensor] | None = None) -> None:
        """Add a batch. target: (N, H, W); pred: (N, H, W) indices or (N, C, H, W) scores.

        Or ``counts``: what :func:`per_image_scores` returned for the batch (its ``confusion``
        (N, C, C) and, with boundary scores, ``boundary_intersection`` / ``boundary_union`` (N, C)),
        so an evaluation that needs both per-image rows and dataset scores counts every pixel once.
        """
        if counts is not None:
            if self.boundary and "boundary_intersection" not in counts:
                raise ValueError("this SemanticMetrics scores boundaries: counts need boundary_intersection and "
                                 "boundary_union (per_image_scores(..., boundary=True))")
            self._accumulate(counts["confusion"], counts.get("boundary_intersection"), counts.get("boundary_union"))
            return
        if pred is None or target is None:
            raise ValueError("update needs pred and target, or counts")
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"logits have {pred.shape[1]} channels, expected num_classes={self.num_classes}")
            pred = argmax_classes(pred)
        d = _boundary_d(target, self.dilation_ratio) if self.boundary else 0
        # Validate once; the confusion matrices and the boundary counts share the checked tensors.
        target, pred, valid = checked_labels(pred, target, self.num_classes, self.ignore_index)
        cms = _per_image_confusion_checked(target, pred, valid, self.num_classes)
        inter, union = _boundary_counts_checked(target, pred, valid, self.num_classes, d, self.boundary_ignore) \
            if self.boundary else (None, None)
        self._accumulate(cms, inter, union)

    def _accumulate(self, cms: torch.Tensor, inter: torch.Tensor | None, union: torch.Tensor | None) -> None:
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
        if self.boundary:
            self.boundary_inter += inter.sum(dim=0)
            self.boundary_union += union.sum(dim=0)
            biou = boundary_iou_from_counts(inter, union)
            b_scored = ~torch.isnan(biou)
            self.boundary_iou_image_sum += torch.where(b_scored, biou, 0.0).sum(dim=0)
            self.boundary_class_image_count += b_scored.sum(dim=0)
            # Image mean over its scored classes; images without any are skipped.
            b_has = b_scored.any(dim=-1)
            self.mboundary_iou_image_sum += torch.where(b_has, torch.nanmean(biou, dim=-1), 0.0).sum()
            self.boundary_image_count += b_has.sum()

    def compute(self) -> dict[str, float | torch.Tensor]:
        """Reduce the sums once; see the class docstring for the keys."""
        pooled = scores_from_confusion(self.confmat)
        n_img = self.image_count.to(torch.float64)
        n_cls = self.class_image_count.to(torch.float64)
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.confmat.device)

        def mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
            return torch.where(count > 0, total / count.clamp(min=1), nan)

        result: dict[str, float | torch.Tensor] = {
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
        if self.boundary:
            biou = boundary_iou_from_counts(self.boundary_inter, self.boundary_union)
            result["mBoundaryIoU"] = torch.nanmean(biou).item()
            result["mBoundaryIoU_image"] = mean(
                self.mboundary_iou_image_sum, self.boundary_image_count.to(torch.float64)
            ).item()
            result["boundary_iou"] = biou
            result["boundary_iou_image"] = mean(
                self.boundary_iou_image_sum, self.boundary_class_image_count.to(torch.float64)
            )
        return result

    def named_scalars(self, result: dict[str, float | torch.Tensor], prefix: str) -> dict[str, float]:
        """:func:`named_scalars` with this metric's class names."""
        return named_scalars(result, prefix, self.class_names)


_SCALAR_KEYS = (
    "mIoU",
    "mDice",
    "pixel_acc",
    "mIoU_image",
    "mDice_image",
    "pixel_acc_image",
    "mBoundaryIoU",
    "mBoundaryIoU_image",
)
_PER_CLASS_KEYS = ("iou", "dice", "boundary_iou")


def named_scalars(
    result: dict[str, float | torch.Tensor], prefix: str, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Flatten a :meth:`SemanticMetrics.compute` result to logging names, dropping NaN values.

    Keys: ``{prefix}/mIoU`` ... ``{prefix}/pixel_acc_image`` (and ``{prefix}/mBoundaryIoU``,
    ``{prefix}/mBoundaryIoU_image`` when present), then ``{prefix}/iou/{name}``, ``{prefix}/dice/{name}``
    (and ``{prefix}/boundary_iou/{name}``) per class (pooled). Class names default to the class index.
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
