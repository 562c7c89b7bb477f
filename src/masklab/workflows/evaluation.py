"""``evaluate``: score a checkpoint, an MLflow run or a registered model on a dataset split.

Writes the per-class table, metrics JSON, per-sample Parquet table, predictions and plots to
``<output_dir>/evaluation`` and logs them to an MLflow run. Called by ``masklab evaluate``, by
:func:`masklab.workflows.fit` after training and by the DVC pipeline's evaluate stage.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from masklab.data.format import ClassTable, Dataset, safe_name
from masklab.errors import UserError
from masklab.workflows.fitting import CURVE_METRICS


@dataclass
class Evaluation:
    """One evaluation: the scores (``result``), the MLflow run they were logged to, and the folder."""

    result: Any  # masklab.evaluation.evaluate.EvaluationResult
    run_id: str | None
    folder: Path

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics


def prediction_writer(task: Any, dataset: Dataset, folder: Path) -> Callable[[str, Any], None]:
    """A callback writing each prediction as ``<folder>/<safe id>.png`` at the image's original size."""
    sizes = {s.id: (s.width, s.height) for s in dataset.samples}
    folder.mkdir(parents=True, exist_ok=True)

    def write(sample_id: str, prediction: Any) -> None:
        task.write_prediction(prediction, folder / f"{safe_name(sample_id)}.png", sizes[sample_id])

    return write


def evaluate_model(
    model: Any, class_table: ClassTable, label: str, dataset: Dataset, split: str, output_dir: Path,
    eval_transforms: Any, run=None, batch_size: int = 8, options: DictConfig | dict | None = None,
    task: Any = None,
):
    """Evaluate ``model`` (of ``task``, default semantic) on ``split``: print the summary table, write
    tables, predictions and plots to ``output_dir/evaluation`` and to ``run``; with ``options.compare``
    (a run id) add per-sample deltas. Returns the task's EvaluationResult."""
    from rich.console import Console
    from torch.utils.data import DataLoader

    from masklab.augment import build_pipeline
    from masklab.report.plots import training_curves
    from masklab.tasks import DEFAULT_TASK, get_task

    task = task or get_task(DEFAULT_TASK)
    opts = dict(options or {})
    if class_table.names != dataset.class_table.names:
        raise UserError(f"{label} has classes {class_table.names}; dataset {dataset.root} has "
                        f"{dataset.class_table.names}")
    samples = dataset.labeled(split)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{split}' has no labeled samples")
    out = output_dir / "evaluation"
    loader = DataLoader(task.eval_dataset(dataset, samples, build_pipeline(eval_transforms)), batch_size=batch_size,
                        collate_fn=task.collate)
    result = task.score(model, loader, dataset.class_table, f"eval/{split}", opts,
                        on_prediction=prediction_writer(task, dataset, out / f"{split}_pred"))
    result.per_sample.insert(1, "split", split)
    files = task.evaluation_files(result, out, split)
    if run is not None:
        history = run.metric_history(CURVE_METRICS)
        if history:
            files.append(training_curves(history, out / "training_curves.png"))
    Console().print(task.summary_table(result, f"{dataset.name} / {split}: {len(samples)} images, {label}"))
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


def evaluate_checkpoint(ckpt: Path, dataset: Dataset, split: str, output_dir: Path, eval_transforms: Any, run=None,
                        options: DictConfig | dict | None = None):
    """:func:`evaluate_model` for the model of a checkpoint file."""
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.tasks import task_for

    loaded = load_checkpoint_model(ckpt)
    return evaluate_model(loaded.model, loaded.class_table, f"checkpoint {ckpt.name}", dataset, split, output_dir,
                          eval_transforms, run, options=options, task=task_for(loaded.meta))


def evaluate(cfg: DictConfig, output_dir: str | Path, *, ckpt_path: str | Path | None = None,
             run_id: str | None = None, model_ref: str | None = None, split: str = "val") -> Evaluation:
    """Evaluate exactly one of a checkpoint file, an MLflow run's best checkpoint or a registered model
    (``models:/<name>/<stage or version>`` / ``models:/<name>@<alias>``) on ``split`` of ``cfg.data``.

    ``cfg``: an ``evaluate`` config (data, augment, logger, evaluation, paths, check_data).
    Results go to the run that trained the checkpoint when the store has it, else to a new run.
    """
    from masklab.data.open import open_dataset
    from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY, read_checkpoint_meta
    from masklab.tasks import task_for
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.runs import RunLog, downloaded_checkpoint, open_run

    chosen = [k for k, v in (("ckpt_path", ckpt_path), ("run_id", run_id), ("model", model_ref)) if v]
    if len(chosen) != 1:
        raise UserError("evaluate needs exactly one of ckpt_path=<file>, run_id=<MLflow run id> or "
                        f"model=<models:/name/stage|models:/name@alias>; got {chosen or 'none'}")
    uri = cfg.logger.tracking_uri
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    output = Path(output_dir)
    options = cfg.evaluation
    if model_ref:
        package = load_model_ref(str(model_ref), uri)
        run = open_run(uri, None, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.model": str(model_ref),
                        "masklab.dataset": dataset.name, "masklab.dataset_root": str(dataset.root.resolve()),
                        "masklab.manifest_sha256": dataset.manifest_hash})
        result = evaluate_model(package.model, package.class_table, str(model_ref), dataset, split, output,
                                cfg.augment.eval, run, options=options, task=task_for(package.spec))
    elif run_id:
        with downloaded_checkpoint(uri, str(run_id)) as ckpt:
            run = RunLog(uri, str(run_id))
            result = evaluate_checkpoint(ckpt, dataset, split, output, cfg.augment.eval, run, options=options)
    else:
        ckpt = Path(ckpt_path)
        if not ckpt.is_file():
            raise UserError(f"ckpt_path: checkpoint {ckpt} does not exist")
        trained_in = read_checkpoint_meta(ckpt)[CHECKPOINT_META_KEY].get("mlflow_run_id")
        run = open_run(uri, trained_in, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.checkpoint": str(ckpt.resolve()),
                        "masklab.dataset_root": str(dataset.root.resolve())})
        result = evaluate_checkpoint(ckpt, dataset, split, output, cfg.augment.eval, run, options=options)
    return Evaluation(result, run.run_id, output / "evaluation")
