"""Picking a diverse batch from embeddings: core-set (k-center greedy) and cluster-then-most-uncertain.

- coreset (Sener & Savarese 2018): repeatedly take the pool sample farthest (cosine) from everything labelled
  or taken so far, so the batch covers the pool's spread;
- hybrid: k-means of the pool into ``budget`` clusters (faiss), then from each cluster its most uncertain
  sample, so a batch is both informative and spread out (a cheap relative of BADGE, Ash et al. 2020).
The exact greedy search is O(budget x N x D); fine for pools of tens of thousands of samples.
"""

from __future__ import annotations

import numpy as np


def k_center_greedy(pool: np.ndarray, labelled: np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """Indices into ``pool`` (N, D unit rows) of ``budget`` samples by k-center greedy, starting from the
    ``labelled`` (M, D) centres (a random pool sample when M = 0)."""
    n = len(pool)
    budget = min(int(budget), n)
    picked: list[int] = []
    if budget <= 0:
        return picked
    if len(labelled):
        nearest = 1.0 - (pool @ labelled.T).max(axis=1)
    else:
        first = int(np.random.default_rng(seed).integers(n))
        picked.append(first)
        nearest = 1.0 - pool @ pool[first]
        nearest[first] = -np.inf
    while len(picked) < budget:
        k = int(np.argmax(nearest))
        picked.append(k)
        nearest = np.minimum(nearest, 1.0 - pool @ pool[k])
        nearest[picked] = -np.inf
    return picked


def most_uncertain_per_cluster(pool: np.ndarray, scores: np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """Indices into ``pool`` of ``budget`` samples: one per k-means cluster (k = budget), the one with the
    highest score; by score where clusters are fewer than the budget."""
    from masklab.curation.similarity import clusters

    n = len(pool)
    budget = min(int(budget), n)
    if budget <= 0:
        return []
    labels, _ = clusters(pool, n_clusters=budget, seed=seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(int(members[np.argmax(scores[members])]))
    rest = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in set(picked)]
    picked = sorted(picked, key=lambda i: -scores[i])
    return (picked + rest)[:budget]
