"""`masklab sweep sweep=<preset>` and `masklab sweep summary sweep=<preset>|study=<name>` (see masklab.sweep)."""

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
