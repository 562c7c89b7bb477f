"""Boundary IoU (Cheng et al., CVPR 2021), computed on-device for all classes at once.

For a binary mask ``M`` of an ``H x W`` image the *boundary region* is the set of pixels of ``M``
within distance ``d`` of its contour, with ``d = boundary_dilation(H, W, ratio)``
``= max(1, round(ratio * sqrt(H**2 + W**2)))``. Distance is the chessboard distance and pixels
on the image border count as contour: this is exactly what the reference implementation does
(zero-pad by 1, erode ``d`` times with a 3x3 kernel, take ``mask - eroded``).

For class ``c`` with ``G = (target == c)``, ``P = (pred == c)`` and boundary regions ``Gb``, ``Pb``::

    BoundaryIoU(c) = |Gb & Pb| / |Gb | Pb|

Pixels whose target is ``ignore_index`` (void) are never counted (as for IoU). Where they lie near
a contour, three conventions exist (``ignore=``, :data:`IGNORE_CONVENTIONS`):

- ``exclude`` (default): no pixel within distance ``d`` of a void pixel is scored, for ``G`` and ``P``
  alike. A void region neither creates nor hides a contour: the score judges only contours drawn
  away from void. The prediction under void is never looked at.
- ``raw``: ``P``'s contours come from the raw prediction (also under void); ``G``'s treat void as
  "not class c"; void pixels are dropped from both bands (detectron2's ``SemSegEvaluator``).
- ``hide``: void is "not class c" for ``G`` and for ``P`` alike (masklab before v3): every void edge
  is a contour of both masks, so a prediction that runs a class up to the void edge gets boundary
  agreement it never drew.

With ``exclude`` and ``hide``, a prediction right on every scored pixel scores 1. A class whose
boundary union is 0 is NaN (the absent-class rule of :mod:`masklab.metrics.semantic`).

All classes share one band computation: a pixel lies in the boundary region of *its own* label
iff some pixel within chessboard distance ``d`` has a different label or the window leaves the
image, i.e. iff the window max or the window min of the label map differs from its label.
"""

from __future__ import annotations

import math

import torch

from masklab.metrics.labels import checked_labels

__all__ = ["DEFAULT_IGNORE_CONVENTION", "IGNORE_CONVENTIONS", "boundary_band", "boundary_counts", "boundary_dilation",
           "boundary_iou_from_counts", "check_ignore_convention"]

# How void (ignore_index) pixels near a contour are treated; the first is the default (module docstring).
IGNORE_CONVENTIONS = ("exclude", "raw", "hide")
DEFAULT_IGNORE_CONVENTION = IGNORE_CONVENTIONS[0]


def check_ignore_convention(ignore: str) -> str:
    """``ignore`` if it names a convention of :data:`IGNORE_CONVENTIONS`, else ValueError naming them."""
    if ignore not in IGNORE_CONVENTIONS:
        raise ValueError(f"boundary_ignore={ignore!r}: expected one of {list(IGNORE_CONVENTIONS)}")
    return ignore


def boundary_dilation(height: int, width: int, ratio: float = 0.02) -> int:
    """Band width in pixels: ``max(1, round(ratio * image diagonal))`` (round half to even, as the reference)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if not ratio >= 0:  # also rejects NaN
        raise ValueError(f"dilation_ratio must be >= 0, got {ratio}")
    return max(1, int(round(ratio * math.sqrt(height * height + width * width))))


def _window_max(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Max over every window of ``k`` consecutive entries along ``dim`` (that dim shrinks by k - 1).

    Doubles the covered span each step (1, 2, 4, ... then one overlapping last step): ceil(log2 k)
    elementwise maxima instead of a k-tap pool. Overlaps are harmless because max is idempotent.
    """
    span = 1
    while span < k:  # invariant: x[i] = max(input[i : i + span])
        step = min(span, k - span)
        n = x.shape[dim]
        x = torch.maximum(x.narrow(dim, 0, n - step), x.narrow(dim, step, n - step))
        span += step
    return x


