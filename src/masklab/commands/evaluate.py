"""`masklab evaluate`: score a checkpoint, an MLflow run or a registered model on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from masklab.commands.common import open_dataset
from masklab.data.format import ClassTable, Dataset
from masklab.errors import UserError


def evaluate_model_on(
    model: Any, class_table: ClassTable, label: str, dataset: Dataset, eval_transforms: Any, split: str,
    output_dir: Path, run=None, batch_size: int = 8,
):
    """Evaluate ``model`` on ``split``; print the class table, write files to ``output_dir`` and to ``run``."""
    from rich.console import Console
    from torch.utils.data import DataLoader

    from masklab.augment import build_pipeline
    from masklab.data.datamodule import SegmentationSplit
    from masklab.evaluation.evaluate import class_table_text, evaluate_model, write_evaluation

    if class_table.names != dataset.class_table.names:
        raise UserError(f"{label} has classes {class_table.names}; dataset {dataset.root} has "
                        f"{dataset.class_table.names}")
    samples = dataset.split(split)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{split}' is empty")
    loader = DataLoader(SegmentationSplit(dataset, samples, build_pipeline(eval_transforms)), batch_size=batch_size)
    result = evaluate_model(model, loader, dataset.class_table, prefix=f"eval/{split}")
    files = write_evaluation(result, output_dir / "evaluation", split)
    Console().print(class_table_text(result, f"{dataset.name} / {split}: {len(samples)} images, {label}"))
    if run is not None:
        run.metrics(result.metrics)
        run.files(files, "evaluation")
    return result


def evaluate_checkpoint(ckpt: Path, dataset: Dataset, eval_transforms: Any, split: str, output_dir: Path, run=None):
    from masklab.evaluation.checkpoint import load_checkpoint_model

    loaded = load_checkpoint_model(ckpt)
    return evaluate_model_on(loaded.model, loaded.class_table, f"checkpoint {ckpt.name}", dataset, eval_transforms,
                             split, output_dir, run)


def evaluate(cfg: DictConfig) -> float:
    """Evaluate ``ckpt_path``, MLflow run ``run_id`` or registered ``model``; returns the pooled mIoU."""
    from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY, read_checkpoint_meta
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.runs import RunLog, download_checkpoint, open_run

    chosen = [k for k in ("ckpt_path", "run_id", "model_ref") if cfg.get(k)]
    if len(chosen) != 1:
        raise UserError("evaluate needs exactly one of ckpt_path=<file>, run_id=<MLflow run id> or "
                        f"model=<models:/name/stage|models:/name@alias>; got {chosen or 'none'}")
    uri = cfg.logger.tracking_uri
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("model_ref"):
        package = load_model_ref(cfg.model_ref, uri)
        run = open_run(uri, None, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.model": str(cfg.model_ref),
                        "masklab.dataset": dataset.name, "masklab.manifest_sha256": dataset.manifest_hash})
        result = evaluate_model_on(package.model, package.class_table, str(cfg.model_ref), dataset, cfg.augment.eval,
                                   cfg.split, output_dir, run)
    else:
        if cfg.run_id:
            try:
                ckpt = download_checkpoint(uri, cfg.run_id)
            except LookupError as exc:
                raise UserError(str(exc)) from exc
            run = RunLog(uri, cfg.run_id)
        else:
            ckpt = Path(cfg.ckpt_path)
            if not ckpt.is_file():
                raise UserError(f"ckpt_path: checkpoint {ckpt} does not exist")
            # Results go to the run that trained the checkpoint when this store has it, else to a new run.
            trained_in = read_checkpoint_meta(ckpt)[CHECKPOINT_META_KEY].get("mlflow_run_id")
            run = open_run(uri, trained_in, cfg.logger.artifact_root, cfg.logger.experiment_name,
                           {"masklab.command": "evaluate", "masklab.checkpoint": str(ckpt.resolve())})
        result = evaluate_checkpoint(ckpt, dataset, cfg.augment.eval, cfg.split, output_dir, run)
    print(f"Wrote {output_dir / 'evaluation'}; logged to MLflow run {run.run_id}")
    return result.headline("mIoU")
