"""Strategies and budgets: what ranks the pool, and how many images (or pixels) a round may take.

A strategy is an object of a class registered in :data:`STRATEGIES` under the name users choose it by
(``strategy=entropy``); it holds its own options and ranks a :class:`Pool` with :meth:`Strategy.rank`. The pool
is the workflow's (masklab.workflows.active_learning): it holds the model and computes, when a strategy asks,
each image's score (:class:`~masklab.active.uncertainty.PixelScoring`) and the encoder's embeddings.
``make_strategy("entropy", aggregate="top")`` builds the registered strategy of that name with those options.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

import numpy as np

from masklab.active.uncertainty import AGGREGATIONS, PIXEL_MEASURES, PixelScoring
from masklab.errors import UserError
from masklab.named import named, register_named

UNITS = ("images", "pixels")


# -- budgets ---------------------------------------------------------------------------------------------------
def check_budget(budget: float, unit: str) -> float:
    if unit not in UNITS:
        raise UserError(f"budget_unit={unit}: expected one of {list(UNITS)}")
    if not float(budget) > 0 or (unit == "images" and float(budget) != int(budget)):
        what = "whole number of images" if unit == "images" else "number of pixels"
        raise UserError(f"budget={budget}: expected a positive {what}")
    return float(budget)


def take_within_budget(order: Sequence[int] | np.ndarray, costs: Sequence[float] | np.ndarray, budget: float,
                       unit: str) -> list[int]:
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


# -- what a strategy reads and returns -------------------------------------------------------------------------
class Pool(Protocol):
    """The unlabelled samples a strategy ranks."""

    @property
    def samples(self) -> Sequence[Any]:
        """The samples, each with ``id``, ``width`` and ``height``."""

    @property
    def costs(self) -> np.ndarray:
        """(N,) float64 label cost of each sample in px (width x height)."""

    def scores(self, scoring: PixelScoring, on_map: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
        """(N,) scores of the samples; ``on_map(i, u)`` gets each sample's (h, w) float32 uncertainty map."""

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(pool vectors (N, D), labelled train vectors (M, D)): comparable unit rows of the model's encoder."""


@dataclass
class Ranking:
    """What a strategy made of a pool: ``scores`` (N,) (the selection table's score column), ``order`` (N,) pool
    indices best first, ``picked``: the pool indices within the budget, ``cost_px`` what they cost, ``regions``:
    the picked patches of a region query (a DataFrame: id, x0, y0, x1, y1, score, cost_px) or None."""

    scores: np.ndarray
    order: np.ndarray
    picked: list[int]
    cost_px: int
    regions: Any = None


def within_budget(scores: np.ndarray, order: np.ndarray, costs: np.ndarray, budget: float, unit: str) -> Ranking:
    """The Ranking that takes the leading samples of ``order`` that fit the budget."""
    picked = take_within_budget(order, costs, budget, unit)
    return Ranking(scores, order, picked, int(costs[picked].sum()) if picked else 0)


def diverse_count(budget: float, unit: str, costs: np.ndarray) -> int:
    """How many samples a diverse batch is chosen among: enough to fill the budget (for a pixel budget: images of
    the pool's mean size, twice over), at most the pool."""
    count = int(budget) if unit == "images" else int(np.ceil(budget / costs.mean())) * 2 + 1
    return min(len(costs), count)


# -- options ---------------------------------------------------------------------------------------------------
def _check_measure(measure: str) -> None:
    if measure not in PIXEL_MEASURES or measure == "bald":
        raise UserError(f"measure={measure}: expected entropy, margin or least_confidence")


def _check_aggregate(how: str) -> None:
    if how not in AGGREGATIONS:
        raise UserError(f"aggregate={how}: expected one of {list(AGGREGATIONS)}")


def _check_top_fraction(share: float) -> None:
    if not 0 < float(share) <= 1:
        raise UserError(f"top_fraction={share}: expected a share of pixels in (0, 1]")


def _check_mc_samples(passes: int) -> None:
    if int(passes) < 2:
        raise UserError(f"mc_samples={passes}: BALD needs at least 2 dropout passes")


