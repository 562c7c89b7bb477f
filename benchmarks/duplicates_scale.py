"""Near-duplicate search over 50,000 embeddings on this machine: masklab's duplicate_pairs (pHash kNN on faiss'
binary index + cosine kNN on faiss, exact or HNSW, then the pair table) against a plain numpy exact search
(blocked matrix products + argpartition) measured in the same run.

    python benchmarks/duplicates_scale.py [--n 50000] [--dim 512] [--planted 500]

Vectors: a resnet18-like 512-D set (a low-rank signal plus noise, centred, unit rows); ``--planted`` rows are
near copies of others (noise at 5% of a row's norm, cosine distance ~0.001-0.01) and carry pHashes within 3
bits of their originals'. Figures: seconds, and the recall of the planted pairs. Run on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def make_vectors(n: int, dim: int, planted: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(64, dim)).astype(np.float32)
    x = rng.normal(size=(n, 64)).astype(np.float32) @ basis + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    pairs = []
    sources = rng.choice(n - planted, size=planted, replace=False)
    for k, src in enumerate(sources):
        dst = n - planted + k
        x[dst] = x[src] + 0.05 * np.linalg.norm(x[src]) / np.sqrt(dim) * rng.normal(size=dim)
        pairs.append((int(src), int(dst)))
    x -= x.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), pairs


def make_prints(n: int, pairs: list[tuple[int, int]], seed: int) -> dict:
    from masklab.data.fingerprints import Fingerprint

    rng = np.random.default_rng(seed + 1)
    hashes = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    for src, dst in pairs:
        hashes[dst] = hashes[src]
        for bit in rng.choice(64, size=3, replace=False):
            hashes[dst, bit // 8] ^= np.uint8(1 << (bit % 8))
    return {str(i): Fingerprint(f"px{i}", hashes[i].tobytes()) for i in range(n)}


def numpy_knn(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """(N, k) indices of the k most similar rows (itself included) by blocked exact inner products."""
    out = np.empty((len(x), k), np.int64)
    for start in range(0, len(x), block):
        sims = x[start:start + block] @ x.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start:start + block] = top
    return out


def recall(table, pairs: list[tuple[int, int]]) -> float:
    found = {tuple(sorted((int(a), int(b)))) for a, b in zip(table["id_a"], table["id_b"])}
    return float(np.mean([tuple(sorted(p)) in found for p in pairs]))


def main() -> None:
    from masklab.data.duplicates import DuplicateRules, duplicate_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--planted", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    x, pairs = make_vectors(a.n, a.dim, a.planted, a.seed)
    prints = make_prints(a.n, pairs, a.seed)
    ids, splits = [str(i) for i in range(a.n)], ["train"] * a.n
    figures: dict = {"n": a.n, "dim": a.dim, "planted": a.planted}
    start = time.perf_counter()
    neighbours = numpy_knn(x, 11)
    figures["numpy_exact_knn_s"] = round(time.perf_counter() - start, 1)
    found = {tuple(sorted((i, int(j)))) for i, row in enumerate(neighbours) for j in row if j != i
             and 1 - float(x[i] @ x[j]) <= 0.05}
    figures["numpy_recall"] = float(np.mean([tuple(sorted(p)) in found for p in pairs]))
    for index in ("flat", "hnsw"):
        rules = DuplicateRules(max_hash_bits=4, max_distance=0.05, neighbours=10, index=index)
        start = time.perf_counter()
        table = duplicate_pairs(ids, splits, prints, rules, x)
        seconds = time.perf_counter() - start
        figures[index] = {"seconds": round(seconds, 1), "pairs": len(table), "recall": recall(table, pairs),
                          "ratio_to_numpy": round(seconds / figures["numpy_exact_knn_s"], 2)}
        print(json.dumps({index: figures[index]}), flush=True)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
