"""Strategies and budgets: what ranks the pool, and how many images (or pixels) a round may take."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from masklab.active.uncertainty import AGGREGATIONS, PIXEL_MEASURES
from masklab.errors import UserError

# name -> what it needs: "probs" (class probabilities of each pool image), "mc" (MC-dropout samples),
# "embeddings" (the model's encoder features of pool and labelled images)
STRATEGIES = {
    "random": (),
    "entropy": ("probs",),
    "margin": ("probs",),
    "least_confidence": ("probs",),
    "bald": ("mc",),
    "coreset": ("embeddings",),
    "hybrid": ("probs", "embeddings"),
    "regions": ("probs",),
}
UNITS = ("images", "pixels")


@dataclass(frozen=True)
class Strategy:
    """``name``: one of STRATEGIES; ``measure``: the pixel measure hybrid and regions use (the uncertainty
    strategies use their own name); ``aggregate``: how an image's pixels become its score; ``top_fraction``:
    for aggregate=top; ``mc_samples``: dropout passes for bald; ``patch``: region side in px; ``seed``: for
    random, the core-set's first pick and k-means."""

    name: str = "entropy"
    measure: str = "entropy"
    aggregate: str = "mean"
    top_fraction: float = 0.1
    mc_samples: int = 8
    patch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise UserError(f"strategy={self.name}: expected one of {list(STRATEGIES)}")
        if self.measure not in PIXEL_MEASURES or self.measure == "bald":
            raise UserError(f"measure={self.measure}: expected entropy, margin or least_confidence")
        if self.aggregate not in AGGREGATIONS:
            raise UserError(f"aggregate={self.aggregate}: expected one of {list(AGGREGATIONS)}")
        if not 0 < float(self.top_fraction) <= 1:
            raise UserError(f"top_fraction={self.top_fraction}: expected a share of pixels in (0, 1]")
        if int(self.mc_samples) < 2:
            raise UserError(f"mc_samples={self.mc_samples}: BALD needs at least 2 dropout passes")
        if int(self.patch) < 8:
            raise UserError(f"patch={self.patch}: expected a region side of at least 8 px")

    @property
    def needs(self) -> tuple[str, ...]:
        return STRATEGIES[self.name]

    @property
    def pixel_measure(self) -> str:
        """The pixel measure this strategy scores with."""
        return self.name if self.name in PIXEL_MEASURES else self.measure

    def describe(self) -> str:
        if self.name in ("random", "coreset"):
            return self.name
        how = f"top {self.top_fraction:g}" if self.aggregate == "top" else self.aggregate
        region = f", {self.patch} px patches" if self.name == "regions" else ""
        return f"{self.name} ({self.pixel_measure}, {how}{region})"


def check_budget(budget: float, unit: str) -> float:
    if unit not in UNITS:
        raise UserError(f"budget_unit={unit}: expected one of {list(UNITS)}")
    if not float(budget) > 0 or (unit == "images" and float(budget) != int(budget)):
        what = "whole number of images" if unit == "images" else "number of pixels"
        raise UserError(f"budget={budget}: expected a positive {what}")
    return float(budget)


def take_within_budget(order: Sequence[int], costs: Sequence[float], budget: float, unit: str) -> list[int]:
    """The leading items of ``order`` that fit: ``budget`` items (unit images) or items whose ``costs`` (px)
    add up to at most ``budget`` (unit pixels; an item that does not fit is skipped, a smaller later one may)."""
    if unit == "images":
        return list(order)[: int(budget)]
    taken, spent = [], 0.0
    for i in order:
        if spent + float(costs[i]) <= budget:
            taken.append(int(i))
            spent += float(costs[i])
    return taken


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties by position (stable): deterministic for equal scores."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")