def _check_patch(side: int) -> None:
    if int(side) < 8:
        raise UserError(f"patch={side}: expected a region side of at least 8 px")


# option -> its check, in the order a config's options are checked (``seed``: any integer)
OPTIONS: dict[str, Callable[[Any], None]] = {
    "measure": _check_measure, "aggregate": _check_aggregate, "top_fraction": _check_top_fraction,
    "mc_samples": _check_mc_samples, "patch": _check_patch, "seed": lambda seed: None,
}


# -- the registry ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Strategy(ABC):
    """What ranks the pool. ``seed``: for random, the core-set's first pick, k-means, MC dropout and the class
    weights' draw. Subclasses hold their own options (each checked as :data:`OPTIONS` says) and register with
    :func:`register_strategy`."""

    name: ClassVar[str]
    picks_regions: ClassVar[bool] = False  # picks patches of images, not whole images
    seed: int = 0

    def __post_init__(self) -> None:
        for option in fields(self):
            OPTIONS[option.name](getattr(self, option.name))

    @property
    def scoring(self) -> PixelScoring | None:
        """How the model scores each pool image for this strategy; None when it needs no class probabilities."""
        return None

    def describe(self) -> str:
        return self.name

    @abstractmethod
    def rank(self, pool: Pool, budget: float, unit: str) -> Ranking:
        """Rank ``pool`` and pick within ``budget`` (checked, in ``unit``)."""


# name -> strategy class, in the order the names are listed to users
STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class under its ``name`` (a class decorator); a second class under a taken name is a bug."""
    return register_named(STRATEGIES, cls, "strategy")


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class called ``name``; a UserError naming the known strategies otherwise."""
    return named(STRATEGIES, name, "strategy")


def make_strategy(name: str = "entropy", **options: Any) -> Strategy:
    """The strategy ``name`` with the options it takes among ``options`` (keys of :data:`OPTIONS`). Every option
    given is checked, used or not: a config sets them all, and a wrong value is a mistake either way."""
    cls = strategy_class(name)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"strategy options {unknown}: expected some of {list(OPTIONS)}")
    for option, check in OPTIONS.items():
        if option in options:
            check(options[option])
    own = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in own})


# -- the strategies --------------------------------------------------------------------------------------------
@register_strategy
@dataclass(frozen=True, kw_only=True)
class Random(Strategy):
    """A seeded random number per image: the baseline every simulation is read against."""

    name = "random"

    def rank(self, pool: Pool, budget: float, unit: str) -> Ranking:
        scores = np.random.default_rng(self.seed).random(len(pool.samples))
        return within_budget(scores, rank_order(scores), pool.costs, budget, unit)


@dataclass(frozen=True, kw_only=True)
class PixelStrategy(Strategy):
    """A strategy that scores each image by its pixels' uncertainty, aggregated (``top_fraction``: for
    aggregate=top); the most uncertain images first."""

    aggregate: str = "mean"
    top_fraction: float = 0.1

    @property
    def pixel_measure(self) -> str:
        """The pixel measure this strategy scores with: its own name unless it takes a ``measure``."""
        return self.name

    @property
    def scoring(self) -> PixelScoring:
        return PixelScoring(self.pixel_measure, self.aggregate, float(self.top_fraction), seed=self.seed)

    def how(self) -> str:
        return f"top {self.top_fraction:g}" if self.aggregate == "top" else self.aggregate

    def describe(self) -> str:
        return f"{self.name} ({self.pixel_measure}, {self.how()})"

    def rank(self, pool: Pool, budget: float, unit: str) -> Ranking:
        scores = pool.scores(self.scoring)
        return within_budget(scores, rank_order(scores), pool.costs, budget, unit)


@register_strategy
@dataclass(frozen=True, kw_only=True)
class Entropy(PixelStrategy):
    name = "entropy"


@register_strategy
@dataclass(frozen=True, kw_only=True)
class Margin(PixelStrategy):
    name = "margin"


