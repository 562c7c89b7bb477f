"""Losses from config: cross-entropy, Dice, focal and weighted sums of them.

Every term honours ``ignore_index``: pixels with that mask value contribute nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from masklab.errors import UserError

LOSS_NAMES = ("ce", "dice", "focal")


class WeightedLoss(nn.Module):
    """Sum of ``weight * loss(logits, target)`` over named terms. logits (N, C, H, W), target (N, H, W) int64."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        for name, term in self.terms.items():
            total = total + self.weights[name] * term(logits, target)
        return total


def build_loss(
    terms: dict[str, float], ignore_index: int, focal_gamma: float = 2.0, class_weights: list[float] | None = None
) -> WeightedLoss:
    """Build a weighted loss, e.g. ``terms={"ce": 1.0, "dice": 1.0}``."""
    import segmentation_models_pytorch as smp

    unknown = sorted(set(terms) - set(LOSS_NAMES))
    if unknown or not terms:
        raise UserError(f"loss terms {sorted(terms)}: unknown {unknown}; expected a non-empty subset of {LOSS_NAMES}")
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    factories = {
        "ce": lambda: nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index),
        "dice": lambda: smp.losses.DiceLoss(mode="multiclass", ignore_index=ignore_index, from_logits=True),
        "focal": lambda: smp.losses.FocalLoss(mode="multiclass", ignore_index=ignore_index, gamma=focal_gamma),
    }
    modules = {name: factories[name]() for name in terms}
    return WeightedLoss(modules, {k: float(v) for k, v in terms.items()})
