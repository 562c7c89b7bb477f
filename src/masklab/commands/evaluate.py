"""`masklab evaluate`: score a checkpoint or an MLflow run's best checkpoint on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from masklab.commands.common import open_dataset
from masklab.data.format import Dataset
from masklab.errors import UserError


def evaluate_checkpoint(
    ckpt: Path, dataset: Dataset, eval_transforms: Any, split: str, output_dir: Path, run=None, batch_size: int = 8
):
    """Evaluate ``ckpt`` on ``split``; print the class table, write files to ``output_dir`` and to ``run``."""
    from rich.console import Console

    from masklab.augment import build_pipeline
    from masklab.data.datamodule import SegmentationSplit
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.evaluation.evaluate import class_table_text, evaluate_model, write_evaluation

    loaded = load_checkpoint_model(ckpt)
    if loaded.class_table.names != dataset.class_table.names:
        raise UserError(f"checkpoint {ckpt} has classes {loaded.class_table.names}; dataset {dataset.root} has "
                        f"{dataset.class_table.names}")
    samples = dataset.split(split)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{split}' is empty")
    from torch.utils.data import DataLoader

    loader = DataLoader(SegmentationSplit(dataset, samples, build_pipeline(eval_transforms)), batch_size=batch_size)
    result = evaluate_model(loaded.model, loader, dataset.class_table, prefix=f"eval/{split}")
    files = write_evaluation(result, output_dir / "evaluation", split)
    title = f"{dataset.name} / {split}: {len(samples)} images, checkpoint {ckpt.name}"
    Console().print(class_table_text(result, title))
    if run is not None:
        run.metrics(result.metrics)
        run.files(files, "evaluation")
    return result


def evaluate(cfg: DictConfig) -> float:
    """Evaluate ``cfg.ckpt_path`` or the best checkpoint of MLflow run ``cfg.run_id``; returns mIoU."""
    from masklab.evaluation.checkpoint import read_checkpoint_meta
    from masklab.tracking.runs import RunLog, download_checkpoint, open_run
    from masklab.training.module import CHECKPOINT_META_KEY

    if bool(cfg.ckpt_path) == bool(cfg.run_id):
        raise UserError("evaluate needs exactly one of ckpt_path=<file> or run_id=<MLflow run id>")
    run = None
    if cfg.run_id:
        try:
            ckpt = download_checkpoint(cfg.logger.tracking_uri, cfg.run_id)
        except LookupError as exc:
            raise UserError(str(exc)) from exc
        run = RunLog(cfg.logger.tracking_uri, cfg.run_id)
    else:
        ckpt = Path(cfg.ckpt_path)
        if not ckpt.is_file():
            raise UserError(f"ckpt_path: checkpoint {ckpt} does not exist")
        # Results go to the run that trained the checkpoint when this store has it, else to a new run.
        trained_in = read_checkpoint_meta(ckpt)[CHECKPOINT_META_KEY].get("mlflow_run_id")
        run = open_run(cfg.logger.tracking_uri, trained_in, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.checkpoint": str(ckpt.resolve())})
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    output_dir = Path(cfg.paths.output_dir)
    result = evaluate_checkpoint(ckpt, dataset, cfg.augment.eval, cfg.split, output_dir, run)
    print(f"Wrote {output_dir / 'evaluation'}" + (f" and logged to MLflow run {cfg.run_id}" if run else ""))
    return result.headline("mIoU")
