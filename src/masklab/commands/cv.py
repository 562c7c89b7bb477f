"""`masklab cv`: k-fold cross-validation of a train experiment; prints mean ± std per metric over the folds."""

from __future__ import annotations

from omegaconf import DictConfig

from masklab.commands.common import hydra_output_dir, print_config
from masklab.console import result

# Metrics shown first when the run has them (every metric is logged to the parent run).
HEADLINES = ("mIoU", "mDice", "mBoundaryIoU", "mask_AP", "boundary_AP", "PQ")


def cv(cfg: DictConfig) -> None:
    from masklab.workflows import cross_validate

    print_config(cfg, f"masklab cv — {cfg.experiment_name}, {cfg.cv.folds} folds")
    done = cross_validate(cfg, hydra_output_dir())
    shown = [m for m in HEADLINES if m in done.summary] or sorted(done.summary)[:8]
    lines = [f"{done.k}-fold cross-validation, held-out folds at {cfg.evaluation.resolution} resolution "
             f"(mean ± sample std over folds):"]
    lines += [f"  {m:<14} {done.mean(m):.4f} ± {done.std(m):.4f}   folds: "
              + " ".join(f"{f.get(m, float('nan')):.4f}" for f in done.fold_metrics) for m in shown]
    if done.out_of_fold is not None:
        lines.append(f"Out-of-fold predictions: {done.out_of_fold}")
    lines.append(f"MLflow parent run {done.parent_run_id} (a child run per fold) in {done.tracking_uri}")
    result("\n".join(lines), __name__)
