"""Score a model on a data loader: pooled and per-image metrics plus a per-sample table."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from masklab.data.format import ClassTable
from masklab.metrics import SemanticMetrics, named_scalars, per_image_scores


@dataclass
class EvaluationResult:
    """``metrics``: flat {"<prefix>/mIoU": value, ...}; ``per_sample``: one row per sample id."""

    metrics: dict[str, float]
    per_class: pd.DataFrame
    per_sample: pd.DataFrame
    prefix: str

    def headline(self, name: str) -> float:
        return self.metrics.get(f"{self.prefix}/{name}", float("nan"))


@torch.no_grad()
def evaluate_model(
    model: nn.Module, loader: DataLoader, class_table: ClassTable, prefix: str, device: str | torch.device = "cpu"
) -> EvaluationResult:
    """Run ``model`` over ``loader`` (batches of image (N,3,H,W) uint8, mask (N,H,W) int64, id)."""
    model = model.to(device).eval()
    names = class_table.names
    metrics = SemanticMetrics(class_table.num_classes, class_table.ignore_index).to(device)
    rows: list[dict[str, Any]] = []
    for batch in loader:
        target = batch["mask"].to(device)
        pred = model(batch["image"].to(device)).argmax(dim=1)
        metrics.update(pred, target)
        scores = {k: v.cpu() for k, v in per_image_scores(pred, target, class_table.num_classes,
                                                         class_table.ignore_index).items()}
        for i, sample_id in enumerate(batch["id"]):
            row: dict[str, Any] = {"id": sample_id, "mIoU": float(scores["miou"][i]),
                                   "mDice": float(scores["mdice"][i]), "pixel_acc": float(scores["pixel_acc"][i])}
            row.update({f"iou/{n}": float(scores["iou"][i, c]) for c, n in enumerate(names)})
            row.update({f"dice/{n}": float(scores["dice"][i, c]) for c, n in enumerate(names)})
            rows.append(row)
    result = metrics.compute()
    per_class = pd.DataFrame({
        "class": names,
        "IoU": result["iou"].cpu().numpy(),
        "Dice": result["dice"].cpu().numpy(),
        "IoU_image": result["iou_image"].cpu().numpy(),
        "Dice_image": result["dice_image"].cpu().numpy(),
    })
    return EvaluationResult(named_scalars(result, prefix, names), per_class, pd.DataFrame(rows), prefix)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_evaluation(result: EvaluationResult, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>_metrics.json``, ``<stem>_per_class.csv`` and ``<stem>_per_sample.parquet`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / f"{stem}_metrics.json"
    clean = {k: (None if math.isnan(v) else v) for k, v in result.metrics.items()}
    _atomic_write(metrics_path, lambda p: p.write_text(json.dumps(clean, indent=2)))
    class_path = out_dir / f"{stem}_per_class.csv"
    _atomic_write(class_path, lambda p: result.per_class.to_csv(p, index=False))
    sample_path = out_dir / f"{stem}_per_sample.parquet"
    _atomic_write(sample_path, lambda p: result.per_sample.to_parquet(p, index=False))
    return [metrics_path, class_path, sample_path]


def class_table_text(result: EvaluationResult, title: str) -> Any:
    """A rich Table: one row per class (IoU, Dice pooled and per image) and a mean row."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("class", "IoU", "Dice", "IoU (per image)", "Dice (per image)"):
        table.add_column(col, justify="left" if col == "class" else "right")

    def fmt(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.4f}"

    for row in result.per_class.itertuples(index=False):
        table.add_row(row[0], *(fmt(v) for v in row[1:]))
    # The mean row shows the headline numbers: the per-image columns are means over images, not classes.
    means = [result.headline(n) for n in ("mIoU", "mDice", "mIoU_image", "mDice_image")]
    table.add_row("[bold]mean[/bold]", *(fmt(v) for v in means))
    return table
