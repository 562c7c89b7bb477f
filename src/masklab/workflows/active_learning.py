"""``select``: score every unlabelled (pool) sample of a dataset with a model and pick what to label next.

One pass over the pool in batches (class probabilities at the model's input size, through the task, so
semantic and instance models alike), only small per-sample numbers kept; then the strategy picks within the
budget (masklab.active.selection). Outputs keyed by sample id: ``selection.parquet`` (every pool sample: rank,
score, selected, label cost) and, for region queries, ``regions.parquet``; with ``record``, the selection is
also written into the dataset folder (``selections/<name>.parquet``) and the picked rows' manifest entry
``selected_in`` is set, so the selection is part of the data version DVC commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from masklab.active.selection import Strategy
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


def _class_weights(dataset: Any, task: Any, seed: int) -> np.ndarray:
    from masklab.active.uncertainty import class_weights

    labelled = [s for s in dataset.samples if s.labeled and s.has_target]
    rng = np.random.default_rng(seed)
    chosen = [labelled[i] for i in sorted(rng.choice(len(labelled), min(len(labelled), CLASS_COUNT_SAMPLES),
                                                     replace=False))] if labelled else []
    counts = np.zeros(dataset.class_table.num_classes)
    for s in chosen:
        label = task.label_map(dataset.root, s)
        valid = label[label < len(counts)]
        counts += np.bincount(valid.reshape(-1), minlength=len(counts))[: len(counts)]
    return class_weights(counts)


def _score_pool(pool: list[Any], dataset: Any, package: Any, strategy: Strategy, device: str, batch_size: int,
                on_map: Any = None) -> np.ndarray:
    """(N,) scores of the pool samples; ``on_map(i, u)`` gets each sample's (h, w) float32 uncertainty map at
    the model's resolution as it is computed (nothing else keeps the maps: pools are large)."""
    import torch

    from masklab.active.uncertainty import aggregate, pixel_uncertainty
    from masklab.console import progress
    from masklab.data.format import read_image
    from masklab.inference.engine import Predictor
    from masklab.tasks import get_task

    task = get_task(package.spec.get("task", "semantic"))
    predictor = Predictor(package.model, package.input_rule, device, batch_size)
    mc = strategy.name == "bald"
    if mc:
        if enable_mc_dropout(predictor.model) == 0:
            net = type(getattr(package.model, "net", package.model)).__name__
            raise UserError(f"strategy=bald: the model ({net}) has no dropout layers, so MC-dropout samples "
                            "would all be equal; choose another strategy or a model with dropout")
        torch.manual_seed(strategy.seed)
    weights = _class_weights(dataset, task, strategy.seed) if strategy.aggregate == "class_balanced" else None
    scores = np.zeros(len(pool))
    batches = [list(range(i, min(i + batch_size, len(pool)))) for i in range(0, len(pool), batch_size)]
    try:
        for batch in progress(batches, f"Scoring {len(pool)} pool images ({strategy.describe()})"):
            images = [read_image(dataset.root / pool[i].image) for i in batch]
            if mc:
                samples = [task.class_probabilities(predictor, images, "model") for _ in range(strategy.mc_samples)]
                probs = [np.stack([s[k] for s in samples]).astype(np.float32) for k in range(len(images))]
            else:
                probs = [p.astype(np.float32) for p in task.class_probabilities(predictor, images, "model")]
            for i, p in zip(batch, probs):
                u = pixel_uncertainty(p, "bald" if mc else strategy.pixel_measure)
                predicted = (p.mean(axis=0) if mc else p).argmax(axis=0) if weights is not None else None
                scores[i] = aggregate(u, strategy.aggregate, strategy.top_fraction, predicted, weights)
                if on_map is not None:
                    on_map(i, u)
    finally:
        if mc:
            predictor.model.eval()
    return scores


