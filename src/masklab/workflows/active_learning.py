"""``select``: score every unlabelled (pool) sample of a dataset with a model and pick what to label next.

One pass over the pool in batches (class probabilities at the model's input size, through the task, so
semantic and instance models alike), only small per-sample numbers kept; then the strategy picks within the
budget (masklab.active.selection). Outputs keyed by sample id: ``selection.parquet`` (every pool sample: rank,
score, selected, label cost) and, for region queries, ``regions.parquet``; with ``record``, the selection is
also written into the dataset folder (``selections/<name>.parquet``) and the picked rows' manifest entry
``selected_in`` is set, so the selection is part of the data version DVC commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from masklab.active.selection import Ranking, Strategy, check_budget
from masklab.active.uncertainty import PixelScoring
from masklab.errors import UserError

SELECTION_FILE = "selection.parquet"
REGIONS_FILE = "regions.parquet"
SELECTIONS_DIR = "selections"  # in the dataset folder: versioned with the data
SELECTED_KEY = "selected_in"  # manifest key of a picked sample: the selection's name
CLASS_COUNT_SAMPLES = 300  # labelled masks read to weigh classes for aggregate=class_balanced


@dataclass
class Selection:
    """``table``: one row per pool sample (id, rank, score, selected, cost_px, strategy, model, dataset), best
    first; ``regions``: the picked patches of a region query (id, x0, y0, x1, y1, score, cost_px) or None;
    ``picked``: the selected ids in rank order; ``cost_px``: labelled pixels the picks cost."""

    name: str
    table: Any  # pandas.DataFrame
    picked: list[str]
    cost_px: int
    regions: Any = None
    paths: list[Path] = field(default_factory=list)
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # picked id -> (h, w) uint8 uncertainty


def _pool(dataset: Any) -> list[Any]:
    pool = [s for s in dataset.samples if not s.labeled]
    if not pool:
        raise UserError(f"{dataset.root}: no unlabelled samples to select from (split 'pool' or status "
                        "'unlabeled'); import images into the pool first")
    return pool


def enable_mc_dropout(model: Any) -> int:
    """Put every dropout layer of an eval-mode model in training mode (MC dropout); returns how many."""
    import torch.nn as nn

    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    for m in layers:
        m.train()
    return len(layers)


def _class_weights(dataset: Any, task: Any, seed: int, cache_dir: str | Path | None) -> np.ndarray:
    from masklab.active.uncertainty import class_weights
    from masklab.data.class_pixels import count_class_pixels

    labelled = [s for s in dataset.samples if s.labeled and s.has_target]
    rng = np.random.default_rng(seed)
    chosen = [labelled[i] for i in sorted(rng.choice(len(labelled), min(len(labelled), CLASS_COUNT_SAMPLES),
                                                     replace=False))] if labelled else []
    table = dataset.class_table
    counts = count_class_pixels(chosen, lambda s: task.label_map(dataset.root, s), table.num_classes, None,
                                dataset.manifest_hash, cache_dir)
    return class_weights(counts.pixels)


class ModelPool:
    """The pool as a strategy sees it (masklab.active.selection.Pool): ``samples`` of ``dataset`` scored and
    embedded by the model ``package``, through its task, when the ``strategy`` asks."""

    def __init__(self, dataset: Any, samples: list[Any], package: Any, strategy: Strategy, device: str,
                 batch_size: int, cache_dir: str | Path | None = None):
        self.dataset, self.samples, self.package, self.strategy = dataset, samples, package, strategy
        self.device, self.batch_size, self.cache_dir = device, batch_size, cache_dir
        self.costs = np.array([s.width * s.height for s in samples], np.float64)

    def subset(self, samples: list[Any]) -> ModelPool:
        return ModelPool(self.dataset, samples, self.package, self.strategy, self.device, self.batch_size,
                         self.cache_dir)

    def scores(self, scoring: PixelScoring, on_map: Any = None) -> np.ndarray:
        """(N,) scores of the samples; ``on_map(i, u)`` gets each sample's (h, w) float32 uncertainty map at the
        model's resolution as it is computed (nothing else keeps the maps: pools are large)."""
        from masklab.console import progress
        from masklab.data.images import read_image
        from masklab.inference.engine import Predictor
        from masklab.tasks import get_task

        task = get_task(self.package.spec.get("task", "semantic"))
        predictor = Predictor(self.package.model, self.package.input_rule, self.device, self.batch_size)
        weights = _class_weights(self.dataset, task, scoring.seed, self.cache_dir) if scoring.class_balanced else None
        scores = np.zeros(len(self.samples))
        n, size = len(self.samples), self.batch_size
        batches = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
        with self._mc_dropout(predictor, scoring):
            for batch in progress(batches, f"Scoring {n} pool images ({self.strategy.describe()})"):
                images = [read_image(self.dataset.root / self.samples[i].image) for i in batch]
                for i, p in zip(batch, _probabilities(task, predictor, images, scoring)):
                    scores[i], u = scoring.score(p, weights)
                    if on_map is not None:
                        on_map(i, u)
        return scores

    @contextmanager
    def _mc_dropout(self, predictor: Any, scoring: PixelScoring) -> Iterator[None]:
        """For MC scoring: dropout on (a clear error when the model has none) and torch seeded, for the block."""
        if not scoring.mc:
            yield
            return
        import torch

        if enable_mc_dropout(predictor.model) == 0:
            net = type(getattr(self.package.model, "net", self.package.model)).__name__
            raise UserError(f"strategy={self.strategy.name}: the model ({net}) has no dropout layers, so MC-dropout "
                            "samples would all be equal; choose another strategy or a model with dropout")
        torch.manual_seed(scoring.seed)
        try:
            yield
        finally:
            predictor.model.eval()

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(pool vectors, labelled train vectors), comparable unit rows from the model's own encoder."""
        from masklab.curation.embeddings import Embeddings, embed_dataset
        from masklab.inference.embeddings import package_embedder
        from masklab.workflows.curation import comparable

        embedder = package_embedder(self.package, device=self.device, batch_size=self.batch_size)
        labelled = [s for s in self.dataset.samples if s.labeled and s.split == "train"]
        found = embed_dataset(self.dataset, embedder, self.cache_dir, [*self.samples, *labelled])
        vectors = comparable(Embeddings(found.ids, found.vectors, found.source, found.key, found.dataset))
        return vectors[: len(self.samples)], vectors[len(self.samples):]


