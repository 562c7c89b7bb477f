"""Learning curves of an active-learning simulation and the label cost each strategy needs to reach a target.

``rounds``: one row per (strategy, seed, round) with the labelled ``images`` and ``pixels`` after that round and
the test metric; every strategy's round 0 is the same seed-set model of its seed. Costs are read off a curve by
linear interpolation between the rounds that bracket the target (the first crossing), so a strategy that passes
the target half-way between two rounds is credited half the step, not the whole one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

COST_UNITS = ("images", "pixels")


def learning_curves(rounds: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (strategy, round): mean labelled images and pixels, ``mean`` / ``std`` (sample std, ddof 1; NaN with one
    seed) / ``n`` of ``metric`` over seeds. Rounds not every seed of a strategy reached are left out."""
    rows = []
    for (strategy, r), group in rounds.groupby(["strategy", "round"], sort=True):
        if len(group) < rounds[rounds["strategy"] == strategy]["seed"].nunique():
            continue
        values = group[metric].to_numpy(float)
        rows.append({"strategy": strategy, "round": int(r), "images": float(group["images"].mean()),
                     "pixels": float(group["pixels"].mean()), "mean": float(values.mean()),
                     "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "n": len(values)})
    return pd.DataFrame(rows, columns=["strategy", "round", "images", "pixels", "mean", "std", "n"])


def cost_to_reach(costs: Sequence[float], values: Sequence[float], target: float) -> float:
    """The label cost at which a curve first reaches ``target``: the first point at or above it, interpolated
    linearly from the point before; NaN when the curve never gets there. ``costs`` ascending."""
    xs, ys = np.asarray(costs, float), np.asarray(values, float)
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y >= target:
            if i == 0 or ys[i - 1] >= y:
                return float(x)
            return float(xs[i - 1] + (x - xs[i - 1]) * (target - ys[i - 1]) / (y - ys[i - 1]))
    return math.nan


def label_cost_table(rounds: pd.DataFrame, metric: str, baseline: str = "random") -> pd.DataFrame:
    """Per strategy and cost unit: the cost to reach the baseline's final mean ``metric`` on the mean curve
    (``cost``) and as a share of the baseline's own cost (``ratio``); the same per seed against that seed's
    baseline final value, paired (``seed_ratio_mean`` ± ``seed_ratio_std``, ``seeds_reached`` of ``seeds``);
    the final mean ± std. Raises ValueError without the baseline strategy."""
    if baseline not in set(rounds["strategy"]):
        raise ValueError(f"no rounds of the baseline strategy {baseline!r}")
    curves = learning_curves(rounds, metric)
    base_curve = curves[curves["strategy"] == baseline].sort_values("round")
    target = float(base_curve["mean"].iloc[-1])
    base = rounds[rounds["strategy"] == baseline]
    last_round = int(base_curve["round"].iloc[-1])
    rows = []
    for strategy, curve in curves.groupby("strategy", sort=False):
        curve = curve.sort_values("round")
        mine = rounds[rounds["strategy"] == strategy]
        final = curve.iloc[-1]
        for unit in COST_UNITS:
            base_cost = cost_to_reach(base_curve[unit], base_curve["mean"], target)
            cost = cost_to_reach(curve[unit], curve["mean"], target)
            ratios = []
            for seed, seed_rows in mine.groupby("seed"):
                base_seed = base[base["seed"] == seed].sort_values("round")
                if base_seed.empty or int(base_seed["round"].iloc[-1]) != last_round:
                    continue
                seed_target = float(base_seed[metric].iloc[-1])
                seed_rows = seed_rows.sort_values("round")
                ratios.append(cost_to_reach(seed_rows[unit], seed_rows[metric], seed_target)
                              / cost_to_reach(base_seed[unit], base_seed[metric], seed_target))
            reached = [r for r in ratios if not math.isnan(r)]
            rows.append({
                "strategy": strategy, "unit": unit, "target": target, "cost": cost, "baseline_cost": base_cost,
                "ratio": cost / base_cost if base_cost else math.nan,
                "seed_ratio_mean": float(np.mean(reached)) if reached else math.nan,
                "seed_ratio_std": float(np.std(reached, ddof=1)) if len(reached) > 1 else math.nan,
                "seeds_reached": len(reached), "seeds": len(ratios),
                "final_mean": float(final["mean"]), "final_std": float(final["std"]),
                "final_images": float(final["images"]), "final_pixels": float(final["pixels"]),
            })
    return pd.DataFrame(rows).sort_values(["unit", "ratio"], na_position="last").reset_index(drop=True)


def paired_gains(rounds: pd.DataFrame, metric: str, baseline: str = "random") -> pd.DataFrame:
    """Per (strategy, round): the strategy's ``metric`` minus the baseline's with the same seed (same seed set,
    same training seed), mean ± sample std over seeds: the gap with the seed-to-seed noise paired out."""
    base = rounds[rounds["strategy"] == baseline].set_index(["seed", "round"])[metric]
    rows = []
    for (strategy, r), group in rounds[rounds["strategy"] != baseline].groupby(["strategy", "round"]):
        diffs = np.array([value - base[(seed, r)] for seed, value in zip(group["seed"], group[metric])
                          if (seed, r) in base.index], float)
        if len(diffs):
            rows.append({"strategy": strategy, "round": int(r), "gain_mean": float(diffs.mean()),
                         "gain_std": float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan,
                         "seeds": len(diffs)})
    return pd.DataFrame(rows, columns=["strategy", "round", "gain_mean", "gain_std", "seeds"])
