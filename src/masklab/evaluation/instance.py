"""Score an instance model on a data loader: COCO mask AP, Boundary AP, PQ, the semantic scores of the
painted objects, and per-sample counts and matches."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from masklab.data.classes import ClassTable
from masklab.evaluation.evaluate import EvaluationResult
from masklab.metrics import SemanticMetrics, named_scalars, per_image_scores

# The console table's headline columns, in order (the metric names of masklab.metrics.instance).
HEADLINES = ("mask_AP", "mask_AP50", "mask_AP75", "boundary_AP", "PQ", "SQ", "RQ")


def painted_truth(class_ids: np.ndarray, masks: np.ndarray, iscrowd: np.ndarray,
                  ignore_index: int | None) -> np.ndarray:
    """(H, W) int64 class map of ground-truth objects (K, H, W), later objects on top. Crowd regions (``iscrowd``)
    are ``ignore_index`` where no other object covers them: AP and PQ do not score them, nor does the painted mIoU."""
    out = np.zeros(masks.shape[1:], np.int64)
    crowd = np.zeros(masks.shape[1:], bool)
    covered = np.zeros(masks.shape[1:], bool)
    for class_id, mask, is_crowd in zip(class_ids, masks, iscrowd):
        if is_crowd:
            crowd |= mask
        else:
            out[mask] = class_id
            covered |= mask
    if ignore_index is not None:
        out[crowd & ~covered] = ignore_index
    return out


@torch.no_grad()
def evaluate_instances(task: Any, predictor: Any, loader: Iterable[dict[str, list[Any]]], class_table: ClassTable,
                       prefix: str, options: Mapping[str, Any],
                       on_prediction: Callable[[str, Any], None] | None = None) -> EvaluationResult:
    """Score ``predictor`` on ``loader``'s batches (lists of image (H_i, W_i, 3) uint8, objects ObjectSet, id)
    at the resolution being scored; ``task.predict`` turns the predictor's output into objects.

    Metrics (``<prefix>/<name>``): the instance metrics of :class:`masklab.metrics.instance.InstanceMetrics`
    (mask AP family, Boundary AP, PQ/SQ/RQ) and the semantic ones (mIoU, ...) of the objects painted
    into class maps, so an instance and a semantic model compare on the same data. Per sample: the
    instance row (counts, count error, image AP, matches) and the painted mIoU.
    """
    from masklab.metrics.instance import InstanceMetrics

    names = class_table.names
    c = class_table.num_classes
    dilation = float(options.get("dilation_ratio", 0.02))
    boundary = bool(options.get("boundary", True))
    instance = InstanceMetrics(class_table.object_class_ids, dilation_ratio=dilation, boundary=boundary)
    semantic = SemanticMetrics(c, class_table.ignore_index)
    rows: list[dict[str, Any]] = []
    for batch in loader:
        for sample_id, objects, prediction in zip(batch["id"], batch["objects"], task.predict(predictor,
                                                                                            batch["image"])):
            row = dict(instance.update(sample_id, objects.masks, objects.class_ids, objects.iscrowd,
                                       prediction.masks, prediction.class_ids, prediction.scores))
            truth = torch.from_numpy(painted_truth(objects.class_ids, objects.masks, objects.iscrowd,
                                                   class_table.ignore_index))[None]
            painted = torch.from_numpy(prediction.class_map().astype(np.int64))[None]
            scores = per_image_scores(painted, truth, c, class_table.ignore_index)
            semantic.update(counts=scores)
            row.pop("sample_id", None)
            row["id"] = sample_id
            row["mIoU"] = float(scores["miou"][0])
            rows.append({k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in row.items()})
            if on_prediction is not None:
                on_prediction(sample_id, prediction)
    metrics = {f"{prefix}/{k}": float(v) for k, v in instance.compute().items() if not math.isnan(float(v))}
    pooled = semantic.compute()
    metrics.update(named_scalars({k: v for k, v in pooled.items() if k in ("mIoU", "mDice", "pixel_acc")}, prefix,
                                 names))
    per_class = pd.DataFrame(instance.per_class())
    if len(per_class):
        by_id = dict(zip(class_table.ids, names))
        per_class.insert(0, "class", [by_id[int(i)] for i in per_class["class_id"]])
    per_sample = pd.DataFrame(rows)
    if len(per_sample):
        per_sample = per_sample[["id", *[k for k in per_sample.columns if k != "id"]]]
    confusion = semantic.confmat.cpu().numpy()
    return EvaluationResult(metrics, per_class, per_sample, confusion, np.zeros_like(confusion), names, prefix)


def instance_table_text(result: EvaluationResult, title: str) -> Any:
    """A rich Table: the headline instance metrics, then one row per class when the evaluation has them."""
    from rich.table import Table

    table = Table(title=title, min_width=min(len(title) + 4, 100))
    for column in ("metric", "value"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in (*HEADLINES, "mIoU"):
        value = result.headline(name)
        table.add_row(name, "-" if math.isnan(value) else f"{value:.4f}")
    return table