def _probabilities(task: Any, predictor: Any, images: list[np.ndarray], scoring: PixelScoring) -> list[np.ndarray]:
    """Per image float32 class probabilities (C, h, w) at the model's resolution; (T, C, h, w) for MC scoring."""
    if not scoring.mc:
        return [p.astype(np.float32) for p in task.class_probabilities(predictor, images, "model")]
    samples = [task.class_probabilities(predictor, images, "model") for _ in range(scoring.mc_samples)]
    return [np.stack([s[k] for s in samples]).astype(np.float32) for k in range(len(images))]


def select(dataset: Any, package: Any, strategy: Strategy, budget: float, unit: str = "images",
           output_dir: str | Path | None = None, model_name: str = "", cache_dir: str | Path | None = None,
           device: str = "auto", batch_size: int = 8, name: str | None = None) -> Selection:
    """Pick pool samples of a loaded ``dataset`` to label next with a loaded model ``package``.

    ``strategy``: a masklab.active.selection strategy (``make_strategy("entropy")``). ``budget``: images (unit
    "images") or labelled pixels (unit "pixels"; an image costs width x height, a region its area). ``cache_dir``:
    where the core-set / hybrid strategies cache embeddings. Writes ``selection.parquet`` (and ``regions.parquet``)
    to ``output_dir`` when given. Deterministic for a seed."""
    budget = check_budget(budget, unit)
    pool = ModelPool(dataset, _pool(dataset), package, strategy, device, batch_size, cache_dir)
    name = name or f"{strategy.name}-{dataset.manifest_hash[:8]}"
    found = selection_of(pool, strategy.rank(pool, budget, unit), name, strategy.describe(), model_name)
    if found.picked and strategy.scoring is not None:
        found.maps = uncertainty_maps(pool, found.picked, strategy.scoring)
    if output_dir is not None:
        found.paths = write_selection_tables(found, Path(output_dir))
    return found


def selection_of(pool: ModelPool, ranking: Ranking, name: str, strategy: str, model_name: str) -> Selection:
    """The Selection of a strategy's ``ranking``: the table of every pool sample by rank, the picks in rank order."""
    import pandas as pd

    n = len(pool.samples)
    rank = np.empty(n, int)
    rank[np.asarray(ranking.order, int)] = np.arange(1, n + 1)
    chosen = set(ranking.picked)
    table = pd.DataFrame({
        "id": [s.id for s in pool.samples], "rank": rank, "score": np.round(ranking.scores, 6),
        "selected": [i in chosen for i in range(n)], "cost_px": pool.costs.astype(np.int64),
        "strategy": strategy, "model": model_name, "dataset": pool.dataset.manifest_hash, "selection": name,
    }).sort_values("rank", kind="stable").reset_index(drop=True)
    picked = [pool.samples[i].id for i in sorted(ranking.picked, key=lambda i: rank[i])]
    return Selection(name, table, picked, ranking.cost_px, ranking.regions)


