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
from masklab.errors import UserError

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
    from masklab.tasks import task_for
    from masklab.tracking.runs import ending
    from masklab.workflows.evaluation import evaluation_options
    from masklab.workflows.fitting import with_output_dir

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    cfg = with_output_dir(cfg, output)  # no Hydra runtime needed; each fold gets its own folder below
    task = task_for(cfg)
    options = evaluation_options(cfg.evaluation)
    check_out_of_fold(cfg.cv)  # before any training
    dataset, plan = dealt_folds(cfg)
    parent = start_parent_run(cfg, task, dataset, plan, output)
    done = CrossValidation(plan.k, parent.run_id, str(cfg.logger.tracking_uri), output)
    writer = out_of_fold_writer(cfg.cv, output)
    folds = []
    with ending(parent):  # FINISHED, FAILED, or KILLED on an interruption: never left RUNNING
        for fold in range(plan.k):
            folds.append(run_fold(cfg, task, dataset, plan, fold, Path(runs_dir or output) / f"fold_{fold}",
                                  parent.run_id, options, writer))
        _collect(done, folds, writer)
        _log_parent(parent, done, output)
    return done


def check_out_of_fold(settings: DictConfig) -> None:
    """``cv.resolution`` names a resolution out-of-fold predictions can be kept at, when they are kept."""
    from masklab.evaluation.record import RESOLUTIONS

    if bool(settings.out_of_fold) and str(settings.resolution) not in RESOLUTIONS:
        raise UserError(f"cv.resolution={settings.resolution}: expected one of {list(RESOLUTIONS)} (the size "
                        "out-of-fold predictions are kept at: the network's or each image's own)")


def dealt_folds(cfg: DictConfig) -> tuple[Any, Any]:
    """(the dataset, its fold plan): the folds stored in the manifest, dealt there first where needed."""
    from masklab.data.folds import ensure_folds
    from masklab.data.open import open_dataset

    settings = cfg.cv
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    dataset, plan = ensure_folds(dataset, settings.folds, list(settings.splits), int(settings.seed),
                                 bool(settings.reassign))
    if plan.changed:
        log.info("cv: dealt %d samples into %d folds; stored in %s", len(plan.folds), plan.k,
                 dataset.root / "manifest.jsonl")
    return dataset, plan


def start_parent_run(cfg: DictConfig, task: Any, dataset: Any, plan: Any, output: Path) -> Any:
    """The cross-validation's own run: the user's tags (a sweep's: its parent run, study and trial) and masklab's,
    the config as params."""
    from masklab.tracking.runs import flatten, start_run

    parent = start_run(str(cfg.logger.tracking_uri), cfg.logger.artifact_root, cfg.logger.experiment_name,
                       str(cfg.logger.get("run_name") or f"cv-{plan.k}-folds"),
                       {**(to_plain(cfg.get("tags")) or {}), "masklab.command": "cv", "masklab.task": task.name,
                        "masklab.dataset": dataset.name, "masklab.manifest_sha256": dataset.manifest_hash,
                        "masklab.output_dir": str(output.resolve()),
                        "masklab.dataset_root": str(dataset.root.resolve())})
    parent.params({**flatten(to_plain(cfg)), "cv.samples": str(len(plan.folds))})
    return parent


def out_of_fold_writer(settings: DictConfig, output: Path) -> Any:
    """The writer of ``out_of_fold/`` when ``cv.out_of_fold`` keeps them; None otherwise."""
    if not bool(settings.out_of_fold):
        return None
    from masklab.curation.out_of_fold import OutOfFoldWriter

    return OutOfFoldWriter(output / OUT_OF_FOLD_DIR, str(settings.resolution))


@dataclass
class Fold:
    """One fold's child run, its held-out metrics (without the ``eval/fold_<k>/`` prefix) and per-sample rows."""

    run_id: str
    metrics: dict[str, float]
    per_sample: Any  # pandas.DataFrame with a ``fold`` column


def run_fold(cfg: DictConfig, task: Any, dataset: Any, plan: Any, fold: int, folder: Path, parent_run_id: str,
             options: dict[str, Any], writer: Any) -> Fold:
    """Train fold ``fold`` on the other folds (into ``folder``), score its best checkpoint on the held-out fold as
    split ``fold_<k>`` and, with a ``writer``, keep the held-out samples' out-of-fold predictions."""
    from masklab.data.folds import fold_view
    from masklab.tracking.runs import RunLog
    from masklab.workflows.evaluation import evaluate_checkpoint
    from masklab.workflows.fitting import fit

    log.info("cv: fold %d of %d (%d held out)", fold + 1, plan.k, len(plan.members(fold)))
    fitted = fit(fold_config(cfg, fold, parent_run_id), folder, dataset=fold_view(dataset, plan, fold))
    if fitted.best_checkpoint is None:
        raise RuntimeError(f"fold {fold}: training wrote no checkpoint (run {fitted.run_id})")
    split = f"fold_{fold}"
    held_out = fold_view(dataset, plan, fold, held_out=split)
    scored = evaluate_checkpoint(fitted.best_checkpoint, held_out, split, folder,
                                 RunLog(str(cfg.logger.tracking_uri), fitted.run_id), options=cfg.evaluation)
    per_sample = scored.per_sample.copy()
    per_sample.insert(1 if "id" in per_sample.columns else 0, "fold", fold)
    if writer is not None:
        keep_out_of_fold(writer, task, fitted.best_checkpoint, held_out.labeled(split), dataset.root, fold, options)
    return Fold(fitted.run_id, {k.split("/", 2)[-1]: float(v) for k, v in scored.metrics.items()}, per_sample)


def keep_out_of_fold(writer: Any, task: Any, checkpoint: Path, members: list[Any], root: Path, fold: int,
                     options: dict[str, Any]) -> None:
    """Add the task's class probabilities of the held-out ``members`` by the fold's ``checkpoint`` to ``writer``,
    one batch in memory at a time."""
    from masklab.data.images import read_image
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference import Predictor, rule_from_meta

    loaded = load_checkpoint_model(checkpoint)
    predictor = Predictor(loaded.model, rule_from_meta(loaded.meta), options["device"], options["batch_size"])
    for start in range(0, len(members), predictor.batch_size):
        batch = members[start:start + predictor.batch_size]
        arrays = task.class_probabilities(predictor, [read_image(root / s.image) for s in batch], writer.resolution)
        for sample, array in zip(batch, arrays):
            writer.add(sample.id, fold, array)


def _collect(done: CrossValidation, folds: list[Fold], writer: Any) -> None:
    """The folds' runs, metrics, summary and per-sample rows into ``done``; the out-of-fold index written."""
    import pandas as pd

    done.fold_run_ids = [f.run_id for f in folds]
    done.fold_metrics = [f.metrics for f in folds]
    done.summary = summarize(done.fold_metrics)
    done.per_sample = pd.concat([f.per_sample for f in folds], ignore_index=True) if folds else pd.DataFrame()
    if writer is not None:
        writer.close()
        done.out_of_fold = writer.folder


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
