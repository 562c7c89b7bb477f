"""Score a model on a data loader: pooled and per-image metrics, boundary IoU, confidence, a per-sample table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from masklab.data.classes import ClassTable
from masklab.files import atomic_write
from masklab.inference.engine import Predictor
from masklab.metrics import (
    DEFAULT_IGNORE_CONVENTION,
    SemanticMetrics,
    argmax_classes,
    named_scalars,
    per_image_scores,
)

# Per-class columns of the per-sample table, in this order: "<metric>/<class name>".
PER_CLASS_COLUMNS = ("iou", "dice", "boundary_iou", "tp", "fp", "fn", "true_area", "pred_area", "missed",
                     "hallucinated")


@dataclass
class EvaluationResult:
    """``metrics``: flat {"<prefix>/mIoU": value, ...}; ``per_sample``: one row per sample id;
    ``confusion``: pooled (C, C) pixel counts [gt, pred]; ``confused_images``: (C, C) number of
    images in which gt class a had pixels predicted as b."""

    metrics: dict[str, float]
    per_class: pd.DataFrame
    per_sample: pd.DataFrame
    confusion: np.ndarray
    confused_images: np.ndarray
    class_names: list[str]
    prefix: str
    # The metric that sums the evaluation up (the task's: mIoU, mask_AP), also a per-sample column.
    headline_metric: str = "mIoU"

    def headline(self, name: str | None = None) -> float:
        """The pooled value of metric ``name`` (default: the headline metric); NaN when it was not computed."""
        return self.metrics.get(f"{self.prefix}/{name or self.headline_metric}", float("nan"))


def confidence_stats(logits: torch.Tensor, low_threshold: float) -> dict[str, torch.Tensor]:
    """Per image (N,): mean max-probability, mean normalised entropy (0..1), fraction of pixels whose
    max-probability is below ``low_threshold``. logits (N, C, H, W); every pixel counts."""
    probs = logits.float().softmax(dim=1)
    max_prob = probs.max(dim=1).values
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1) / math.log(max(logits.shape[1], 2))
    return {
        "conf_mean_max_prob": max_prob.mean(dim=(1, 2)),
        "conf_mean_entropy": entropy.mean(dim=(1, 2)),
        "conf_low_fraction": (max_prob < low_threshold).float().mean(dim=(1, 2)),
    }


@torch.no_grad()
def score_semantic(
    predictor: Predictor,
    loader: Iterable[dict[str, list[Any]]],
    class_table: ClassTable,
    prefix: str,
    boundary: bool = True,
    dilation_ratio: float = 0.02,
    low_confidence: float = 0.5,
    boundary_ignore: str = DEFAULT_IGNORE_CONVENTION,
    on_prediction: Callable[[str, np.ndarray], None] | None = None,
    resolution: str = "original",
) -> EvaluationResult:
    """Score ``predictor`` on ``loader``'s batches: lists of image (H_i, W_i, 3) uint8, mask
    (H_i, W_i) class ids and id (images may differ in size); ``resolution="model"``: the masks are at the
    network's size already and the predictor's logits stay there (``Predictor.logits``).

    The predictor brings its logits back to each image's size, so each mask is compared with
    exactly what would be deployed; the boundary band is taken from each image's own diagonal.
    ``on_prediction(id, pred (H, W) uint8)`` receives every predicted mask (e.g. to save it).
    ``boundary_ignore``: Boundary IoU's convention for void pixels (:mod:`masklab.metrics.boundary`).
    """
    device = predictor.device
    names = class_table.names
    c = class_table.num_classes
    metrics = SemanticMetrics(c, class_table.ignore_index, boundary=boundary, dilation_ratio=dilation_ratio,
                              boundary_ignore=boundary_ignore).to(device)
    confused_images = torch.zeros(c, c, dtype=torch.int64, device=device)
    frames: list[pd.DataFrame] = []
    order: list[str] = []
    for batch in loader:
        logits = predictor.logits(batch["image"], resolution=resolution)
        order.extend(batch["id"])
        # Images of one size are scored together (per-image rows stay per image either way).
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, lg in enumerate(logits):
            by_size.setdefault(tuple(lg.shape[-2:]), []).append(i)
        for indices in by_size.values():
            group = torch.stack([logits[i] for i in indices])
            target = torch.stack([torch.from_numpy(np.asarray(batch["mask"][i], dtype=np.int64))
                                  for i in indices]).to(device)
            ids = [batch["id"][i] for i in indices]
            pred = argmax_classes(group)
            # One pass over the pixels serves the per-sample rows, the dataset scores and the confusions.
            scores = per_image_scores(pred, target, c, class_table.ignore_index, boundary=boundary,
                                      dilation_ratio=dilation_ratio, boundary_ignore=boundary_ignore)
            metrics.update(counts=scores)
            confused_images += (scores["confusion"] > 0).sum(dim=0)
            scores["missed"] = (scores["true_area"] > 0) & (scores["tp"] == 0)
            scores["hallucinated"] = (scores["true_area"] == 0) & (scores["pred_area"] > 0)
            frames.append(_rows(ids, scores, confidence_stats(group, low_confidence), names, boundary))
            if on_prediction is not None:
                for sample_id, p in zip(ids, pred.to(torch.uint8).cpu().numpy()):
                    on_prediction(sample_id, p)
    return _semantic_result(metrics, confused_images, frames, order, names, prefix)


def _semantic_result(metrics: SemanticMetrics, confused_images: torch.Tensor, frames: list[pd.DataFrame],
                     order: list[str], names: list[str], prefix: str) -> EvaluationResult:
    """The EvaluationResult of accumulated semantic scores: named metrics, per-class and per-sample tables (in
    the loader's ``order``), the pooled confusion and the off-diagonal confused-image counts."""
    result = metrics.compute()
    per_class = {"class": names, "IoU": result["iou"].cpu().numpy(), "Dice": result["dice"].cpu().numpy()}
    if "boundary_iou" in result:
        per_class["BoundaryIoU"] = result["boundary_iou"].cpu().numpy()
    per_class.update({"IoU_image": result["iou_image"].cpu().numpy(), "Dice_image": result["dice_image"].cpu().numpy()})
    confusion = metrics.confmat.cpu().numpy()
    off_diagonal = confused_images.cpu().numpy() * (1 - np.eye(len(names), dtype=np.int64))
    per_sample = pd.DataFrame()
    if frames:
        # Rows in the loader's order, whatever order the size groups were scored in.
        per_sample = pd.concat(frames, ignore_index=True).set_index("id").loc[order].reset_index()
    return EvaluationResult(named_scalars(result, prefix, names), pd.DataFrame(per_class), per_sample, confusion,
                            off_diagonal, names, prefix)


def _rows(ids: list[str], scores: dict[str, torch.Tensor], confidence: dict[str, torch.Tensor], names: list[str],
          boundary: bool) -> pd.DataFrame:
    """One batch of per-sample rows, built column-wise (no per-sample Python loop over classes)."""
    cols: dict[str, Any] = {"id": list(ids)}
    cols["mIoU"] = scores["miou"].cpu().numpy()
    cols["mDice"] = scores["mdice"].cpu().numpy()
    if boundary:
        cols["boundary_mIoU"] = scores["boundary_miou"].cpu().numpy()
    cols["pixel_acc"] = scores["pixel_acc"].cpu().numpy()
    for key, value in confidence.items():
        cols[key] = value.cpu().numpy()
    for metric in PER_CLASS_COLUMNS:
        if metric not in scores:
            continue
        values = scores[metric].cpu().numpy()
        for ci, name in enumerate(names):
            cols[f"{metric}/{name}"] = values[:, ci]
    return pd.DataFrame(cols)


def confusion_pairs(result: EvaluationResult) -> pd.DataFrame:
    """Which classes are confused with which: gt, pred, pixels, share of the gt class's pixels,
    and in how many images; largest pixel counts first (diagonal left out)."""
    rows = []
    totals = result.confusion.sum(axis=1)
    for a, gt in enumerate(result.class_names):
        for b, pr in enumerate(result.class_names):
            if a != b and result.confusion[a, b] > 0:
                rows.append({"gt": gt, "pred": pr, "pixels": int(result.confusion[a, b]),
                             "share_of_gt": float(result.confusion[a, b] / max(totals[a], 1)),
                             "images": int(result.confused_images[a, b])})
    return pd.DataFrame(rows, columns=["gt", "pred", "pixels", "share_of_gt", "images"]).sort_values(
        "pixels", ascending=False, ignore_index=True)


def write_evaluation(result: EvaluationResult, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>_metrics.json``, ``_per_class.csv``, ``_per_sample.parquet``, ``_confusion.csv``
    (raw pixel counts, rows = gt) and ``_confusion_pairs.csv``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{stem}_{name}" for name in ("metrics.json", "per_class.csv", "per_sample.parquet",
                                                          "confusion.csv", "confusion_pairs.csv")}
    clean = {k: (None if math.isnan(v) else v) for k, v in result.metrics.items()}
    atomic_write(paths["metrics.json"], lambda p: p.write_text(json.dumps(clean, indent=2)))
    atomic_write(paths["per_class.csv"], lambda p: result.per_class.to_csv(p, index=False))
    atomic_write(paths["per_sample.parquet"], lambda p: result.per_sample.to_parquet(p, index=False))
    confusion = pd.DataFrame(result.confusion, index=result.class_names, columns=result.class_names)
    atomic_write(paths["confusion.csv"], lambda p: confusion.to_csv(p, index_label="gt \\ pred"))
    atomic_write(paths["confusion_pairs.csv"], lambda p: confusion_pairs(result).to_csv(p, index=False))
    return list(paths.values())


def class_table_text(result: EvaluationResult, title: str) -> Any:
    """A rich Table: one row per class (IoU, Dice, boundary IoU pooled and per image) and a mean row."""
    from rich.table import Table

    table = Table(title=title)
    columns = list(result.per_class.columns)
    for col in columns:
        table.add_column(col, justify="left" if col == "class" else "right")

    def fmt(v: float) -> str:
        return "-" if v is None or math.isnan(v) else f"{v:.4f}"

    for row in result.per_class.itertuples(index=False):
        table.add_row(row[0], *(fmt(v) for v in row[1:]))
    # The mean row shows the headline numbers: the per-image columns are means over images, not classes.
    headline = {"IoU": "mIoU", "Dice": "mDice", "BoundaryIoU": "mBoundaryIoU", "IoU_image": "mIoU_image",
                "Dice_image": "mDice_image"}
    table.add_row("[bold]mean[/bold]", *(fmt(result.headline(headline[c])) for c in columns[1:]))
    return table
