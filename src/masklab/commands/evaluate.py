"""`masklab evaluate`: score a checkpoint, an MLflow run or a registered model on a dataset split."""

from __future__ import annotations

from omegaconf import DictConfig

from masklab.commands.common import hydra_output_dir
from masklab.console import result


def evaluate(cfg: DictConfig) -> float:
    """Evaluate ``ckpt_path``, MLflow run ``run_id`` or registered ``model``; returns the headline metric of the
    model's task (pooled mIoU, mask AP), which a Hydra multirun sweep optimises."""
    from masklab.workflows import evaluate as run_evaluation

    evaluation = run_evaluation(cfg, hydra_output_dir(), ckpt_path=cfg.get("ckpt_path"), run_id=cfg.get("run_id"),
                                model_ref=cfg.get("model_ref"), split=str(cfg.split))
    result(f"Wrote {evaluation.folder}; logged to MLflow run {evaluation.run_id}", __name__)
    return evaluation.result.headline()