@register_strategy
@dataclass(frozen=True, kw_only=True)
class LeastConfidence(PixelStrategy):
    name = "least_confidence"


@register_strategy
@dataclass(frozen=True, kw_only=True)
class Bald(PixelStrategy):
    """The mutual information of ``mc_samples`` MC-dropout passes: what the passes disagree about."""

    name = "bald"
    mc_samples: int = 8

    @property
    def scoring(self) -> PixelScoring:
        return PixelScoring("bald", self.aggregate, float(self.top_fraction), int(self.mc_samples), self.seed)


@register_strategy
@dataclass(frozen=True, kw_only=True)
class Coreset(Strategy):
    """k-center greedy on the model's encoder features (masklab.active.diversity); its score is the order the
    greedy search took the samples in."""

    name = "coreset"

    def rank(self, pool: Pool, budget: float, unit: str) -> Ranking:
        from masklab.active.diversity import k_center_greedy

        vectors, labelled = pool.embeddings()
        picks = k_center_greedy(vectors, labelled, diverse_count(budget, unit, pool.costs), self.seed)
        scores = np.zeros(len(pool.samples))
        order = _first(picks, rank_order(scores))
        scores[picks] = 1.0 - np.arange(len(picks)) / max(len(picks), 1)
        return within_budget(scores, order, pool.costs, budget, unit)


def _first(picks: list[int], order: np.ndarray) -> np.ndarray:
    """``picks``, then the rest of ``order``."""
    taken = set(picks)
    return np.array(picks + [int(i) for i in order if int(i) not in taken])


@register_strategy
@dataclass(frozen=True, kw_only=True)
class Hybrid(PixelStrategy):
    """k-means of the pool's embeddings, the most uncertain image (by ``measure``) of each cluster."""

    name = "hybrid"
    measure: str = "entropy"

    @property
    def pixel_measure(self) -> str:
        return self.measure

    def rank(self, pool: Pool, budget: float, unit: str) -> Ranking:
        from masklab.active.diversity import most_uncertain_per_cluster

        scores = pool.scores(self.scoring)
        vectors, _ = pool.embeddings()
        picks = most_uncertain_per_cluster(vectors, scores, diverse_count(budget, unit, pool.costs), self.seed)
        return within_budget(scores, _first(picks, rank_order(scores)), pool.costs, budget, unit)


@register_strategy
@dataclass(frozen=True, kw_only=True)
class Regions(PixelStrategy):
    """Region queries: ``patch``-px squares scored by their mean uncertainty (by ``measure``), the most uncertain
    patches of any image within the budget (a patch costs its area); images rank by their own score."""

    name = "regions"
    picks_regions = True
    measure: str = "entropy"
    patch: int = 64

    @property
    def pixel_measure(self) -> str:
        return self.measure

    def describe(self) -> str:
        return f"{self.name} ({self.pixel_measure}, {self.how()}, {self.patch} px patches)"

    def rank(self, pool: Pool, budget: float, unit: str) -> Ranking:
        import pandas as pd

        from masklab.active.regions import patch_regions

        found: list[tuple[int, Any]] = []  # (pool index, Region) of every patch

        def keep(i: int, u: np.ndarray) -> None:
            found.extend((i, r) for r in patch_regions(u, pool.samples[i].width, pool.samples[i].height, self.patch))

        scores = pool.scores(self.scoring, keep)
        costs = np.array([r.cost_px for _, r in found], np.float64)
        taken = take_within_budget(rank_order(np.array([r.score for _, r in found])), costs, budget, unit)
        rows = [{"id": pool.samples[i].id, "x0": r.x0, "y0": r.y0, "x1": r.x1, "y1": r.y1, "score": round(r.score, 6),
                 "cost_px": r.cost_px} for i, r in (found[k] for k in taken)]
        regions = pd.DataFrame(rows, columns=["id", "x0", "y0", "x1", "y1", "score", "cost_px"])
        picked = list(dict.fromkeys(found[k][0] for k in taken))
        return Ranking(scores, rank_order(scores), picked, int(costs[taken].sum()) if taken else 0, regions)
