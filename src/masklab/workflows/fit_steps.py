"""The named steps of :func:`masklab.workflows.fit`, each a function a reader can open and test alone.

The order ``fit`` calls them in is part of the seeded result: the model is built first, right after seeding,
then the loss, scheduler and data; nothing built after them draws random numbers.
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, open_dict, read_write

from masklab.config import to_plain
from masklab.errors import TrainingInterrupted, UserError

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from masklab.data.manifest import Dataset
    from masklab.tasks.base import Task
    from masklab.tracking.runs import RunLog
    from masklab.training.lr_range import LearningRateRange


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


def open_training_data(cfg: DictConfig, dataset: Dataset | None) -> Dataset:
    """``dataset``, or the one ``cfg.data`` names (checked when ``cfg.check_data``); both need labeled train
    and val samples."""
    from masklab.data.open import open_dataset

    if dataset is None:
        dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    for split in ("train", "val"):
        if not dataset.labeled(split):
            raise UserError(f"dataset {dataset.root}: split '{split}' has no labeled samples; training needs labeled "
                            f"train and val samples")
    return dataset


def with_values(cfg: DictConfig, values: dict[str, Any], tags: dict[str, str]) -> DictConfig:
    """A copy of ``cfg`` with each dotted key of ``values`` set and ``tags`` added to its ``tags``: what a step
    resolved, in the config and tags the run records."""
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=False)
        cfg.tags = {**(to_plain(cfg.tags) if cfg.get("tags") else {}), **tags}
    return cfg


def with_class_weights(cfg: DictConfig, task: Task[Any], dataset: Dataset) -> DictConfig:
    """``cfg`` with ``loss.class_weights`` as numbers: a method name (``auto`` = ``median_frequency``,
    ``inverse_sqrt``) is resolved from the train split's class pixels (the task counts them) and tagged
    ``masklab.class_weights`` on the run, so the config every checkpoint and run records holds the weights used.
    A list is checked against the class table; null and absent are left as they are."""
    from masklab.losses import balanced_class_weights

    weights = cfg.loss.get("class_weights") if "loss" in cfg else None
    names = dataset.class_table.names
    if weights is None:
        return cfg
    if not isinstance(weights, str):
        if len(weights) != len(names):
            raise UserError(f"loss.class_weights: {len(weights)} numbers for {len(names)} classes {names} of "
                            f"{dataset.root / 'classes.yaml'}; expected one per class, or auto")
        return cfg
    counts = task.training_class_pixels(dataset, cfg.paths.get("cache_dir"))
    resolved = [round(float(w), 6) for w in balanced_class_weights(weights, counts.pixels, counts.present_in)]
    cfg = with_values(cfg, {"loss.class_weights": resolved}, {"masklab.class_weights": weights})
    from masklab.console import logger

    shown = ", ".join(f"{n} {w:.3g} ({100 * s:.2g} % of pixels)" for n, w, s in zip(names, resolved, counts.share))
    logger(__name__).info(f"loss.class_weights={weights} from {counts.masks} train masks: {shown}")
    return cfg


@dataclass
class TrainingParts:
    """What the task builds from the config, in the seeded order: model, loss, scheduler, data."""

    model: Any
    loss: Any
    scheduler: Any
    datamodule: Any


def build_parts(cfg: DictConfig, task: Task[Any], dataset: Dataset) -> TrainingParts:
    """The model first (it draws its initial weights), then what draws nothing."""
    from hydra.utils import instantiate

    from masklab.augment import build_pipeline

    table = dataset.class_table
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
    return TrainingParts(model, loss, scheduler, datamodule)


def with_found_learning_rate(cfg: DictConfig, task: Task[Any], parts: TrainingParts, dataset: Dataset
                             ) -> tuple[DictConfig, LearningRateRange | None]:
    """``cfg`` with ``optimizer.lr=auto`` replaced by the rate the range test suggests (``lr_finder`` options,
    masklab.training.lr_range) on the built model and data, tagged ``masklab.lr_finder``, and the test's curve;
    ``cfg`` unchanged and None when the rate is a number. The model's weights are as they were before the test."""
    from hydra.utils import instantiate

    from masklab.training.lr_range import lr_range_test

    if str(cfg.optimizer.get("lr")) != "auto":
        return cfg, None
    options = cfg.get("lr_finder") or {}
    probe = task.lightning_module(parts.model, parts.loss, instantiate(cfg.optimizer, lr=1e-3), None,
                                  dataset.class_table, {})
    found = lr_range_test(probe, parts.datamodule, int(options.get("steps", 100)),
                          float(options.get("min_lr", 1e-6)), float(options.get("max_lr", 1.0)),
                          accelerator=str(cfg.trainer.get("accelerator", "cpu")),
                          precision=str(cfg.trainer.get("precision", "32-true")),
                          deterministic=cfg.trainer.get("deterministic", True))
    cfg = with_values(cfg, {"optimizer.lr": float(f"{found.suggestion:.3g}")}, {"masklab.lr_finder": "suggestion"})
    from masklab.console import logger

    logger(__name__).info(f"optimizer.lr=auto: the range test over {len(found.lrs)} steps suggests "
                          f"{cfg.optimizer.lr:g} (curve: lr_find/lr_find.png of the run)")
    return cfg, found


