"""`masklab train`: print the composed config, call :func:`masklab.workflows.fit`, print the result."""

from __future__ import annotations

from omegaconf import DictConfig

from masklab.commands.common import hydra_output_dir, print_config


def train(cfg: DictConfig) -> float:
    """Train, evaluate and log one run; returns the best value of ``cfg.monitor`` (Hydra multirun sweeps)."""
    from masklab.workflows import fit

    print_config(cfg, f"masklab train — {cfg.experiment_name}")
    result = fit(cfg, hydra_output_dir())
    if result.registered:
        name, version = result.registered
        print(f"Registered run {result.run_id} as model '{name}' version {version}. Promote it with:\n"
              f"  masklab promote name={name} version={version} stage=Staging")
    print(f"\nBest {result.monitor}: {result.best_value:.4f}   checkpoint: {result.best_checkpoint}")
    if result.expected is not None:
        verdict = "reached" if result.expected_reached else "NOT reached"
        print(f"Expected {result.expected['metric']} >= {result.expected['value']}: {verdict}")
    print(f"MLflow run {result.run_id} in {result.tracking_uri}")
    print("Open the MLflow UI with:  masklab ui   (then http://127.0.0.1:5000)")
    return result.best_value
