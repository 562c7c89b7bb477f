"""``fit``: check the data, train with Lightning, track in MLflow, evaluate and optionally register.

The one training workflow under every edge: ``masklab train``, sweep trials and the DVC pipeline's
train stage all call :func:`fit` with a composed config and an output folder. It needs no Hydra
runtime: ``paths.output_dir`` is set from the ``output_dir`` argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from masklab.tasks import task_for
from masklab.workflows.fit_steps import (
    Provenance,
    best_checkpoint,
    build_parts,
    check_reduces_over_ranks,
    checkpoint_meta,
    expectation,
    log_checkpoints,
    make_trainer,
    open_training_data,
    previous_run_id,
    resolve_resume,
    run_training,
    start_tracking,
    with_class_weights,
    with_found_learning_rate,
    with_output_dir,
)

if TYPE_CHECKING:
    from masklab.data.manifest import Dataset
    from masklab.evaluation.evaluate import EvaluationResult
    from masklab.tracking.runs import RunLog

__all__ = ["FitResult", "fit", "resolve_resume", "with_output_dir"]


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
    ``experiment``, ``dataset``, ``manifest_sha256``, ``provenance``: what the run's tags record (the DVC
    pipeline's run.json repeats them); ``curves``: the task's per-epoch metrics (its history.csv columns).
    """

    monitor: str
    best_value: float
    run_id: str
    tracking_uri: str
    output_dir: Path
    best_checkpoint: Path | None
    epochs: int
    evaluations: dict[str, EvaluationResult] = field(default_factory=dict)
    registered: tuple[str, str] | None = None
    expected: dict[str, Any] | None = None
    expected_reached: bool | None = None
    is_global_zero: bool = True
    experiment: str = ""
    dataset: str = ""
    manifest_sha256: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    curves: tuple[str, ...] = ()


def fit(cfg: DictConfig, output_dir: str | Path, dataset: Dataset | None = None, distributed_entry: bool = False,
        rerunnable: bool = True) -> FitResult:
    """Train the experiment ``cfg`` describes (a composed ``train`` config) into ``output_dir``.

    ``dataset``: a loaded Dataset to train on instead of opening ``cfg.data`` (cross-validation passes
    each fold's view of the same data: its splits reassigned, its files and manifest hash unchanged).
    Logs params, tags, per-epoch metrics and the best checkpoint to MLflow; with ``cfg.evaluate_after``
    evaluates the best checkpoint on val (and test); with ``cfg.registry.register`` registers it.

    Distributed (``trainer=ddp``, or ``trainer.devices`` x ``trainer.num_nodes`` > 1): every rank makes this call.
    The caller says it can with ``distributed_entry=True``: every rank runs it in full (SLURM and torchrun start it
    on every rank; otherwise Lightning starts the other ranks of a node by re-running this process's command line,
    which must then reproduce this call: ``rerunnable=False`` says it does not, as for one job of a Hydra
    multirun). Only global rank zero creates the MLflow run, logs, evaluates and registers; the others train,
    then return a result with ``is_global_zero=False``. Anything else with a world size > 1 is a UserError.
    """
    import pytorch_lightning as pl

    cfg = with_output_dir(cfg, output_dir)
    output, task = Path(cfg.paths.output_dir), task_for(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    resume = resolve_resume(cfg)
    dataset = open_training_data(cfg, dataset)
    cfg = with_class_weights(cfg, task, dataset)
    parts = build_parts(cfg, task, dataset)
    cfg, lr_range = with_found_learning_rate(cfg, task, parts, dataset)
    previous_run = previous_run_id(resume)
    trainer = make_trainer(cfg, previous_run, distributed_entry, rerunnable)
    meta = checkpoint_meta(cfg, task, dataset)
    module = task.lightning_module(parts.model, parts.loss, instantiate(cfg.optimizer), parts.scheduler,
                                   dataset.class_table, meta)
    check_reduces_over_ranks(trainer, module, task)
    run, provenance = start_tracking(cfg, trainer, task, dataset, meta, previous_run) \
        if trainer.is_global_zero else (None, Provenance())
    if run is not None and lr_range is not None:
        run.files(lr_range.write(output / "lr_find"), "lr_find")
    finished = run_training(trainer, module, parts.datamodule, resume, run, output)
    best_path, best_value = best_checkpoint(trainer, str(cfg.monitor)) if finished else (None, math.nan)
    if run is None:  # another rank: rank zero logs, evaluates and registers
        return FitResult(str(cfg.monitor), best_value, "", str(cfg.logger.tracking_uri), output, None,
                         int(trainer.current_epoch), is_global_zero=False)
    log_checkpoints(run, best_path)
    result = FitResult(str(cfg.monitor), best_value, run.run_id, str(cfg.logger.tracking_uri), output, best_path,
                       int(trainer.current_epoch), experiment=str(cfg.logger.experiment_name), dataset=dataset.name,
                       manifest_sha256=dataset.manifest_hash, provenance=provenance, curves=task.curve_metrics)
    if cfg.evaluate_after and best_path is not None:
        result.evaluations = evaluate_best(best_path, dataset, output, run, cfg.evaluation)
    if cfg.registry.register and best_path is not None:
        result.registered = register_best(cfg, run.run_id, best_path)
    result.expected, result.expected_reached = expectation(cfg, best_value, run)
    return result


def evaluate_best(best: Path, dataset: Dataset, output: Path, run: RunLog, options: DictConfig
                  ) -> dict[str, EvaluationResult]:
    """The best checkpoint evaluated on val and test (the labeled ones), logged to ``run``."""
    from masklab.workflows.evaluation import evaluate_checkpoint

    return {split: evaluate_checkpoint(best, dataset, split, output, run, options=options)
            for split in ("val", "test") if dataset.labeled(split)}


def register_best(cfg: DictConfig, run_id: str, best: Path) -> tuple[str, str]:
    """Register the best checkpoint (``registry.name``, default the experiment's name): (name, version)."""
    from masklab.workflows.registry import register

    registered = register(cfg.logger.tracking_uri, run_id, cfg.registry.name or cfg.logger.experiment_name,
                          checkpoint=best)
    return registered.name, registered.version
