"""Pruning: a Lightning callback that reports the monitored metric to the Optuna trial after each validation.

A sweep adds it to the trial's ``callbacks`` config as
``{_target_: masklab.sweep.pruning.active_trial_callback, monitor: ${monitor}}``; `train` instantiates it
like any other callback, and the factory binds it to the trial this process is running (set by ``bind``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl

from masklab.errors import UserError

CALLBACK_KEY = "optuna_pruning"
CALLBACK_TARGET = "masklab.sweep.pruning.active_trial_callback"


class OptunaPruningCallback(pl.Callback):
    """``trial.report(metric, step)`` after each validation; raises ``optuna.TrialPruned`` when the pruner says so.

    ``step``: ``epoch`` (the epoch's index), or ``seconds`` of training so far (whole seconds since fit started):
    trials with one time budget but different epoch lengths are then compared at equal time."""

    def __init__(self, trial: Any, monitor: str, step: str = "epoch"):
        if step not in ("epoch", "seconds"):
            raise UserError(f"pruning step={step!r}: expected epoch or seconds")
        self.trial = trial
        self.monitor = monitor
        self.step = step
        self.started = time.monotonic()
        self.last_step = -1
        self.run_id: str | None = None  # the MLflow run of the trial, once fit starts
        self.last_value: float | None = None
        self.pruned_epoch: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.monotonic()

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
        # (two validations within one second: the later one counts a second on, as Optuna keeps one value a step)
        step = epoch if self.step == "epoch" else max(int(time.monotonic() - self.started), self.last_step + 1)
        self.last_step = step
        self.trial.report(value, step=step)  # NaN too: the pruners prune a diverged trial
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


def active_trial_callback(monitor: str, step: str = "epoch") -> OptunaPruningCallback:
    """Callback factory for the config: the pruning callback of the trial this process is running."""
    if not _active:
        raise UserError(f"callbacks.{CALLBACK_KEY} is added by `masklab sweep` to its trials; remove it to train alone")
    binding = _active[0]
    binding.callback = OptunaPruningCallback(binding.trial, monitor, step)
    return binding.callback
