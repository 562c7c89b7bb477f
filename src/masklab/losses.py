"""Losses from config: cross-entropy, Dice, focal and weighted sums of them.

Every term honours ``ignore_index``: pixels with that mask value contribute nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from masklab.errors import UserError

LOSS_NAMES = ("ce", "dice", "focal")
# loss.class_weights: a list, or how to derive one from the training masks' class pixel counts.
CLASS_WEIGHTINGS = {"auto": "median_frequency", "median_frequency": "median_frequency", "inverse_sqrt": "inverse_sqrt"}


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
    terms: dict[str, float], ignore_index: int, focal_gamma: float = 2.0, class_weights: list[float] | str | None = None
) -> WeightedLoss:
    """Build a weighted loss, e.g. ``terms={"ce": 1.0, "dice": 1.0}``."""
    import segmentation_models_pytorch as smp

    unknown = sorted(set(terms) - set(LOSS_NAMES))
    if unknown or not terms:
        raise UserError(f"loss terms {sorted(terms)}: unknown {unknown}; expected a non-empty subset of {LOSS_NAMES}")
    if class_weights and "ce" not in terms:
        raise UserError(f"loss.class_weights weights the ce term; the loss terms {sorted(terms)} have none (use "
                        "loss=ce or loss=ce_dice)")
    if isinstance(class_weights, str):
        raise UserError(f"loss.class_weights={class_weights!r} is resolved from the training masks by `masklab "
                        "train`; build_loss takes a list of numbers")
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    factories = {
        "ce": lambda: nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index),
        "dice": lambda: smp.losses.DiceLoss(mode="multiclass", ignore_index=ignore_index, from_logits=True),
        "focal": lambda: smp.losses.FocalLoss(mode="multiclass", ignore_index=ignore_index, gamma=focal_gamma),
    }
    modules = {name: factories[name]() for name in terms}
    return WeightedLoss(modules, {k: float(v) for k, v in terms.items()})


def balanced_class_weights(method: str, pixels: np.ndarray, present_in: np.ndarray) -> np.ndarray:
    """(C,) cross-entropy class weights from the training masks' pixel counts.

    ``median_frequency`` (``auto``; Eigen & Fergus 2015, SegNet): class c's frequency is its pixels over all
    labelled pixels of the masks where it appears (``present_in``), and its weight is the median frequency over
    the classes present divided by its own. ``inverse_sqrt``: one over the square root of each class's share of
    all labelled pixels, scaled so the median weight is 1 (milder). A class absent from the masks gets 1.
    """
    method = CLASS_WEIGHTINGS.get(method, method)
    if method not in CLASS_WEIGHTINGS.values():
        raise UserError(f"loss.class_weights={method!r}: expected a list of numbers, null, or one of "
                        f"{', '.join(CLASS_WEIGHTINGS)}")
    pixels = np.asarray(pixels, np.float64)
    present = pixels > 0
    weights = np.ones(len(pixels))
    if not present.any():
        return weights
    if method == "median_frequency":
        frequency = pixels[present] / np.asarray(present_in, np.float64)[present]
    else:
        frequency = np.sqrt(pixels[present] / pixels.sum())
    weights[present] = np.median(frequency) / frequency
    return weights
