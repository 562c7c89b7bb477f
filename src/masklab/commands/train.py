"""`masklab train`: compose, check data, fit with Lightning, evaluate the best checkpoint, track in MLflow."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from masklab.commands.common import print_config
from masklab.config import to_plain
from masklab.data.open import open_dataset
from masklab.errors import UserError


def resolve_resume(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: a path, or "last" = ``<resume_dir>/checkpoints/last.ckpt``."""
    if not cfg.ckpt_path:
        return None
    if cfg.ckpt_path == "last":
        if not cfg.resume_dir:
            raise UserError("ckpt_path=last needs resume_dir=<run folder> (the folder holding checkpoints/)")
        path = Path(cfg.resume_dir) / "checkpoints" / "last.ckpt"
    else:
        path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise UserError(f"ckpt_path: checkpoint {path} does not exist")
    return str(path)


def train(cfg: DictConfig) -> float:
    """Train, evaluate and log one run; returns the best value of ``cfg.monitor`` (for sweeps)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from masklab.augment import build_pipeline
    from masklab.data.datamodule import SegmentationDataModule
    from masklab.data.versioning import data_version, dvc_context
    from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY, read_checkpoint_meta
    from masklab.tracking.runs import RunLog, flatten, git_commit, make_lightning_logger
    from masklab.training.module import SegmentationModule

    print_config(cfg, f"masklab train — {cfg.experiment_name}")
    pl.seed_everything(cfg.seed, workers=True)
    resume = resolve_resume(cfg)
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    table = dataset.class_table
    for split in ("train", "val"):
        if not dataset.split(split):
            raise UserError(f"dataset {dataset.root}: split '{split}' is empty; training needs train and val samples")

    plain_cfg = to_plain(cfg)
    model_spec = to_plain(cfg.model)
    model = instantiate(cfg.model, num_classes=table.num_classes)
    loss = instantiate(cfg.loss, ignore_index=table.ignore_index)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") and "_target_" in cfg.scheduler else None
    datamodule = SegmentationDataModule(
        dataset,
        build_pipeline(cfg.augment.train, seed=cfg.seed),
        build_pipeline(cfg.augment.eval, seed=cfg.seed),
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )

    # A resumed run continues its own MLflow run.
    previous_run = read_checkpoint_meta(resume)[CHECKPOINT_META_KEY].get("mlflow_run_id") if resume else None
    logger = make_lightning_logger(
        cfg.logger.tracking_uri, cfg.logger.artifact_root, cfg.logger.experiment_name, cfg.logger.run_name,
        {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}, run_id=previous_run,
    )
    run = RunLog(cfg.logger.tracking_uri, logger.run_id)
    manifest_hash = dataset.manifest_hash
    output_dir = Path(cfg.paths.output_dir)
    if not previous_run:
        run.params(flatten(plain_cfg))
        run.yaml(plain_cfg, "config/config.yaml")
    data_md5, data_status = data_version(dataset.root)
    commit = git_commit(Path.cwd()) or "unknown"
    run.tags({
        **dvc_context(),
        "masklab.git_commit": commit,
        "masklab.dataset_dvc_md5": data_md5 or "untracked",
        "masklab.dataset_dvc_status": data_status,
        "masklab.dataset": dataset.name,
        "masklab.dataset_root": str(dataset.root.resolve()),
        "masklab.manifest_sha256": manifest_hash,
        "masklab.output_dir": str(output_dir.resolve()),
        "masklab.command": "train",
    })

    meta = {
        "model": model_spec,
        "classes": table.to_dict(),
        "dataset": {"name": dataset.name, "manifest_sha256": manifest_hash},
        "config": plain_cfg,
        "mlflow_run_id": logger.run_id,
        "mlflow_tracking_uri": cfg.logger.tracking_uri,
    }
    module = SegmentationModule(model, loss, instantiate(cfg.optimizer), scheduler, table, meta)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)

    checkpoint = trainer.checkpoint_callback
    best_path = Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path else None
    log_checkpoints(run, best_path)
    best_value = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None \
        else float(trainer.callback_metrics.get(cfg.monitor, math.nan))

    if cfg.get("export_dir") and best_path is not None:
        from omegaconf import OmegaConf

        from masklab.commands.evaluate import CURVE_METRICS
        from masklab.pipeline.outputs import write_train_outputs

        write_train_outputs(
            Path(cfg.export_dir), best_path, {f"best_{cfg.monitor}": best_value, "epochs": trainer.current_epoch},
            run.metric_history(CURVE_METRICS),
            {"mlflow_run_id": logger.run_id, "experiment": cfg.logger.experiment_name,
             "git_commit": commit, "dataset": dataset.name,
             "dataset_dvc_md5": data_md5, "dataset_dvc_status": data_status, "manifest_sha256": manifest_hash},
            OmegaConf.to_yaml(cfg),
        )

    if cfg.evaluate_after and best_path is not None:
        from masklab.commands.evaluate import evaluate_checkpoint

        for split in ("val", "test"):
            if dataset.split(split):
                evaluate_checkpoint(best_path, dataset, cfg.augment.eval, split, output_dir, run,
                                    options=cfg.evaluation)

    if cfg.registry.register and best_path is not None:
        from masklab.commands.registry import register_run

        register_run(cfg.logger.tracking_uri, logger.run_id, cfg.registry.name or cfg.logger.experiment_name,
                     checkpoint=best_path)

    print(f"\nBest {cfg.monitor}: {best_value:.4f}   checkpoint: {best_path}")
    expected = cfg.get("expected")
    if expected and expected.metric == cfg.monitor:
        verdict = "reached" if best_value >= expected.value else "NOT reached"
        print(f"Expected {expected.metric} >= {expected.value}: {verdict}")
        run.tags({"masklab.expected_reached": str(best_value >= expected.value)})
    print(f"MLflow run {logger.run_id} in {cfg.logger.tracking_uri}")
    print("Open the MLflow UI with:  masklab ui   (then http://127.0.0.1:5000)")
    return best_value


def log_checkpoints(run, best: Path | None) -> None:
    """Log the best checkpoint to MLflow as ``checkpoints/best.ckpt``, without optimizer state.

    The tracked copy serves evaluation, prediction and the registry, which need only weights and
    metadata. ``last.ckpt`` with the full training state stays in the run folder, which is where
    ``ckpt_path=last`` resumes from.
    """
    from masklab.evaluation.checkpoint import write_inference_checkpoint
    from masklab.tracking.runs import CHECKPOINT_ARTIFACT_DIR

    if best is None or not best.is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        run.file(write_inference_checkpoint(best, Path(tmp) / "best.ckpt"), CHECKPOINT_ARTIFACT_DIR)
