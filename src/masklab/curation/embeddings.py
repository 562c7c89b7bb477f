"""Per-sample embeddings: a table keyed by sample id, cached by what made them and the dataset version.

Cache (masklab.data.cache): ``<cache_dir>/embeddings/<embedder key>/<manifest sha256[:16]>.parquet``
with columns id, image_sha256 and embedding (float32 list). The embedder key is a digest of the weights (see
masklab.inference.embeddings), so one model named by run id, checkpoint or registry version shares a
cache. When the dataset changes (a new manifest), rows whose image bytes are unchanged are taken from
the newest earlier table of the same embedder: adding 100 images to 50,000 embeds 100.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from masklab.console import progress
from masklab.data.cache import cache_file, cached_table, write_table
from masklab.errors import UserError

EMBEDDINGS_DIR = "embeddings"
META_KEY = b"masklab"
READ_BATCH = 64  # images decoded at once: bounds memory whatever the dataset size


class ImageEmbedder(Protocol):
    name: str
    key: str

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass
class Embeddings:
    """``vectors``: (N, D) float32, row k the sample ``ids[k]``; ``source``: the embedder's name; ``key``: its
    weights digest; ``dataset``: the manifest sha256 they were computed for; ``computed`` / ``reused``: rows
    embedded now / taken from a cache."""

    ids: list[str]
    vectors: np.ndarray
    source: str
    key: str
    dataset: str
    path: Path | None = None
    computed: int = 0
    reused: int = 0

    def centred(self, whiten: int | None = None) -> np.ndarray:
        """(N, D') float32 unit rows after subtracting the dataset's mean vector: pooled ReLU features all
        point into one orthant, so raw cosines are all near 1; centred, they spread over [-1, 1].

        ``whiten``: also project onto the top ``whiten`` principal directions scaled to unit variance (PCA
        whitening, as in image retrieval): a segmentation encoder's pooled features put most of their
        variance in one or two directions (96% in one for a Kvasir UNet), which whitening evens out."""
        x = self.vectors.astype(np.float64) - self.vectors.mean(axis=0, keepdims=True)
        if whiten and len(x) > 2:
            _, sv, vt = np.linalg.svd(x, full_matrices=False)
            keep = int(min(whiten, len(sv), int((sv > sv[0] * 1e-6).sum())))
            x = x @ vt[:keep].T / (sv[:keep] / np.sqrt(len(x)))
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def embed_dataset(dataset: Any, embedder: ImageEmbedder, cache_dir: str | Path | None = None,
                  samples: Sequence[Any] | None = None) -> Embeddings:
    """Embeddings of ``samples`` (default: every sample of the loaded ``dataset``), from the cache when it holds
    them, else computed (images read in batches of 64) and cached when ``cache_dir`` is given."""
    from masklab.data.images import read_image

    chosen = list(dataset.samples if samples is None else samples)
    manifest = dataset.manifest_hash
    path = cache_file(cache_dir, EMBEDDINGS_DIR, embedder.key, manifest) if cache_dir else None
    known = _cached_by_sha(path) if path else {}
    vectors: dict[str, np.ndarray] = {s.id: known[s.image_sha256] for s in chosen if s.image_sha256 in known}
    todo = [s for s in chosen if s.id not in vectors]
    batches = [todo[i:i + READ_BATCH] for i in range(0, len(todo), READ_BATCH)]
    for batch in progress(batches, f"Embedding {len(todo)} images ({embedder.name})"):
        images = []
        for s in batch:
            try:
                images.append(read_image(dataset.root / s.image))
            except (OSError, ValueError) as exc:
                raise UserError(f"{dataset.root / s.image}: cannot read image of sample '{s.id}' ({exc}); "
                                "run `masklab data check`") from exc
        for s, vector in zip(batch, embedder.embed(images)):
            vectors[s.id] = vector
    ids = [s.id for s in chosen]
    matrix = np.stack([vectors[i] for i in ids]).astype(np.float32) if ids else np.zeros((0, 0), np.float32)
    found = Embeddings(ids, matrix, embedder.name, embedder.key, manifest, path, len(todo), len(ids) - len(todo))
    if path is not None and todo:
        write_embeddings(path, found, {s.id: s.image_sha256 for s in chosen})
    return found


def write_embeddings(path: Path, found: Embeddings, sha: dict[str, str]) -> Path:
    """Write ``found`` as a Parquet table (id, image_sha256 from ``sha``, embedding) with its source, key and
    dataset in the schema metadata, atomically; :func:`read_embeddings` reads it back."""
    import pyarrow as pa

    dim = found.vectors.shape[1]
    table = pa.table({
        "id": pa.array(found.ids, pa.string()),
        "image_sha256": pa.array([sha[i] for i in found.ids], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(found.vectors.reshape(-1), pa.float32()), dim),
    }).replace_schema_metadata({META_KEY: json.dumps({"source": found.source, "key": found.key,
                                                      "dataset": found.dataset}).encode()})
    return write_table(path, table)


def read_embeddings(path: str | Path) -> Embeddings:
    """An embeddings table written by :func:`embed_dataset` (or exported by ``curate embeddings``)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise UserError(f"embeddings {path}: no such file")
    table = pq.read_table(path)
    if "id" not in table.column_names or "embedding" not in table.column_names:
        raise UserError(f"embeddings {path}: columns {table.column_names}; expected id and embedding")
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    return Embeddings(table.column("id").to_pylist(), _vectors(table), meta.get("source", "?"), meta.get("key", "?"),
                      meta.get("dataset", "?"), path, 0, len(table))


def _cached_by_sha(path: Path) -> dict[str, np.ndarray]:
    """{image sha256: vector} of this dataset version's table or the newest earlier one of the embedder."""
    table = cached_table(path, ["image_sha256", "embedding"])
    return dict(zip(table.column("image_sha256").to_pylist(), _vectors(table))) if table is not None else {}


def _vectors(table: Any) -> np.ndarray:
    """(N, D) float32 of a table's fixed-size-list ``embedding`` column."""
    column = table.column("embedding").combine_chunks()
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(table), -1)