def select(dataset: Any, package: Any, strategy: Strategy, budget: float, unit: str = "images",
           output_dir: str | Path | None = None, model_name: str = "", cache_dir: str | Path | None = None,
           device: str = "auto", batch_size: int = 8, name: str | None = None) -> Selection:
    """Pick pool samples of a loaded ``dataset`` to label next with a loaded model ``package``.

    ``budget``: images (unit "images") or labelled pixels (unit "pixels"; an image costs width x height, a
    region its area). ``cache_dir``: where the core-set / hybrid strategies cache embeddings. Writes
    ``selection.parquet`` (and ``regions.parquet``) to ``output_dir`` when given. Deterministic for a seed."""
    import pandas as pd

    from masklab.active.diversity import k_center_greedy, most_uncertain_per_cluster
    from masklab.active.regions import patch_regions
    from masklab.active.selection import check_budget, rank_order, take_within_budget
    from masklab.files import atomic_write

    budget = check_budget(budget, unit)
    pool = _pool(dataset)
    name = name or f"{strategy.name}-{dataset.manifest_hash[:8]}"
    costs = np.array([s.width * s.height for s in pool], np.float64)
    scores = np.zeros(len(pool))
    regions = None
    found_regions: list[tuple[int, Any]] = []  # (pool index, Region) of every patch, for region queries

    def keep_regions(i: int, u: np.ndarray) -> None:
        found_regions.extend((i, r) for r in patch_regions(u, pool[i].width, pool[i].height, strategy.patch))

    if "probs" in strategy.needs or "mc" in strategy.needs:
        scores = _score_pool(pool, dataset, package, strategy, device, batch_size,
                             keep_regions if strategy.name == "regions" else None)
    if strategy.name == "random":
        scores = np.random.default_rng(strategy.seed).random(len(pool))
        order = rank_order(scores)
    elif "embeddings" in strategy.needs:
        vectors, labelled = _embeddings(dataset, pool, package, cache_dir, device, batch_size)
        # enough picks to fill the budget: a pixel budget with images of the pool's mean size, twice over
        count = int(budget) if unit == "images" else int(np.ceil(budget / costs.mean())) * 2 + 1
        count = min(len(pool), count)
        picks = k_center_greedy(vectors, labelled, count, strategy.seed) if strategy.name == "coreset" else \
            most_uncertain_per_cluster(vectors, scores, count, strategy.seed)
        taken = set(picks)
        order = np.array(picks + [int(i) for i in rank_order(scores) if int(i) not in taken])
        if strategy.name == "coreset":  # its score: the order the greedy search took the samples in
            scores = np.zeros(len(pool))
            scores[picks] = 1.0 - np.arange(len(picks)) / max(len(picks), 1)
    else:
        order = rank_order(scores)
    if strategy.name == "regions":
        region_order = rank_order(np.array([r.score for _, r in found_regions]))
        region_costs = np.array([r.cost_px for _, r in found_regions], np.float64)
        taken_regions = take_within_budget(region_order, region_costs, budget, unit)
        regions = pd.DataFrame([{"id": pool[found_regions[k][0]].id, "x0": found_regions[k][1].x0,
                                 "y0": found_regions[k][1].y0, "x1": found_regions[k][1].x1,
                                 "y1": found_regions[k][1].y1, "score": round(found_regions[k][1].score, 6),
                                 "cost_px": found_regions[k][1].cost_px} for k in taken_regions],
                               columns=["id", "x0", "y0", "x1", "y1", "score", "cost_px"])
        picked_idx = list(dict.fromkeys(found_regions[k][0] for k in taken_regions))
        cost = int(region_costs[taken_regions].sum()) if taken_regions else 0
    else:
        picked_idx = take_within_budget(order, costs, budget, unit)
        cost = int(costs[picked_idx].sum()) if picked_idx else 0
    rank = np.empty(len(pool), int)
    rank[np.asarray(order, int)] = np.arange(1, len(pool) + 1)
    chosen = set(picked_idx)
    table = pd.DataFrame({
        "id": [s.id for s in pool], "rank": rank, "score": np.round(scores, 6),
        "selected": [i in chosen for i in range(len(pool))], "cost_px": costs.astype(np.int64),
        "strategy": strategy.describe(), "model": model_name, "dataset": dataset.manifest_hash,
        "selection": name,
    }).sort_values("rank", kind="stable").reset_index(drop=True)
    picked = [pool[i].id for i in sorted(picked_idx, key=lambda i: rank[i])]
    found_selection = Selection(name, table, picked, cost, regions)
    if found_selection.picked and ("probs" in strategy.needs or "mc" in strategy.needs):
        # The picks' uncertainty maps for the explorer: a second pass over the few picked images.
        picks = [s for s in pool if s.id in set(picked)]
        kept: dict[str, np.ndarray] = {}
        _score_pool(picks, dataset, package, strategy, device, batch_size,
                    lambda i, u: kept.__setitem__(picks[i].id, np.round(u * 255).astype(np.uint8)))
        found_selection.maps = kept
    if output_dir is not None:
        out = Path(output_dir)
        found_selection.paths.append(atomic_write(out / SELECTION_FILE, lambda tmp: table.to_parquet(tmp, index=False)))
        if regions is not None:
            found_selection.paths.append(atomic_write(out / REGIONS_FILE,
                                                      lambda tmp: regions.to_parquet(tmp, index=False)))
    return found_selection


def _embeddings(dataset: Any, pool: list[Any], package: Any, cache_dir: str | Path | None, device: str,
                batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool vectors, labelled train vectors), comparable unit rows from the model's own encoder."""
    from masklab.curation.embeddings import Embeddings, embed_dataset
    from masklab.inference.embeddings import package_embedder
    from masklab.workflows.curation import comparable

    embedder = package_embedder(package, device=device, batch_size=batch_size)
    labelled = [s for s in dataset.samples if s.labeled and s.split == "train"]
    found = embed_dataset(dataset, embedder, cache_dir, [*pool, *labelled])
    vectors = comparable(Embeddings(found.ids, found.vectors, found.source, found.key, found.dataset))
    return vectors[: len(pool)], vectors[len(pool):]


def record_selection(dataset: Any, found: Selection) -> Path:
    """Write the selection into the dataset folder (``selections/<name>.parquet``) and set ``selected_in`` on the
    picked rows of the manifest, atomically: the next data version (``dvc commit``) holds what was chosen."""
    from masklab.data.format import read_manifest, write_manifest
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

    from masklab.data.format import ClassInfo, ClassTable

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

    from masklab.data.format import safe_name
    from masklab.report.explorer import ExplorerSample, write_explorer

    bins = uncertainty_ramp()
    by_id = {s.id: s for s in dataset.samples}
    table = found.table[found.table["selected"]]
    with tempfile.TemporaryDirectory(prefix="masklab-al-") as scratch:
        samples = []
        for sample_id in table["id"]:
            s = by_id[sample_id]
            pred = None
            if sample_id in found.maps:
                binned = (found.maps[sample_id].astype(np.int32) * HEAT_STEPS // 256).astype(np.uint8)
                binned = cv2.resize(binned, (s.width, s.height), interpolation=cv2.INTER_NEAREST)
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
