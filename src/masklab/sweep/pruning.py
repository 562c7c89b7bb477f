"""Pruning: a Lightning callback that reports the monitored metric to the Optuna trial after each validation.

A sweep adds it to the trial's ``callbacks`` config as
``{_target_: masklab.sweep.pruning.active_trial_callback, monitor: ${monitor}}``; `train` instantiates it
like any other callback, and the factory binds it to the trial this process is running (set by ``bind``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl

from masklab.errors import UserError

CALLBACK_KEY = "optuna_pruning"
CALLBACK_TARGET = "masklab.sweep.pruning.active_trial_callback"


class OptunaPruningCallback(pl.Callback):
    """``trial.report(metric, epoch)`` after each validation; raises ``optuna.TrialPruned`` when the pruner says so."""

    def __init__(self, trial: Any, monitor: str):
        self.trial = trial
        self.monitor = monitor
        self.run_id: str | None = None  # the MLflow run of the trial, once fit starts
        self.last_value: float | None = None
        self.pruned_epoch: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.run_id = getattr(trainer.logger, "run_id", None) if trainer.logger is not None else None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        epoch = int(trainer.current_epoch)
        self.last_value = value
        self.trial.report(value, step=epoch)  # NaN too: the pruners prune a diverged trial
        if self.trial.should_prune():
            import optuna

            self.pruned_epoch = epoch
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.monitor}={value:.4f}")


class Binding:
    """The trial a process is running and, once `train` instantiated it, its callback."""

    def __init__(self, trial: Any):
        self.trial = trial
        self.callback: OptunaPruningCallback | None = None


_active: list[Binding] = []


@contextmanager
def bind(trial: Any) -> Iterator[Binding]:
    """Make ``trial`` the one ``active_trial_callback`` binds to (one trial at a time per process)."""
    if _active:
        raise RuntimeError("a sweep trial is already running in this process")
    binding = Binding(trial)
    _active.append(binding)
    try:
        yield binding
    finally:
        _active.clear()


def active_trial_callback(monitor: str) -> OptunaPruningCallback:
    """Callback factory for the config: the pruning callback of the trial this process is running."""
    if not _active:
        raise UserError(f"callbacks.{CALLBACK_KEY} is added by `masklab sweep` to its trials; remove it to train alone")
    binding = _active[0]
    binding.callback = OptunaPruningCallback(binding.trial, monitor)
    return binding.callback
