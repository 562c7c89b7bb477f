"""``cross_validate``: k-fold cross-validation of a ``train`` experiment, with out-of-fold predictions.

Folds are stored in the manifest (:mod:`masklab.data.folds`). Fold ``k`` trains with :func:`fit` on
the other folds (its held-out fold as ``val``, so checkpoint selection and early stopping see
only data the model did not train on), then the best checkpoint is scored on the held-out fold
under the split name ``fold_<k>`` (so an evaluation record never passes for the dataset's own
val split) and, with ``cv.out_of_fold``, keeps the task's out-of-fold prediction of every held-out
sample (:mod:`masklab.curation.out_of_fold`), one batch in memory at a time.

MLflow: one parent run (``masklab.command=cv``) with a child run per fold (``mlflow.parentRunId``);
the parent gets ``cv/<metric>/mean`` and ``cv/<metric>/std`` over the folds (sample standard deviation,
ddof = 1), the per-fold table and the out-of-fold per-sample table.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, open_dict

from masklab.config import to_plain
from masklab.console import logger

log = logger(__name__)

FOLD_TABLE = "cv_folds.csv"
PER_SAMPLE_TABLE = "cv_per_sample.parquet"
OUT_OF_FOLD_DIR = "out_of_fold"


@dataclass
class CrossValidation:
    """What ``cross_validate`` produced.

    ``fold_metrics``: per fold the held-out evaluation's metrics without their ``eval/fold_<k>/``
    prefix; ``summary``: {metric: (mean, std)} over folds; ``per_sample``: the held-out evaluations'
    per-sample rows with a ``fold`` column (every covered sample once); ``out_of_fold``: the folder
    of out-of-fold predictions (None when not kept).
    """

    k: int
    parent_run_id: str
    tracking_uri: str
    output_dir: Path
    fold_run_ids: list[str] = field(default_factory=list)
    fold_metrics: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_sample: Any = None
    out_of_fold: Path | None = None

    def mean(self, metric: str) -> float:
        return self.summary.get(metric, (math.nan, math.nan))[0]

    def std(self, metric: str) -> float:
        return self.summary.get(metric, (math.nan, math.nan))[1]


def summarize(fold_metrics: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """{metric: (mean, sample std)} over folds for metrics every fold has a finite value of
    (std NaN with one fold)."""
    names = sorted(set.intersection(*(set(m) for m in fold_metrics))) if fold_metrics else []
    out = {}
    for name in names:
        values = np.array([m[name] for m in fold_metrics], dtype=np.float64)
        if np.all(np.isfinite(values)):
            out[name] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan)
    return out


def fold_config(cfg: DictConfig, fold: int, parent_run_id: str) -> DictConfig:
    """The ``train`` config of fold ``fold``: a child run of the parent, no evaluation or registration
    of its own (the held-out fold is scored here), the rest as the user composed it."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.evaluate_after = False
        out.registry.register = False
        out.logger.run_name = f"fold-{fold}"
        out.tags = {**(to_plain(cfg.get("tags")) or {}), "mlflow.parentRunId": parent_run_id,
                    "masklab.cv_fold": str(fold), "masklab.cv_parent": parent_run_id}
    return out


