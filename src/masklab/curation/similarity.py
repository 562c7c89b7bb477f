"""Where each sample sits among the others, from its centred embedding: uniqueness, cluster,
representativeness and a 2-D map.

- uniqueness: the mean cosine distance to the ``k`` nearest other samples, divided by the dataset's
  largest such mean (1: the most isolated sample; 0 only with k exact copies), as FiftyOne's reads;
- cluster: k-means (faiss) on the unit vectors, about sqrt(N / 2) clusters (at most 100);
- representativeness: how typical a sample is of a large cluster: its cosine similarity to its
  cluster's centre, rescaled within the cluster to 0..1, times sqrt(cluster size / largest cluster
  size), so the centre of the largest cluster scores 1 and an outlier in a cluster of its own near 0;
- map: 2-D UMAP (umap-learn), t-SNE (openTSNE) or PCA coordinates, for the explorer's scatter plot.
"""

from __future__ import annotations

import numpy as np

from masklab.data.duplicates import import_faiss, nearest_neighbours
from masklab.errors import UserError

MAP_METHODS = ("umap", "tsne", "pca")
MAX_CLUSTERS = 100


def uniqueness(vectors: np.ndarray, k: int = 5, index: str = "flat") -> np.ndarray:
    """(N,) float in 0..1 for (N, D) unit rows (see the module docstring); all 0 when N < 2."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n)
    sims, found = nearest_neighbours(vectors, k, index)
    others = found != np.arange(n)[:, None]  # drop each row's own entry wherever the search ranked it
    dist = np.where(others & (found >= 0), 1.0 - sims, np.nan)
    mean = np.nan_to_num(np.nanmean(dist[:, :k + 1], axis=1), nan=0.0).clip(0, 2)
    return mean / mean.max() if mean.max() > 0 else mean


def cluster_count(n: int) -> int:
    return int(min(MAX_CLUSTERS, max(1, round(np.sqrt(n / 2)))))


def clusters(vectors: np.ndarray, n_clusters: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,) int, similarity to the own cluster's centre (N,) float) by spherical k-means (faiss)."""
    faiss = import_faiss()

    n, dim = vectors.shape
    count = min(n, n_clusters or cluster_count(n))
    if count <= 1:
        centre = vectors.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        return np.zeros(n, int), vectors @ centre
    kmeans = faiss.Kmeans(dim, count, niter=25, nredo=5, seed=seed, spherical=True, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=100_000)
    kmeans.train(np.ascontiguousarray(vectors, dtype=np.float32))
    sims, labels = kmeans.index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return labels[:, 0].astype(int), sims[:, 0].astype(float)


def representativeness(labels: np.ndarray, centre_similarity: np.ndarray) -> np.ndarray:
    """(N,) float in 0..1 from cluster labels and similarities to the centre (see the module docstring)."""
    out = np.zeros(len(labels))
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, int)
    largest = sizes.max() if len(sizes) else 1
    for c in np.unique(labels):
        members = labels == c
        s = centre_similarity[members]
        span = s.max() - s.min()
        scaled = (s - s.min()) / span if span > 1e-9 else np.ones_like(s)
        out[members] = scaled * np.sqrt(sizes[c] / largest)
    return out


def project_2d(vectors: np.ndarray, method: str = "umap", seed: int = 0, neighbours: int = 15) -> np.ndarray:
    """(N, 2) float32 map coordinates of (N, D) unit rows: UMAP (cosine metric), t-SNE (openTSNE) or PCA;
    deterministic for a seed. Fewer than 4 samples: PCA (the others need neighbours)."""
    if method not in MAP_METHODS:
        raise UserError(f"map={method}: expected one of {list(MAP_METHODS)}")
    n = len(vectors)
    if n < 4 or method == "pca":
        centred = vectors - vectors.mean(axis=0)
        if n < 2:
            return np.zeros((n, 2), np.float32)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)
    if method == "umap":
        import warnings

        import torch
        import umap

        # numba's OpenMP layer sets the process-wide OpenMP thread count when UMAP runs, which torch reads: a
        # training after a map in the same process (a notebook, a test run) would use other threads and give
        # other numbers. Put torch's count back.
        threads = torch.get_num_threads()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": determinism is the point
                return umap.UMAP(n_components=2, n_neighbors=min(neighbours, n - 1), metric="cosine",
                                 random_state=seed, init="spectral" if n > 10 else "random").fit_transform(
                    vectors).astype(np.float32)
        finally:
            torch.set_num_threads(threads)
    from openTSNE import TSNE

    perplexity = float(min(30, max(2, (n - 1) / 3)))
    return np.asarray(TSNE(perplexity=perplexity, random_state=seed, n_jobs=2, verbose=False).fit(vectors),
                      np.float32)
