"""Exact and near-duplicate pairs of a dataset's images, and the pairs that leak across splits.

Three searches, whose candidate pairs are merged and each scored by every measure there is:
- exact: equal pixel hashes (the decoded pixels, whatever the file encoding);
- perceptual: pHash within ``max_hash_bits`` bits (faiss' binary index, k nearest per image) -- finds
  resized and re-encoded copies;
- embedding: cosine distance of the centred embeddings within ``max_distance`` (faiss, k nearest per
  image; exact inner-product search, or HNSW for very large sets) -- finds crops and, with a trained
  encoder, re-shot images of one scene.
A pair whose samples lie in different splits is a leak: the model is tested on what it trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from masklab.data.fingerprints import Fingerprint, hash_matrix
from masklab.errors import UserError

INDEXES = ("flat", "hnsw")
PAIR_COLUMNS = ["id_a", "id_b", "split_a", "split_b", "kind", "found_by", "hash_bits", "distance", "leak", "group"]
FULL_GROUP = 20  # exact-duplicate groups up to this size list every pair; larger ones pair each with the first


@dataclass(frozen=True)
class DuplicateRules:
    """``max_hash_bits``: pHash pairs this close (of 64 bits) are near duplicates; ``max_distance``: centred
    cosine distance (0..2) under which embeddings are near duplicates (None: no embedding search);
    ``neighbours``: nearest neighbours looked at per image in each search; ``index``: flat (exact) or hnsw."""

    max_hash_bits: int = 4
    max_distance: float | None = None
    neighbours: int = 10
    index: str = "flat"

    def __post_init__(self) -> None:
        if not 0 <= int(self.max_hash_bits) <= 32:
            raise UserError(f"max_hash_bits={self.max_hash_bits}: expected 0..32 of the hash's 64 bits")
        if self.max_distance is not None and not 0 <= float(self.max_distance) <= 2:
            raise UserError(f"max_distance={self.max_distance}: expected a cosine distance in 0..2")
        if int(self.neighbours) < 1:
            raise UserError(f"neighbours={self.neighbours}: expected at least 1")
        if self.index not in INDEXES:
            raise UserError(f"index={self.index}: expected one of {list(INDEXES)}")


def import_faiss() -> Any:
    """The faiss module, without its loader's INFO lines about which CPU build it picked."""
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def nearest_neighbours(vectors: np.ndarray, k: int, index: str = "flat") -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each (N, k'), k' = min(k + 1, N): the inner-product nearest rows of each row of
    (N, D) float32 unit ``vectors`` (itself included, usually first). ``index``: "flat" exact search, or
    "hnsw" (approximate, 32 links per node, efSearch 128) for sets where exact search is too slow."""
    faiss = import_faiss()

    n, dim = vectors.shape
    k = min(k + 1, n)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if index == "hnsw":
        found = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        found.hnsw.efConstruction = 80
        found.hnsw.efSearch = max(128, k)
    else:
        found = faiss.IndexFlatIP(dim)
    found.add(data)
    return found.search(data, k)


def _hash_neighbours(hashes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(bits, indices), each (N, k'): the Hamming-nearest hashes of each (N, 8) uint8 hash, itself included."""
    faiss = import_faiss()

    found = faiss.IndexBinaryFlat(hashes.shape[1] * 8)
    found.add(np.ascontiguousarray(hashes))
    return found.search(np.ascontiguousarray(hashes), min(k + 1, len(hashes)))


def _exact_pairs(pixels: Sequence[str]) -> set[tuple[int, int]]:
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(pixels):
        groups.setdefault(h, []).append(i)
    pairs: set[tuple[int, int]] = set()
    for members in groups.values():
        if len(members) <= FULL_GROUP:
            pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
        else:
            pairs.update((members[0], b) for b in members[1:])
    return pairs


def _close_pairs(neighbours: np.ndarray, keep: np.ndarray) -> set[tuple[int, int]]:
    """(i, j), i < j, for every neighbour j of i whose ``keep`` mask (same shape as ``neighbours``) is set."""
    rows, cols = np.nonzero(keep & (neighbours >= 0))
    a, b = np.arange(len(neighbours))[rows], neighbours[rows, cols]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return {(int(x), int(y)) for x, y in zip(lo, hi) if x != y}


def duplicate_pairs(ids: Sequence[str], splits: Sequence[str], prints: Mapping[str, Fingerprint],
                    rules: DuplicateRules, vectors: np.ndarray | None = None) -> Any:
    """The duplicate pairs of N samples (``ids`` with their ``splits``), as a pandas DataFrame with
    PAIR_COLUMNS: kind exact | near; found_by the searches that found it (pixels, phash, embedding);
    hash_bits the pHash distance; distance the centred cosine distance (NaN without ``vectors``, (N, D) unit
    rows from Embeddings.centred); leak True when the splits differ; group the connected duplicate group.
    Sorted: leaks first, then exact, then by distance."""
    import pandas as pd

    n = len(ids)
    if n < 2:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    pixels = [prints[i].pixels for i in ids]
    hashes = hash_matrix(prints[i].phash for i in ids)
    found: dict[tuple[int, int], set[str]] = {}
    for pair in _exact_pairs(pixels):
        found.setdefault(pair, set()).add("pixels")
    bits, near = _hash_neighbours(hashes, rules.neighbours)
    for pair in _close_pairs(near, bits <= rules.max_hash_bits):
        found.setdefault(pair, set()).add("phash")
    if vectors is not None and rules.max_distance is not None:
        if len(vectors) != n:
            raise ValueError(f"{len(vectors)} embeddings for {n} samples")
        sims, near = nearest_neighbours(vectors, rules.neighbours, rules.index)
        for pair in _close_pairs(near, 1.0 - sims <= rules.max_distance):
            found.setdefault(pair, set()).add("embedding")
    if not found:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    a = np.array([p[0] for p in found])
    b = np.array([p[1] for p in found])
    xor = np.bitwise_xor(hashes[a], hashes[b])
    hash_bits = np.unpackbits(xor, axis=1).sum(axis=1)
    distance = 1.0 - (vectors[a] * vectors[b]).sum(axis=1) if vectors is not None else np.full(len(a), np.nan)
    exact = np.array([pixels[x] == pixels[y] for x, y in zip(a, b)])
    order = ("pixels", "phash", "embedding")
    table = pd.DataFrame({
        "id_a": [ids[x] for x in a], "id_b": [ids[y] for y in b],
        "split_a": [splits[x] for x in a], "split_b": [splits[y] for y in b],
        "kind": np.where(exact, "exact", "near"),
        "found_by": ["+".join(s for s in order if s in how) for how in found.values()],
        "hash_bits": hash_bits.astype(int), "distance": np.clip(distance, 0.0, 2.0).round(6),
    })
    table["leak"] = table["split_a"] != table["split_b"]
    table["group"] = _groups(n, a, b)
    table = table.sort_values(["leak", "kind", "distance", "hash_bits", "id_a", "id_b"],
                              ascending=[False, True, True, True, True, True], kind="stable")
    return table.reset_index(drop=True)[PAIR_COLUMNS]


def _groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The connected component (numbered 0.. by first appearance) of each pair (a[k], b[k]) among n nodes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    renumber: dict[int, int] = {}
    return np.array([renumber.setdefault(int(labels[x]), len(renumber)) for x in a])