def boundary_band(labels: torch.Tensor, d: int) -> torch.Tensor:
    """Pixels that lie in the boundary region (width ``d``) of their own label.

    labels: (N, H, W) integer label map (any leading dims; any integer dtype, values unrestricted).
    Returns a bool tensor of the same shape: True where some pixel within chessboard distance ``d``
    has a different label, or the (2d+1)x(2d+1) window crosses the image border.
    ``(labels == c) & boundary_band(labels, d)`` is the boundary region of class ``c``.

    The window max and min are computed together, separably (H then W), in the labels' own dtype:
    the min as the max of the bitwise complement ``~x`` (= -x - 1: order-reversing, never overflows).
    Both maps are padded with the dtype's max, so a window that leaves the image has max(x) = max(~x)
    = dtype max, which no label equals on both sides. Cost does not depend on the number of classes.
    """
    if labels.ndim < 2:
        raise ValueError(f"labels must be (..., H, W), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError("labels must hold integer class indices")
    if d < 0:
        raise ValueError(f"d must be >= 0, got {d}")
    if labels.dtype == torch.bool:
        labels = labels.to(torch.uint8)
    both = torch.stack([labels, ~labels])
    h, w = labels.shape[-2:]
    padded = both.new_full((*both.shape[:-2], h + 2 * d, w + 2 * d), torch.iinfo(labels.dtype).max)
    padded[..., d : d + h, d : d + w] = both
    hi = _window_max(_window_max(padded, 2 * d + 1, -2), 2 * d + 1, -1)
    return (hi[0] != labels) | (hi[1] != both[1])


def _compact_dtype(num_classes: int) -> torch.dtype:
    # Labels are squeezed into [0, C]: the narrowest dtype makes the window passes cheapest.
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if num_classes <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def near_void(valid: torch.Tensor, d: int) -> torch.Tensor:
    """(N, H, W) bool: pixels with a void pixel (``~valid``) within chessboard distance ``d``."""
    h, w = valid.shape[-2:]
    padded = torch.zeros((*valid.shape[:-2], h + 2 * d, w + 2 * d), dtype=torch.uint8, device=valid.device)
    padded[..., d : d + h, d : d + w] = (~valid).to(torch.uint8)  # outside the image is not void
    return _window_max(_window_max(padded, 2 * d + 1, -2), 2 * d + 1, -1).bool()


def _boundary_counts_checked(
    target: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor, num_classes: int, d: int, ignore: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`boundary_counts` on already validated int64 (N, H, W) target/pred and bool valid."""
    c = num_classes
    n_images = target.shape[0]
    # Void pixels become the label C ("not any class") in the target's map, and in the prediction's unless it is
    # read raw. (Valid pixels hold classes in [0, C): checked by the caller; a raw prediction out of range is C.)
    t = torch.where(valid, target, c)
    if ignore == "raw":
        p = torch.where(valid | ((pred >= 0) & (pred < c)), pred, c)
    else:
        p = torch.where(valid, pred, c)
    band = boundary_band(torch.stack([t, p], dim=1).to(_compact_dtype(c)), d)  # one pass for both maps
    # exclude: a pixel whose d-window holds void is not scored (what void hides can be neither contour nor not)
    scored = valid & ~near_void(valid, d) if ignore == "exclude" else valid
    t_band = band[:, 0] & scored
    p_band = band[:, 1] & scored
    both = t_band & p_band & (t == p)

    offsets = (torch.arange(n_images, device=target.device, dtype=torch.long) * c).view(-1, 1, 1)
    sentinel = n_images * c  # dropped bin: keeps shapes static (no boolean indexing, no device sync)
    inter_idx = torch.where(both, offsets + t, sentinel)
    inter = torch.bincount(inter_idx.reshape(-1), minlength=sentinel + 1)[:sentinel]
    # Union: each pixel adds its target class if in Gb and its pred class if in Pb, once when they coincide.
    union_idx = torch.stack(
        [torch.where(t_band, offsets + t, sentinel), torch.where(p_band & ~both, offsets + p, sentinel)]
    )
    union = torch.bincount(union_idx.reshape(-1), minlength=sentinel + 1)[:sentinel]
    return inter.reshape(n_images, c), union.reshape(n_images, c)


def boundary_counts(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None,
    dilation_ratio: float = 0.02,
    ignore: str = DEFAULT_IGNORE_CONVENTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary intersection and union pixel counts per image and class.

    pred, target: (N, H, W) integer class indices (validated like the confusion matrix inputs).
    Returns ``(intersection, union)``, both (N, C) int64 on target's device, with
    ``d = boundary_dilation(H, W, dilation_ratio)``. Ignored pixels are never counted; ``ignore``
    says how they bear on the contours near them (module docstring).
    """
    if target.ndim != 3:
        raise ValueError(f"pred and target must be (N, H, W), got {tuple(target.shape)}")
    check_ignore_convention(ignore)
    target, pred, valid = checked_labels(pred, target, num_classes, ignore_index)
    d = boundary_dilation(target.shape[-2], target.shape[-1], dilation_ratio)
    return _boundary_counts_checked(target, pred, valid, num_classes, d, ignore)


def boundary_iou_from_counts(intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """float64 ``intersection / union``, NaN where ``union == 0`` (absent-class rule)."""
    inter = intersection.to(torch.float64)
    union = union.to(torch.float64)
    scored = union > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=union.device)
    return torch.where(scored, inter / torch.where(scored, union, 1.0), nan)
