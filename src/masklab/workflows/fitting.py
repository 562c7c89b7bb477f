"""``fit``: check the data, train with Lightning, track in MLflow, evaluate and optionally register.

The one training workflow under every edge: ``masklab train``, sweep trials and the DVC pipeline's
train stage all call :func:`fit` with a composed config and an output folder. It needs no Hydra
runtime: ``paths.output_dir`` is set from the ``output_dir`` argument.
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from masklab.config import to_plain
from masklab.errors import TrainingInterrupted, UserError

# Per-epoch metrics kept as training curves (plots, the pipeline's history.csv).
CURVE_METRICS = ("train/loss_epoch", "val/loss", "val/mIoU", "val/mDice", "val/mBoundaryIoU")


@dataclass
class FitResult:
    """What one training run produced.

    ``best_value``: best value of ``monitor`` (NaN if never logged); ``best_checkpoint``: the
    Lightning checkpoint that reached it (None if none was written); ``evaluations``: split ->
    EvaluationResult of the best checkpoint (metrics, per-class and per-sample tables);
    ``registered``: (model name, version) or None;
    ``expected_reached``: whether the preset's ``expected`` value was reached (None: no expectation).
    ``is_global_zero``: False on the other ranks of a distributed run, whose result holds only the monitor, its best
    value, the folder and the epochs (no run id: rank zero owns the MLflow run, evaluates and registers).
    """

    monitor: str
    best_value: float
    run_id: str
    tracking_uri: str
    output_dir: Path
    best_checkpoint: Path | None
    epochs: int
    evaluations: dict[str, Any] = field(default_factory=dict)
    registered: tuple[str, str] | None = None
    expected: dict[str, Any] | None = None
    expected_reached: bool | None = None
    is_global_zero: bool = True


def with_output_dir(cfg: DictConfig, output_dir: str | Path) -> DictConfig:
    """A copy of ``cfg`` whose ``paths.output_dir`` is ``output_dir`` (no Hydra runtime needed)."""
    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        if "hydra" in cfg:  # hydra.compose(..., return_hydra_config=True): that node is Hydra's, not ours
            del cfg["hydra"]
        cfg.paths.output_dir = str(Path(output_dir))
    return cfg


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


def fit(cfg: DictConfig, output_dir: str | Path, export_dir: str | Path | None = None, dataset: Any = None,
        distributed_entry: bool = False, rerunnable: bool = True) -> FitResult:
    """Train the experiment ``cfg`` describes (a composed ``train`` config) into ``output_dir``.

    ``dataset``: a loaded Dataset to train on instead of opening ``cfg.data`` (cross-validation passes
    each fold's view of the same data: its splits reassigned, its files and manifest hash unchanged).

    Logs params, tags, per-epoch metrics and the best checkpoint to MLflow; with
    ``cfg.evaluate_after`` evaluates the best checkpoint on val (and test); with
    ``cfg.registry.register`` registers it; with ``export_dir`` (or ``cfg.export_dir``) writes the
    DVC pipeline's train outputs there.

    Distributed (``trainer=ddp``, or ``trainer.devices`` x ``trainer.num_nodes`` > 1): every rank makes this call.
    The caller says it can with ``distributed_entry=True``: every rank runs it in full (SLURM and torchrun start it
    on every rank; otherwise Lightning starts the other ranks of a node by re-running this process's command line,
    which must then reproduce this call: ``rerunnable=False`` says it does not, as for one job of a Hydra
    multirun). Only global rank zero creates the MLflow run, logs, evaluates, exports and registers; the others
    train, then return a result with ``is_global_zero=False``. Anything else with a world size > 1 is a UserError.
    The process group ends with training, also one the caller started: rank zero evaluates alone.
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from masklab.augment import build_pipeline
    from masklab.data.open import open_dataset
    from masklab.data.versioning import data_version, dvc_context
    from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY, read_checkpoint_meta
    from masklab.inference.rule import INPUT_RULE_META_KEY, InputRule
    from masklab.tasks import task_for
    from masklab.tracking.runs import RunLog, flatten, git_commit, make_lightning_logger
    from masklab.training.callbacks import RankZeroStop
    from masklab.training.distributed import leave_process_group

    as_given = OmegaConf.to_yaml(cfg)  # the config file the pipeline exports, before the run folder is filled in
    cfg = with_output_dir(cfg, output_dir)
    output = Path(cfg.paths.output_dir)
    task = task_for(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    resume = resolve_resume(cfg)
    if dataset is None:
        dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    table = dataset.class_table
    for split in ("train", "val"):
        if not dataset.labeled(split):
            raise UserError(f"dataset {dataset.root}: split '{split}' has no labeled samples; training needs labeled "
                            f"train and val samples")

    plain_cfg = to_plain(cfg)
    model_spec = to_plain(cfg.model)
    # The order of construction is part of the seeded result: model first, then the rest (nothing after it draws).
    model = task.build_model(cfg.model, table)
    loss = task.build_loss(cfg.loss, table)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") and "_target_" in cfg.scheduler else None
    datamodule = task.datamodule(
        dataset,
        build_pipeline(cfg.augment.train, seed=cfg.seed, ignore_index=table.ignore_index),
        build_pipeline(cfg.augment.eval, seed=cfg.seed, ignore_index=table.ignore_index),
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )

    # A resumed run continues its own MLflow run. The logger starts no run until first used: on rank zero, below.
    previous_run = read_checkpoint_meta(resume)[CHECKPOINT_META_KEY].get("mlflow_run_id") if resume else None
    logger = make_lightning_logger(
        cfg.logger.tracking_uri, cfg.logger.artifact_root, cfg.logger.experiment_name, cfg.logger.run_name,
        {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}, run_id=previous_run,
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    callbacks.append(RankZeroStop())  # (not a choice: without it a SIGTERM can hang a distributed training)
    # The Trainer knows this process's global rank (trainer.num_nodes included) before any process group exists.
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    check_world_size(trainer, distributed_entry, rerunnable)
    manifest_hash = dataset.manifest_hash
    meta = {
        "task": task.name,
        "model": model_spec,
        "classes": table.to_dict(),
        "dataset": {"name": dataset.name, "manifest_sha256": manifest_hash},
        "config": plain_cfg,
        "mlflow_run_id": None,  # (set below, on rank zero: only rank zero writes checkpoints)
        "mlflow_tracking_uri": cfg.logger.tracking_uri,
        # The preprocessing every later evaluation, prediction and package of this model uses.
        INPUT_RULE_META_KEY: InputRule.from_eval_pipeline(cfg.augment.eval).to_dict(),
    }
    module = task.lightning_module(model, loss, instantiate(cfg.optimizer), scheduler, table, meta)
    if trainer.world_size > 1 and not module.reduces_validation_over_ranks:
        raise UserError(f"task={task.name} with {trainer.world_size} processes (trainer.devices x "
                        "trainer.num_nodes): its validation metrics are not reduced over ranks yet; train it in one "
                        "process (trainer=cpu or trainer=gpu)")
    run, commit, data_md5, data_status = None, "unknown", None, "untracked"
    if trainer.is_global_zero:  # one MLflow run: the other ranks of a distributed run log nothing
        run = RunLog(cfg.logger.tracking_uri, logger.run_id)
        meta["mlflow_run_id"] = run.run_id  # the module keeps this dict and writes it into every checkpoint
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
            "masklab.output_dir": str(output.resolve()),
            "masklab.command": "train",
            "masklab.task": task.name,
        })

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    except SIGTERMException:
        if run is None:  # another rank: rank zero reports the stop and ends the run
            return other_rank_result(cfg, output, trainer)
        raise _interrupted(trainer, run, output) from None
    finally:
        leave_process_group()

    # the best checkpoint's callback (the one with a monitor; last_checkpoint keeps last.ckpt)
    checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    best_path = Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path else None
    best_value = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None \
        else float(trainer.callback_metrics.get(cfg.monitor, math.nan))
    if run is None:  # evaluation, export and registration happen once, on rank zero
        return other_rank_result(cfg, output, trainer, best_value)
    log_checkpoints(run, best_path)
    result = FitResult(str(cfg.monitor), best_value, run.run_id, str(cfg.logger.tracking_uri), output, best_path,
                       int(trainer.current_epoch))

    export = export_dir or cfg.get("export_dir")
    if export and best_path is not None:
        from masklab.pipeline.outputs import write_train_outputs

        write_train_outputs(
            Path(export), best_path, {f"best_{cfg.monitor}": best_value, "epochs": trainer.current_epoch},
            run.metric_history(CURVE_METRICS),
            {"mlflow_run_id": run.run_id, "experiment": cfg.logger.experiment_name,
             "git_commit": commit, "dataset": dataset.name,
             "dataset_dvc_md5": data_md5, "dataset_dvc_status": data_status, "manifest_sha256": manifest_hash},
            as_given,
        )

    if cfg.evaluate_after and best_path is not None:
        from masklab.workflows.evaluation import evaluate_checkpoint

        for split in ("val", "test"):
            if dataset.labeled(split):
                result.evaluations[split] = evaluate_checkpoint(best_path, dataset, split, output, run,
                                                                options=cfg.evaluation)

    if cfg.registry.register and best_path is not None:
        from masklab.workflows.registry import register

        registered = register(cfg.logger.tracking_uri, run.run_id,
                              cfg.registry.name or cfg.logger.experiment_name, checkpoint=best_path)
        result.registered = (registered.name, registered.version)

    expected = cfg.get("expected")
    if expected and expected.metric == cfg.monitor:
        # ``tolerance``: the preset's value was measured (platforms differ in float summation order);
        # without it the value is a goal to reach.
        tolerance = float(expected.get("tolerance") or 0.0)
        result.expected = {"metric": str(expected.metric), "value": float(expected.value), "tolerance": tolerance}
        result.expected_reached = best_value >= expected.value - tolerance
        run.tags({"masklab.expected_reached": str(result.expected_reached)})
    return result


def check_world_size(trainer: Any, distributed_entry: bool, rerunnable: bool) -> None:
    """A UserError when ``trainer`` runs several processes for a caller that cannot run on every rank (see ``fit``)."""
    world = trainer.world_size
    if world > 1 and not distributed_entry:
        raise UserError(
            f"trainer: {world} processes (trainer.devices x trainer.num_nodes) need a command that trains one model "
            "and that every rank can run in full: `masklab train`, or workflows.fit(..., distributed_entry=True) in "
            "your own script; cross-validation, sweeps and active-learning rounds train in one process (trainer=cpu "
            "or trainer=gpu)")
    if world > 1 and not rerunnable and not trainer.strategy.cluster_environment.creates_processes_externally:
        raise UserError(
            f"trainer: {world} processes in one job of -m/--multirun: Lightning would start the other ranks by "
            "re-running the command line, which is the whole sweep; run each configuration as its own `masklab "
            "train`, or let SLURM start the ranks (hydra/launcher=submitit_slurm)")


def other_rank_result(cfg: DictConfig, output: Path, trainer: Any, best_value: float = math.nan) -> FitResult:
    """What a rank other than zero returns after training: no run, checkpoint, evaluation or registration."""
    return FitResult(str(cfg.monitor), best_value, "", str(cfg.logger.tracking_uri), output, None,
                     int(trainer.current_epoch), is_global_zero=False)


def _interrupted(trainer: Any, run: Any, output: Path) -> TrainingInterrupted:
    """The error for a training SIGTERM stopped: the run ended KILLED (Lightning marked it FAILED), the checkpoint
    and the command that resumes named."""
    from masklab.training.callbacks import PreemptionCheckpoint

    run.end("KILLED")
    saved = next((c.saved for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint) and c.saved), None)
    where = (f"the checkpoint {saved}; resume with ckpt_path=last resume_dir={output} (the same MLflow run "
             f"{run.run_id} continues)") if saved else "no checkpoint was saved (callbacks.preemption is off)"
    return TrainingInterrupted(f"training stopped by SIGTERM at epoch {trainer.current_epoch}, step "
                               f"{trainer.global_step}: {where}")


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
