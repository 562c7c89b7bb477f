"""`masklab sweep sweep=<preset>`, `masklab sweep summary sweep=<preset>|study=<name>` and `masklab tune data=<name>
time=<budget>` (see masklab.sweep)."""

from __future__ import annotations

from omegaconf import DictConfig


def sweep(cfg: DictConfig) -> None:
    """Run (or resume) the preset's Optuna study of `train` runs, under one MLflow parent run; with
    ``hydra/launcher=submitit_slurm|submitit_local`` its workers run as submitit jobs."""
    from masklab.jobs import launcher_for_workers
    from masklab.sweep.launch import sweep as run_sweep

    run_sweep(cfg, launcher=launcher_for_workers())


def summary(cfg: DictConfig) -> None:
    """Print the study's trials ranked by the monitored metric and plot the metric versus each parameter."""
    from masklab.sweep.summary import summary as run_summary

    run_summary(cfg)


def tune(cfg: DictConfig) -> None:
    """Search recipes within a wall-clock budget, retrain the best, write it as a preset (masklab.sweep.tune); with
    ``hydra/launcher=submitit_slurm|submitit_local`` its search workers run as submitit jobs."""
    from masklab.jobs import launcher_for_workers
    from masklab.sweep.tune import tune as run_tune

    run_tune(cfg, launcher=launcher_for_workers())  # (it prints the result; the FitResult is for Python callers)