def cross_validate(cfg: DictConfig, output_dir: str | Path, runs_dir: str | Path | None = None) -> CrossValidation:
    """Cross-validate the experiment ``cfg`` (a composed ``cv`` config: ``train`` plus ``cv``) into
    ``output_dir`` (the tables, ``out_of_fold/``) and ``runs_dir`` (default: ``output_dir``; the folds'
    ``fold_<k>/`` run folders with their checkpoints and evaluations)."""
    import pandas as pd

    from masklab.data.folds import ensure_folds, fold_view
    from masklab.data.format import read_image
    from masklab.data.open import open_dataset
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference import Predictor, rule_from_meta
    from masklab.tasks import task_for
    from masklab.tracking.runs import RunLog, ending, flatten, start_run
    from masklab.workflows.evaluation import evaluate_checkpoint, evaluation_options
    from masklab.workflows.fitting import fit, with_output_dir

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    cfg = with_output_dir(cfg, output)  # no Hydra runtime needed; each fold gets its own folder below
    settings = cfg.cv
    task = task_for(cfg)
    keep = bool(settings.out_of_fold)
    if keep:
        task.class_probabilities(None, [], str(settings.resolution))  # a task that keeps none says so before training
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    dataset, plan = ensure_folds(dataset, settings.folds, list(settings.splits), int(settings.seed),
                                 bool(settings.reassign))
    if plan.changed:
        log.info("cv: dealt %d samples into %d folds; stored in %s", len(plan.folds), plan.k,
                 dataset.root / "manifest.jsonl")

    uri = str(cfg.logger.tracking_uri)
    # The user's tags (a sweep's: its parent run, study and trial) go on the cross-validation's own run too.
    parent = start_run(uri, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       str(cfg.logger.get("run_name") or f"cv-{plan.k}-folds"),
                       {**(to_plain(cfg.get("tags")) or {}), "masklab.command": "cv", "masklab.task": task.name,
                        "masklab.dataset": dataset.name, "masklab.manifest_sha256": dataset.manifest_hash,
                        "masklab.output_dir": str(output.resolve()),
                        "masklab.dataset_root": str(dataset.root.resolve())})
    parent.params({**flatten(to_plain(cfg)), "cv.samples": str(len(plan.folds))})
    done = CrossValidation(plan.k, parent.run_id, uri, output)
    options = evaluation_options(cfg.evaluation)
    writer = None
    if keep:
        from masklab.curation.out_of_fold import OutOfFoldWriter

        writer = OutOfFoldWriter(output / OUT_OF_FOLD_DIR, str(settings.resolution))
    rows = []
    with ending(parent):  # FINISHED, FAILED, or KILLED on an interruption: never left RUNNING
        for fold in range(plan.k):
            log.info("cv: fold %d of %d (%d held out)", fold + 1, plan.k, len(plan.members(fold)))
            folder = Path(runs_dir or output) / f"fold_{fold}"
            fitted = fit(fold_config(cfg, fold, parent.run_id), folder, dataset=fold_view(dataset, plan, fold))
            done.fold_run_ids.append(fitted.run_id)
            if fitted.best_checkpoint is None:
                raise RuntimeError(f"fold {fold}: training wrote no checkpoint (run {fitted.run_id})")
            split = f"fold_{fold}"
            held_out = fold_view(dataset, plan, fold, held_out=split)
            scored = evaluate_checkpoint(fitted.best_checkpoint, held_out, split, folder,
                                         RunLog(uri, fitted.run_id), options=cfg.evaluation)
            metrics = {k.split("/", 2)[-1]: float(v) for k, v in scored.metrics.items()}
            done.fold_metrics.append(metrics)
            per_sample = scored.per_sample.copy()
            per_sample.insert(1 if "id" in per_sample.columns else 0, "fold", fold)
            rows.append(per_sample)
            if writer is not None:
                loaded = load_checkpoint_model(fitted.best_checkpoint)
                predictor = Predictor(loaded.model, rule_from_meta(loaded.meta), options["device"],
                                      options["batch_size"])
                members = held_out.labeled(split)
                for start in range(0, len(members), predictor.batch_size):
                    batch = members[start:start + predictor.batch_size]
                    arrays = task.class_probabilities(predictor, [read_image(dataset.root / s.image) for s in batch],
                                              str(settings.resolution))
                    for sample, array in zip(batch, arrays):
                        writer.add(sample.id, fold, array)
        done.summary = summarize(done.fold_metrics)
        done.per_sample = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        if writer is not None:
            writer.close()
            done.out_of_fold = writer.folder
        _log_parent(parent, done, output)
    return done


def _log_parent(parent: Any, done: CrossValidation, output: Path) -> None:
    """Summary metrics, the per-fold table and the per-sample table on the parent run."""
    import pandas as pd

    from masklab.files import atomic_write

    parent.metrics({f"cv/{name}/mean": m for name, (m, _) in done.summary.items()})
    parent.metrics({f"cv/{name}/std": s for name, (_, s) in done.summary.items()})
    folds = pd.DataFrame([{"fold": i, "run_id": r, **m} for i, (r, m) in
                          enumerate(zip(done.fold_run_ids, done.fold_metrics))])
    table = atomic_write(output / FOLD_TABLE, lambda tmp: folds.to_csv(tmp, index=False))
    samples = atomic_write(output / PER_SAMPLE_TABLE, lambda tmp: done.per_sample.to_parquet(tmp, index=False))
    parent.files([table, samples], "cv")
    if done.out_of_fold is not None:
        from masklab.curation.out_of_fold import INDEX_FILE

        parent.file(done.out_of_fold / INDEX_FILE, "cv/out_of_fold")
        parent.tags({"masklab.out_of_fold": str(done.out_of_fold.resolve())})