def uncertainty_maps(pool: ModelPool, picked: list[str], scoring: PixelScoring) -> dict[str, np.ndarray]:
    """The picks' (h, w) uint8 uncertainty maps (0-255) for the explorer: a second pass over the few picked images."""
    wanted = set(picked)
    picks = pool.subset([s for s in pool.samples if s.id in wanted])
    kept: dict[str, np.ndarray] = {}
    picks.scores(scoring, lambda i, u: kept.__setitem__(picks.samples[i].id, np.round(u * 255).astype(np.uint8)))
    return kept


def write_selection_tables(found: Selection, out: Path) -> list[Path]:
    """``selection.parquet`` and, for a region query, ``regions.parquet`` in ``out``, atomically."""
    from masklab.files import atomic_write

    paths = [atomic_write(out / SELECTION_FILE, lambda tmp: found.table.to_parquet(tmp, index=False))]
    if found.regions is not None:
        paths.append(atomic_write(out / REGIONS_FILE, lambda tmp: found.regions.to_parquet(tmp, index=False)))
    return paths


def record_selection(dataset: Any, found: Selection) -> Path:
    """Write the selection into the dataset folder (``selections/<name>.parquet``) and set ``selected_in`` on the
    picked rows of the manifest, atomically: the next data version (``dvc commit``) holds what was chosen."""
    from masklab.data.manifest import read_manifest, write_manifest
    from masklab.files import atomic_write

    path = atomic_write(Path(dataset.root) / SELECTIONS_DIR / f"{found.name}.parquet",
                        lambda tmp: found.table.to_parquet(tmp, index=False))
    picked = set(found.picked)
    rows = read_manifest(dataset.root)
    for s in rows:
        if s.id in picked:
            s.extra[SELECTED_KEY] = found.name
    write_manifest(dataset.root, rows)
    return path


# The explorer draws an uncertainty map as a heat ramp (matplotlib's inferno) of steps of 1 / HEAT_STEPS; the
# lowest step is left clear so the image shows where the model is sure.
HEAT_STEPS = 10


def uncertainty_ramp() -> Any:
    """The ClassTable the explorer colours an uncertainty map with: step k = uncertainty in [k, k + 1) / HEAT_STEPS."""
    from matplotlib import colormaps

    from masklab.data.classes import ClassInfo, ClassTable

    ramp = colormaps["inferno"]
    steps = [ClassInfo(0, f"uncertainty < {1 / HEAT_STEPS:.1f}", (0, 0, 0))]
    for k in range(1, HEAT_STEPS):
        r, g, b, _ = ramp(0.25 + 0.75 * (k - 1) / (HEAT_STEPS - 2))
        steps.append(ClassInfo(k, f"{k / HEAT_STEPS:.1f} - {(k + 1) / HEAT_STEPS:.1f}",
                               (round(r * 255), round(g * 255), round(b * 255))))
    return ClassTable(tuple(steps))


def write_selection_explorer(dataset: Any, found: Selection, out_dir: str | Path) -> Path:
    """The explorer of the picks in rank order: each image with its uncertainty map as the "prediction" overlay
    (a heat ramp in steps of 0.1; below 0.1 clear) and, for region queries, the chosen patches outlined."""
    import tempfile

    import cv2
    from PIL import Image

    from masklab.data.sample_files import safe_name
    from masklab.explore import ExplorerSample, write_explorer

    bins = uncertainty_ramp()
    by_id = {s.id: s for s in dataset.samples}
    table = found.table[found.table["selected"]]
    with tempfile.TemporaryDirectory(prefix="masklab-al-") as scratch:
        samples = []
        for sample_id in table["id"]:
            s = by_id[sample_id]
            pred = None
            if sample_id in found.maps:
                steps = (found.maps[sample_id].astype(np.int32) * HEAT_STEPS // 256).astype(np.uint8)
                binned = cv2.resize(steps, (s.width, s.height), interpolation=cv2.INTER_NEAREST)
                pred = Path(scratch) / f"{safe_name(sample_id)}.png"
                Image.fromarray(binned).save(pred)
            regions = None
            if found.regions is not None:
                mine = found.regions[found.regions["id"] == sample_id]
                regions = [(int(r.x0), int(r.y0), int(r.x1), int(r.y1), f"label here ({r.score:.2f})")
                           for r in mine.itertuples()]
            samples.append(ExplorerSample(sample_id, s.split, dataset.root / s.image, None, pred, regions=regions))
        view = {"name": "Selected to label", "sort": "rank", "dir": "asc", "overlay": "pred",
                "note": f"Selection {found.name}: the {len(samples)} pool images picked to label next, in rank "
                        f"order ({table['strategy'].iloc[0]}; {found.cost_px:,} px). Overlay: the model's "
                        "uncertainty per pixel as a heat ramp (clear below 0.1)."
                        + (" Yellow boxes: the patches to label." if found.regions is not None else "")}
        return write_explorer(Path(out_dir), bins, samples, table.drop(columns=["selected"]), {},
                              f"To label next: {dataset.root.name}", None, view=view)
