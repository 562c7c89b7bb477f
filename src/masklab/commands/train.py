"""`masklab train`: print the composed config, call :func:`masklab.workflows.fit`, print the result."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from masklab.commands.common import hydra_output_dir, hydra_single_run, print_config
from masklab.console import logger, result


def train(cfg: DictConfig) -> float:
    """Train, evaluate and log one run; returns the best value of ``cfg.monitor`` (Hydra multirun sweeps).

    Under DDP every rank runs this command; only global rank zero shows the config and the result."""
    from pytorch_lightning.utilities import rank_zero_only

    from masklab.workflows import fit

    if rank_zero_only.rank == 0:  # (known from the launcher's environment, before any Trainer exists)
        print_config(cfg, f"masklab train — {cfg.experiment_name}")
    as_given = OmegaConf.to_yaml(cfg)  # (export_dir's config.yaml: the config before fit fills in the run folder)
    done = fit(cfg, hydra_output_dir(), distributed_entry=True, rerunnable=hydra_single_run())
    if not done.is_global_zero:
        return done.best_value
    if cfg.get("export_dir") and done.best_checkpoint is not None:
        from masklab.pipeline.outputs import write_fit_outputs

        write_fit_outputs(Path(cfg.export_dir), done, as_given)
    if done.registered:
        name, version = done.registered
        result(f"Registered run {done.run_id} as model '{name}' version {version}. Promote it with:\n"
               f"  masklab promote name={name} version={version} stage=Staging", __name__)
    result(f"Best {done.monitor}: {done.best_value:.4f}   checkpoint: {done.best_checkpoint}", __name__)
    if done.expected is not None:
        verdict = "reached" if done.expected_reached else "NOT reached"
        within = f" - {done.expected['tolerance']}" if done.expected.get("tolerance") else ""
        result(f"Expected {done.expected['metric']} >= {done.expected['value']}{within}: {verdict}", __name__)
    result(f"MLflow run {done.run_id} in {done.tracking_uri}", __name__)
    logger(__name__).info("Open the MLflow UI with:  masklab ui   (then http://127.0.0.1:5000)")
    return done.best_value
