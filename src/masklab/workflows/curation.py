"""Curation at scale: ``embed`` a dataset, ``find_duplicates`` (exact, near and leaking across splits) and
``describe_similarity`` (uniqueness, clusters, representativeness, a 2-D map); every result a table keyed by
sample id, written atomically to an output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.curation.embeddings import Embeddings, ImageEmbedder
from masklab.data.duplicates import DuplicateRules
from masklab.errors import UserError

DUPLICATES_FILE = "duplicates.parquet"
SIMILARITY_FILE = "similarity.parquet"
EMBEDDINGS_FILE = "embeddings.parquet"
# Per embedder kind: how its vectors are compared (PCA-whitened to this many directions, or only centred) and
# the cosine distance under which two are near duplicates; measured on Kvasir-SEG and DSB 2018 with planted
# copies (benchmarks/duplicates.py, docs/benchmarks.md).
WHITEN = {"thumbnail": None, "encoder": 128}
DEFAULT_MAX_DISTANCE = {"thumbnail": 0.08, "encoder": 0.2}


def make_embedder(model: str | None = None, weights: str | None = None, encoder: str = "resnet18",
                  size: int | None = None, device: str = "auto", batch_size: int = 16,
                  tracking_uri: str = "") -> ImageEmbedder:
    """The embedder a user names: a trained ``model`` (run id, checkpoint, package folder or models:/ URI:
    its encoder), else a local ``weights`` file of an smp/timm ``encoder``, else the weight-free 16x16
    thumbnail (pixel level: finds near duplicates, not semantic neighbours)."""
    from masklab.inference import embeddings

    if model and weights:
        raise UserError(f"model={model} and embedder.weights={weights}: give one source of embeddings, not both")
    if model:
        from masklab.tracking.model_ref import load_model_ref

        return embeddings.package_embedder(load_model_ref(str(model), tracking_uri), size, device, batch_size)
    if weights:
        return embeddings.weights_embedder(weights, encoder, size or embeddings.DEFAULT_SIZE, device, batch_size)
    return embeddings.ThumbnailEmbedder()


def embedder_kind(source: str) -> str:
    """"thumbnail" or "encoder": which measured defaults apply to embeddings from ``source``."""
    return "thumbnail" if source == "thumbnail" else "encoder"


def comparable(embeddings: Embeddings) -> Any:
    """(N, D') float32 unit rows to compare by cosine: centred, and whitened for encoder features."""
    return embeddings.centred(WHITEN[embedder_kind(embeddings.source)])


def embed(dataset: Any, embedder: ImageEmbedder, cache_dir: str | Path | None = None,
          split: str | None = None) -> Embeddings:
    """Embeddings of a loaded dataset's samples (of ``split``, or all), cached in ``cache_dir`` by the
    embedder's weights and the dataset version (masklab.curation.embeddings)."""
    from masklab.curation.embeddings import embed_dataset

    samples = dataset.samples if split in (None, "all") else dataset.split(split)
    if not samples:
        raise UserError(f"{dataset.root}: no samples in split '{split}' (splits: {dataset.split_names})")
    return embed_dataset(dataset, embedder, cache_dir, samples)


@dataclass
class Duplicates:
    """``pairs``: one row per duplicate pair (masklab.data.duplicates.PAIR_COLUMNS), leaks first;
    ``rules``: the thresholds used; ``source``: what the embedding search used (None: none)."""

    pairs: Any  # pandas.DataFrame
    rules: DuplicateRules
    path: Path | None
    source: str | None
    samples: int

    @property
    def leaks(self) -> Any:
        return self.pairs[self.pairs["leak"]]

    def counts(self) -> dict[str, int]:
        p = self.pairs
        return {"exact": int((p["kind"] == "exact").sum()), "near": int((p["kind"] == "near").sum()),
                "leaks": int(p["leak"].sum()), "groups": int(p["group"].nunique()) if len(p) else 0}


def find_duplicates(dataset: Any, embedder: ImageEmbedder | None = None, rules: DuplicateRules | None = None,
                    cache_dir: str | Path | None = None, output_dir: str | Path | None = None) -> Duplicates:
    """Exact and near-duplicate pairs among a loaded dataset's samples, and those that cross splits.

    ``embedder``: also search the embeddings (None: pixel and perceptual hashes only); ``rules.max_distance``
    None means the embedder's measured default. Writes ``duplicates.parquet`` to ``output_dir`` when given."""
    from dataclasses import replace

    from masklab.curation.embeddings import embed_dataset
    from masklab.data.duplicates import duplicate_pairs
    from masklab.data.fingerprints import fingerprint_dataset
    from masklab.files import atomic_write

    rules = rules or DuplicateRules()
    prints = fingerprint_dataset(dataset, cache_dir)
    samples = [s for s in dataset.samples if s.id in prints]
    vectors = None
    if embedder is not None:
        if rules.max_distance is None:
            rules = replace(rules, max_distance=DEFAULT_MAX_DISTANCE[embedder_kind(embedder.name)])
        vectors = comparable(embed_dataset(dataset, embedder, cache_dir, samples))
    else:
        rules = replace(rules, max_distance=None)
    pairs = duplicate_pairs([s.id for s in samples], [s.split for s in samples], prints, rules, vectors)
    path = None
    if output_dir is not None:
        path = atomic_write(Path(output_dir) / DUPLICATES_FILE, lambda tmp: pairs.to_parquet(tmp, index=False))
    return Duplicates(pairs, rules, path, embedder.name if embedder is not None else None, len(samples))


@dataclass
class Similarity:
    """``table``: id, split, uniqueness, representativeness, cluster, map_x, map_y (one row per sample);
    ``embeddings`` what it was computed from; ``paths`` the files written."""

    table: Any  # pandas.DataFrame
    embeddings: Embeddings
    paths: list[Path]


def describe_similarity(dataset: Any, embeddings: Embeddings, output_dir: str | Path | None = None,
                        neighbours: int = 5, map_method: str = "umap", seed: int = 0,
                        n_clusters: int | None = None) -> Similarity:
    """Uniqueness, cluster, representativeness and 2-D map coordinates of each embedded sample
    (masklab.curation.similarity); writes ``similarity.parquet`` and ``embeddings.parquet`` (the vectors, keyed
    by id) to ``output_dir`` when given."""
    import pandas as pd

    from masklab.curation import similarity
    from masklab.curation.embeddings import write_embeddings
    from masklab.files import atomic_write

    vectors = comparable(embeddings)
    labels, centre = similarity.clusters(vectors, n_clusters, seed)
    xy = similarity.project_2d(vectors, map_method, seed)
    split = {s.id: s.split for s in dataset.samples}
    table = pd.DataFrame({
        "id": embeddings.ids, "split": [split.get(i) for i in embeddings.ids],
        "uniqueness": similarity.uniqueness(vectors, neighbours).round(6),
        "representativeness": similarity.representativeness(labels, centre).round(6),
        "cluster": labels, "map_x": xy[:, 0].astype(float).round(5), "map_y": xy[:, 1].astype(float).round(5),
    })
    paths = []
    if output_dir is not None:
        out = Path(output_dir)
        paths.append(atomic_write(out / SIMILARITY_FILE, lambda tmp: table.to_parquet(tmp, index=False)))
        sha = {s.id: s.image_sha256 for s in dataset.samples}
        paths.append(write_embeddings(out / EMBEDDINGS_FILE, embeddings, sha))
    return Similarity(table, embeddings, paths)


def joined_table(table: Any, extra: list[Path]) -> Any:
    """``table`` (keyed by id) with the columns of each extra per-sample Parquet table (keyed by id) that it
    does not have yet, left-joined."""
    import pandas as pd

    for path in extra:
        if not Path(path).is_file():
            raise UserError(f"tables: {path} does not exist (a per-sample Parquet table with an id column)")
        other = pd.read_parquet(path)
        if "id" not in other.columns:
            raise UserError(f"tables: {path} has columns {list(other.columns)[:8]}; expected an id column")
        other["id"] = other["id"].astype(str)
        keep = ["id"] + [c for c in other.columns if c not in table.columns]
        table = table.merge(other[keep].drop_duplicates("id"), on="id", how="left")
    return table


def write_similarity_explorer(dataset: Any, found: Similarity, out_dir: str | Path,
                              tables: list[Path] | None = None) -> Path:
    """The explorer of the embedded samples with the embeddings map (points coloured by any column; a box or
    lasso selection filters the grid), the similarity columns and those of ``tables`` joined by id."""
    from masklab.explore import explorer_samples, write_explorer

    embedded = set(found.table["id"])
    samples = [s for s in explorer_samples(dataset, None, None) if s.id in embedded]
    table = joined_table(found.table, list(tables or []))
    view = {"name": "Embeddings map", "map_color": "cluster",
            "note": f"Embeddings map ({found.embeddings.source}): each point a sample, placed so that similar "
                    "images lie close. Colour by any column; drag a lasso (or a box) to show only those samples."}
    return write_explorer(Path(out_dir), dataset.class_table, samples, table, {},
                          f"Embeddings map: {dataset.root.name}", None, view=view)
