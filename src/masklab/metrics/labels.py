"""Class-index maps: from per-pixel class scores to class indices, and the check every metric applies to them
(torch only: the inference path imports it)."""

from __future__ import annotations

import torch


def argmax_classes(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The class index of the highest score along ``dim`` (the first on ties, like ``argmax``).

    ``max(dim).indices`` gives the same indices as ``argmax(dim)`` but is 10-17x faster on CPU when
    ``dim`` is not the last one (measured on (1, 2..5, 1000, 1200) logits, torch 2.14): at original
    image resolution the argmax otherwise costs more than the rest of the evaluation."""
    return scores.max(dim=dim).indices


def checked_labels(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate inputs and return ``(target, pred, valid)``: int64 target and pred, bool valid, all shaped alike.

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
    return target, pred, valid