def previous_run_id(resume: str | None) -> str | None:
    """The MLflow run a resumed training continues (stored in its checkpoint), or None."""
    from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY, read_checkpoint_meta

    return read_checkpoint_meta(resume)[CHECKPOINT_META_KEY].get("mlflow_run_id") if resume else None


def make_trainer(cfg: DictConfig, previous_run: str | None, distributed_entry: bool, rerunnable: bool
                  ) -> pl.Trainer:
    """The Lightning Trainer with the MLflow logger (it starts no run until first used: on rank zero) and the
    configured callbacks plus RankZeroStop; refuses a world size the caller cannot run (``check_world_size``)."""
    from hydra.utils import instantiate

    from masklab.tracking.runs import make_lightning_logger
    from masklab.training.callbacks import RankZeroStop, TimeBudget

    logger = make_lightning_logger(
        cfg.logger.tracking_uri, cfg.logger.artifact_root, cfg.logger.experiment_name, cfg.logger.run_name,
        {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}, run_id=previous_run,
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    callbacks.append(RankZeroStop())  # (not a choice: without it a SIGTERM can hang a distributed training)
    callbacks.append(TimeBudget())  # (not a choice: trainer.max_time means the run ends on time, annealed)
    # The Trainer knows this process's global rank (trainer.num_nodes included) before any process group exists.
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    check_world_size(trainer, distributed_entry, rerunnable)
    return trainer


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


def checkpoint_meta(cfg: DictConfig, task: Task[Any], dataset: Dataset) -> dict[str, Any]:
    """The plain-value metadata every checkpoint of this run carries (``mlflow_run_id`` is set on rank zero)."""
    from masklab.inference.rule import INPUT_RULE_META_KEY, InputRule

    rule = InputRule.from_eval_pipeline(cfg.augment.eval, ignore_index=dataset.class_table.ignore_index)
    if str(cfg.evaluation.get("resolution", "original")) == "original":  # refused before anything is trained
        rule.check_invertible("evaluation.resolution=model to score at the network's size")
    return {
        "task": task.name,
        "model": to_plain(cfg.model),
        "classes": dataset.class_table.to_dict(),
        "dataset": {"name": dataset.name, "manifest_sha256": dataset.manifest_hash},
        "config": to_plain(cfg),
        "mlflow_run_id": None,  # (only rank zero writes checkpoints)
        "mlflow_tracking_uri": cfg.logger.tracking_uri,
        # The preprocessing every later evaluation, prediction and package of this model uses.
        INPUT_RULE_META_KEY: rule.to_dict(),
    }


def check_reduces_over_ranks(trainer: Any, module: Any, task: Task[Any]) -> None:
    """Refuse several processes for a task whose validation metrics are not reduced over ranks."""
    if trainer.world_size > 1 and not module.reduces_validation_over_ranks:
        raise UserError(f"task={task.name} with {trainer.world_size} processes (trainer.devices x "
                        "trainer.num_nodes): its validation metrics are not reduced over ranks yet; train it in one "
                        "process (trainer=cpu or trainer=gpu)")


@dataclass
class Provenance:
    """Where a run's inputs came from, as its tags record them (the pipeline's run.json repeats them)."""

    git_commit: str = "unknown"
    data_md5: str | None = None
    data_status: str = "untracked"


def start_tracking(cfg: DictConfig, trainer: Any, task: Task[Any], dataset: Dataset, meta: dict[str, Any],
                   previous_run: str | None) -> tuple[RunLog, Provenance]:
    """On rank zero: the MLflow run (the logger's), its params and config file (new runs only) and tags; ``meta``
    (which the module writes into every checkpoint) gets the run id."""
    from masklab.data.versioning import data_version, dvc_context
    from masklab.tracking.runs import RunLog, flatten, git_commit

    run = RunLog(cfg.logger.tracking_uri, trainer.logger.run_id)
    meta["mlflow_run_id"] = run.run_id
    if not previous_run:
        plain = meta["config"]
        run.params(flatten(plain))
        run.yaml(plain, "config/config.yaml")
    md5, status = data_version(dataset.root)
    provenance = Provenance(git_commit(Path.cwd()) or "unknown", md5, status)
    run.tags({
        **dvc_context(),
        "masklab.git_commit": provenance.git_commit,
        "masklab.dataset_dvc_md5": md5 or "untracked",
        "masklab.dataset_dvc_status": status,
        "masklab.dataset": dataset.name,
        "masklab.dataset_root": str(dataset.root.resolve()),
        "masklab.manifest_sha256": dataset.manifest_hash,
        "masklab.output_dir": str(Path(cfg.paths.output_dir).resolve()),
        "masklab.command": "train",
        "masklab.task": task.name,
    })
    return run, provenance


def run_training(trainer: Any, module: Any, datamodule: Any, resume: str | None, run: RunLog | None,
                 output: Path) -> bool:
    """``trainer.fit``; False when SIGTERM stopped another rank (rank zero reports the stop). On rank zero a
    SIGTERM ends the run KILLED and raises TrainingInterrupted. The process group ends with training."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from masklab.training.distributed import leave_process_group

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    except SIGTERMException:
        if run is None:
            return False
        raise interrupted(trainer, run, output) from None
    finally:
        leave_process_group()
    return True


def interrupted(trainer: Any, run: RunLog, output: Path) -> TrainingInterrupted:
    """The error for a training SIGTERM stopped: the run ended KILLED (Lightning marked it FAILED), the checkpoint
    and the command that resumes named."""
    from masklab.training.callbacks import PreemptionCheckpoint

    run.end("KILLED")
    saved = next((c.saved for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint) and c.saved), None)
    where = (f"the checkpoint {saved}; resume with ckpt_path=last resume_dir={output} (the same MLflow run "
             f"{run.run_id} continues)") if saved else "no checkpoint was saved (callbacks.preemption is off)"
    return TrainingInterrupted(f"training stopped by SIGTERM at epoch {trainer.current_epoch}, step "
                               f"{trainer.global_step}: {where}")


def best_checkpoint(trainer: Any, monitor: str) -> tuple[Path | None, float]:
    """The best checkpoint (of the callback with a monitor; last_checkpoint keeps last.ckpt) and its value of
    ``monitor``: the callback's score, else the last logged value, else NaN."""
    checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    path = Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path else None
    if checkpoint and checkpoint.best_model_score is not None:
        return path, float(checkpoint.best_model_score)
    return path, float(trainer.callback_metrics.get(monitor, math.nan))


def log_checkpoints(run: RunLog, best: Path | None) -> None:
    """Log the best checkpoint to MLflow as ``checkpoints/best.safetensors``: the model's weights, with masklab's
    metadata as JSON in the safetensors header (``masklab.evaluation.checkpoint``).

    The tracked copy serves evaluation, prediction and the registry, which need only weights and metadata, and
    registering reads it without torch. ``last.ckpt`` with the full training state stays in the run folder, which
    is where ``ckpt_path=last`` resumes from.
    """
    from masklab.evaluation.checkpoint import write_inference_checkpoint
    from masklab.tracking.runs import BEST_CHECKPOINT, CHECKPOINT_ARTIFACT_DIR

    if best is None or not best.is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        run.file(write_inference_checkpoint(best, Path(tmp) / BEST_CHECKPOINT), CHECKPOINT_ARTIFACT_DIR)


def expectation(cfg: DictConfig, best_value: float, run: RunLog) -> tuple[dict[str, Any] | None, bool | None]:
    """The preset's ``expected`` value of the monitor and whether it was reached (tagged on the run); (None, None)
    without one. ``tolerance``: the preset's value was measured (platforms differ in float summation order);
    without it the value is a goal to reach."""
    expected = cfg.get("expected")
    if not expected or expected.metric != cfg.monitor:
        return None, None
    tolerance = float(expected.get("tolerance") or 0.0)
    reached = best_value >= expected.value - tolerance
    run.tags({"masklab.expected_reached": str(reached)})
    return {"metric": str(expected.metric), "value": float(expected.value), "tolerance": tolerance}, reached
