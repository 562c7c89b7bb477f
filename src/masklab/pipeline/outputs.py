"""The files a DVC stage declares: what `train` and `evaluate` leave for `dvc metrics` and `dvc plots`.

Metrics files hold only numbers that the same data, config and code reproduce (no run ids, no
times), so ``dvc metrics diff`` between two commits shows real changes and nothing else. Next to
each, ``platform.json`` records the platform fingerprint the numbers were computed on: they are
reproduced bit for bit on the same platform only (README, "Same numbers elsewhere").
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from masklab.files import atomic_write

# Names of the files in a stage's folder, shared with dvc.yaml.
MODEL_FILE = "model.ckpt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
PER_CLASS_FILE = "per_class.csv"
PLATFORM_FILE = "platform.json"


def _clean(value: float | int | None) -> float | int | None:
    """JSON-safe: NaN -> null, floats rounded to 6 decimals (short diffs in git), ints kept."""
    if value is None or isinstance(value, int):
        return value
    return None if math.isnan(value) else round(float(value), 6)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_platform(folder: Path) -> Path:
    """``platform.json``: this process's platform fingerprint (CPU model, torch, threads, flags)."""
    from masklab.platform import platform_fingerprint

    return write_json(folder / PLATFORM_FILE, platform_fingerprint())


def history_rows(history: Mapping[str, Sequence[tuple[int, float]]]) -> list[dict[str, Any]]:
    """Per-epoch rows from MLflow metric histories logged once per epoch: row i = epoch i."""
    length = max((len(points) for points in history.values()), default=0)
    rows = []
    for epoch in range(length):
        row: dict[str, Any] = {"epoch": epoch}
        for key, points in history.items():
            row[key] = _clean(points[epoch][1]) if epoch < len(points) else None
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def write_train_outputs(folder: Path, best_checkpoint: Path, metrics: Mapping[str, float],
                        history: Mapping[str, Sequence[tuple[int, float]]], run_info: Mapping[str, Any],
                        config_yaml: str) -> list[Path]:
    """``model.ckpt`` (weights + metadata), ``metrics.json``, ``history.csv`` (one row per epoch),
    ``run.json`` (which MLflow run, git commit and data version), ``config.yaml`` (the composed config)
    and ``platform.json`` (what trained it)."""
    from masklab.evaluation.checkpoint import write_inference_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    rows = history_rows(history)
    return [
        write_inference_checkpoint(best_checkpoint, folder / MODEL_FILE),
        write_json(folder / METRICS_FILE, {k: _clean(v) for k, v in metrics.items()}),
        write_csv(folder / HISTORY_FILE, rows, ["epoch", *history.keys()]),
        write_json(folder / RUN_FILE, dict(run_info)),
        atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(config_yaml)),
        write_platform(folder),
    ]


def write_fit_outputs(folder: Path, fitted: Any, config_yaml: str) -> list[Path]:
    """The train stage's files (:func:`write_train_outputs`) from ``fitted`` (a ``workflows.FitResult`` on rank
    zero with a best checkpoint): its curves read back from its MLflow run. ``config_yaml``: the config as the
    caller passed it to ``fit``."""
    from masklab.tracking.runs import RunLog

    history = RunLog(fitted.tracking_uri, fitted.run_id).metric_history(fitted.curves)
    provenance = fitted.provenance
    run_info = {"mlflow_run_id": fitted.run_id, "experiment": fitted.experiment, "git_commit": provenance.git_commit,
                "dataset": fitted.dataset, "dataset_dvc_md5": provenance.data_md5,
                "dataset_dvc_status": provenance.data_status, "manifest_sha256": fitted.manifest_sha256}
    metrics = {f"best_{fitted.monitor}": fitted.best_value, "epochs": fitted.epochs}
    return write_train_outputs(Path(folder), fitted.best_checkpoint, metrics, history, run_info, config_yaml)


def write_evaluation_outputs(folder: Path, metrics_by_split: Mapping[str, Mapping[str, float]],
                             per_class: Any) -> list[Path]:
    """``metrics.json`` as ``{split: {metric: value}}`` (``eval/<split>/`` prefixes dropped) and
    ``per_class.csv`` (class, IoU, Dice, boundary IoU of the first split) for a bar plot, and
    ``platform.json`` (what computed them)."""
    nested = {
        split: {key.split("/", 2)[-1]: _clean(value) for key, value in metrics.items()}
        for split, metrics in metrics_by_split.items()
    }
    per_class_rows = [{k: (_clean(v) if isinstance(v, float) else v) for k, v in row.items()}
                      for row in per_class.to_dict(orient="records")]
    return [
        write_json(folder / METRICS_FILE, nested),
        write_csv(folder / PER_CLASS_FILE, per_class_rows, list(per_class.columns)),
        write_platform(folder),
    ]


def write_cv_outputs(folder: Path, summary: Mapping[str, tuple[float, float]], parent_run_id: str) -> list[Path]:
    """The cv stage's ``metrics.json`` ({metric: {mean, std}} over folds) and ``run.json`` (the
    cross-validation's MLflow parent run, which the label-errors stage logs to)."""
    return [write_json(folder / METRICS_FILE, {name: {"mean": _clean(m), "std": _clean(sd)}
                                               for name, (m, sd) in summary.items()}),
            write_json(folder / RUN_FILE, {"mlflow_run_id": parent_run_id})]
