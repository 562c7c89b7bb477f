"""`masklab evaluate`: score a checkpoint, an MLflow run or a registered model on a dataset split."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from masklab.data.open import open_dataset
from masklab.data.format import ClassTable, Dataset
from masklab.errors import UserError

CURVE_METRICS = ("train/loss_epoch", "val/loss", "val/mIoU", "val/mDice", "val/mBoundaryIoU")


def prediction_writer(dataset: Dataset, folder: Path):
    """A callback writing each prediction as ``<folder>/<safe id>.png`` at the image's original size."""
    import cv2
    from PIL import Image

    sizes = {s.id: (s.width, s.height) for s in dataset.samples}
    folder.mkdir(parents=True, exist_ok=True)

    def write(sample_id: str, pred: np.ndarray) -> None:
        size = sizes[sample_id]
        if pred.shape[::-1] != size:
            pred = cv2.resize(pred, size, interpolation=cv2.INTER_NEAREST)
        Image.fromarray(pred, mode="L").save(folder / f"{sample_id.replace('/', '__')}.png")

    return write


def evaluate_model_on(
    model: Any, class_table: ClassTable, label: str, dataset: Dataset, eval_transforms: Any, split: str,
    output_dir: Path, run=None, batch_size: int = 8, options: DictConfig | dict | None = None,
):
    """Evaluate ``model`` on ``split``: print the class table, write tables, predictions and plots to
    ``output_dir/evaluation`` and to ``run``; with ``options.compare`` (a run id) add per-sample deltas."""
    from rich.console import Console
    from torch.utils.data import DataLoader

    from masklab.augment import build_pipeline
    from masklab.data.datamodule import SegmentationSplit
    from masklab.evaluation.analysis import row_normalised
    from masklab.evaluation.evaluate import class_table_text, evaluate_model, write_evaluation
    from masklab.report.plots import confusion_heatmap, per_class_bars, training_curves

    opts = dict(options or {})
    if class_table.names != dataset.class_table.names:
        raise UserError(f"{label} has classes {class_table.names}; dataset {dataset.root} has "
                        f"{dataset.class_table.names}")
    samples = dataset.split(split)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{split}' is empty")
    out = output_dir / "evaluation"
    loader = DataLoader(SegmentationSplit(dataset, samples, build_pipeline(eval_transforms)), batch_size=batch_size)
    result = evaluate_model(model, loader, dataset.class_table, prefix=f"eval/{split}",
                            boundary=bool(opts.get("boundary", True)),
                            dilation_ratio=float(opts.get("dilation_ratio", 0.02)),
                            low_confidence=float(opts.get("low_confidence", 0.5)),
                            on_prediction=prediction_writer(dataset, out / f"{split}_pred"))
    result.per_sample.insert(1, "split", split)
    files = write_evaluation(result, out, split)
    files.append(per_class_bars(result.per_class, out / f"{split}_per_class.png"))
    files.append(confusion_heatmap(row_normalised(result.confusion), result.class_names,
                                   out / f"{split}_confusion.png"))
    if run is not None:
        history = run.metric_history(CURVE_METRICS)
        if history:
            files.append(training_curves(history, out / "training_curves.png"))
    Console().print(class_table_text(result, f"{dataset.name} / {split}: {len(samples)} images, {label}"))
    if opts.get("compare"):
        files.append(compare_with(result.per_sample, str(opts["compare"]), split, out, run))
    if run is not None:
        run.metrics(result.metrics)
        run.files(files, "evaluation")
        run.directory(out / f"{split}_pred", f"evaluation/{split}_pred")
    return result


def compare_with(per_sample, other_run: str, split: str, out: Path, run) -> Path:
    """Join this evaluation with run ``other_run``'s per-sample table on id; write and print the deltas."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from masklab.tracking.runs import RunLog

    if run is None:
        raise UserError("compare= needs the evaluation to be tracked in MLflow")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            other = RunLog(run.tracking_uri, other_run)
            other.run_data()
        except Exception as exc:
            raise UserError(f"compare={other_run}: no such MLflow run in {run.tracking_uri}") from exc
        found = other.download(f"evaluation/{split}_per_sample.parquet", Path(tmp))
        if found is None:
            raise UserError(f"compare={other_run}: that run has no evaluation/{split}_per_sample.parquet; "
                            f"evaluate it on split '{split}' first")
        theirs = pd.read_parquet(found)
    cols = [c for c in ("mIoU", "boundary_mIoU", "pixel_acc", "mDice") if c in per_sample and c in theirs]
    merged = per_sample[["id", *cols]].merge(theirs[["id", *cols]], on="id", suffixes=("", "_other"))
    for c in cols:
        merged[f"delta_{c}"] = merged[c] - merged[f"{c}_other"]
    merged = merged.sort_values("delta_mIoU", ignore_index=True)
    path = out / f"{split}_compare.parquet"
    merged.to_parquet(path, index=False)
    worse = merged[merged["delta_mIoU"] < 0]
    table = Table(title=f"{len(worse)} of {len(merged)} samples got worse than run {other_run[:8]} (mIoU)")
    for col in ("id", "mIoU", "mIoU_other", "delta_mIoU"):
        table.add_column(col, justify="left" if col == "id" else "right")
    for row in worse.head(10).itertuples(index=False):
        table.add_row(str(row.id), f"{row.mIoU:.4f}", f"{row.mIoU_other:.4f}", f"{row.delta_mIoU:+.4f}")
    Console().print(table)
    return path


def evaluate_checkpoint(ckpt: Path, dataset: Dataset, eval_transforms: Any, split: str, output_dir: Path, run=None,
                        options: DictConfig | dict | None = None):
    from masklab.evaluation.checkpoint import load_checkpoint_model

    loaded = load_checkpoint_model(ckpt)
    return evaluate_model_on(loaded.model, loaded.class_table, f"checkpoint {ckpt.name}", dataset, eval_transforms,
                             split, output_dir, run, options=options)


def evaluate(cfg: DictConfig) -> float:
    """Evaluate ``ckpt_path``, MLflow run ``run_id`` or registered ``model``; returns the pooled mIoU."""
    from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY, read_checkpoint_meta
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.runs import RunLog, downloaded_checkpoint, open_run

    chosen = [k for k in ("ckpt_path", "run_id", "model_ref") if cfg.get(k)]
    if len(chosen) != 1:
        raise UserError("evaluate needs exactly one of ckpt_path=<file>, run_id=<MLflow run id> or "
                        f"model=<models:/name/stage|models:/name@alias>; got {chosen or 'none'}")
    uri = cfg.logger.tracking_uri
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    output_dir = Path(cfg.paths.output_dir)
    options = cfg.evaluation
    if cfg.get("model_ref"):
        package = load_model_ref(cfg.model_ref, uri)
        run = open_run(uri, None, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.model": str(cfg.model_ref),
                        "masklab.dataset": dataset.name, "masklab.dataset_root": str(dataset.root.resolve()),
                        "masklab.manifest_sha256": dataset.manifest_hash})
        result = evaluate_model_on(package.model, package.class_table, str(cfg.model_ref), dataset, cfg.augment.eval,
                                   cfg.split, output_dir, run, options=options)
    elif cfg.run_id:
        with downloaded_checkpoint(uri, cfg.run_id) as ckpt:
            run = RunLog(uri, cfg.run_id)
            result = evaluate_checkpoint(ckpt, dataset, cfg.augment.eval, cfg.split, output_dir, run, options=options)
    else:
        ckpt = Path(cfg.ckpt_path)
        if not ckpt.is_file():
            raise UserError(f"ckpt_path: checkpoint {ckpt} does not exist")
        # Results go to the run that trained the checkpoint when this store has it, else to a new run.
        trained_in = read_checkpoint_meta(ckpt)[CHECKPOINT_META_KEY].get("mlflow_run_id")
        run = open_run(uri, trained_in, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.checkpoint": str(ckpt.resolve()),
                        "masklab.dataset_root": str(dataset.root.resolve())})
        result = evaluate_checkpoint(ckpt, dataset, cfg.augment.eval, cfg.split, output_dir, run, options=options)
    print(f"Wrote {output_dir / 'evaluation'}; logged to MLflow run {run.run_id}")
    return result.headline("mIoU")
