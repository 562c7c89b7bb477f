"""``evaluate``: score a checkpoint, an MLflow run or a registered model on a dataset split.

Writes the per-class table, metrics JSON, per-sample Parquet table, predictions and plots to
``<output_dir>/evaluation`` and logs them to an MLflow run. Called by ``masklab evaluate``, by
:func:`masklab.workflows.fit` after training and by the DVC pipeline's evaluate stage.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from masklab.data.classes import ClassTable
from masklab.data.manifest import Dataset
from masklab.data.sample_files import safe_name
from masklab.errors import UserError
from masklab.evaluation.record import RESOLUTIONS
from masklab.files import atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from masklab.tracking.runs import RunLog


@dataclass
class Evaluation:
    """One evaluation: the scores (``result``), the MLflow run they were logged to, and the folder."""

    result: Any  # masklab.evaluation.evaluate.EvaluationResult
    run_id: str | None
    folder: Path

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics


RESOLUTION_PREFIX = {"original": "eval", "model": "eval_model_res"}
PREPROCESS_SOURCES = ("model", "config")


def evaluation_options(options: DictConfig | dict | None) -> dict[str, Any]:
    """The ``evaluation`` config node as a plain dict with defaults, its choices checked."""
    opts = {"resolution": "original", "preprocess": "model", "device": "auto", "batch_size": 8, "num_workers": 0,
            "tta": "none", **dict(options or {})}
    from masklab.inference.engine import tta_views

    tta_views(str(opts["tta"]))  # (a UserError naming the choices)
    if opts["resolution"] not in RESOLUTIONS:
        raise UserError(f"evaluation.resolution={opts['resolution']}: expected one of {list(RESOLUTIONS)} "
                        "(original: score the original masks at each image's size; model: at the network's size)")
    if opts["preprocess"] not in PREPROCESS_SOURCES:
        raise UserError(f"evaluation.preprocess={opts['preprocess']}: expected one of {list(PREPROCESS_SOURCES)} "
                        "(model: the rule stored with the model; config: this config's augment.eval)")
    from masklab.metrics.boundary import DEFAULT_IGNORE_CONVENTION, IGNORE_CONVENTIONS

    opts.setdefault("boundary_ignore", DEFAULT_IGNORE_CONVENTION)
    if opts["boundary_ignore"] not in IGNORE_CONVENTIONS:
        raise UserError(f"evaluation.boundary_ignore={opts['boundary_ignore']}: expected one of "
                        f"{list(IGNORE_CONVENTIONS)} (void pixels near a contour in Boundary IoU: exclude = not "
                        "scored; raw = the raw prediction's contours; hide = void is no class in both masks)")
    for key, low, high in (("dilation_ratio", 0.0, 1.0), ("low_confidence", 0.0, 1.0)):
        value = opts.get(key)
        if value is not None and not (isinstance(value, int | float) and low <= float(value) <= high):
            raise UserError(f"evaluation.{key}={value}: expected a number from {low} to {high}")
    if not isinstance(opts["batch_size"], int) or opts["batch_size"] < 1:
        raise UserError(f"evaluation.batch_size={opts['batch_size']}: expected a positive number of images")
    return opts


class PredictionWriter:
    """Writes each prediction as ``<folder>/<safe id>.png`` at the image's original size (a prediction scored at
    model resolution is nearest-resized to it), and at the end the task's index of them all (instance: the COCO
    results ``predictions_coco.json``, keyed by sample id, with every object's class and score)."""

    def __init__(self, task: Any, dataset: Dataset, folder: Path):
        self.task, self.folder = task, folder
        self.sizes = {s.id: (s.width, s.height) for s in dataset.samples}
        self.records: list[Any] = []
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, sample_id: str, prediction: Any) -> None:
        self.task.write_prediction(prediction, self.folder / f"{safe_name(sample_id)}.png", self.sizes[sample_id])
        record = self.task.index_record(sample_id, prediction)
        if record is not None:
            self.records.append(record)

    def finish(self) -> Path | None:
        """The index file, or None when the task writes none."""
        return self.task.write_predictions_index(self.records, self.folder) if self.records else None


def evaluate_model(
    model: Any, class_table: ClassTable, label: str, dataset: Dataset, split: str, output_dir: Path,
    rule: Any, run=None, options: DictConfig | dict | None = None, task: Any = None,
    model_uri: str | None = None, rule_source: str = "model", model_version: tuple[str, str] | None = None,
):
    """Evaluate ``model`` (of ``task``, default semantic), fed by the InputRule ``rule``, on ``split``.

    Scores against the original masks at each image's own size unless ``options.resolution`` is
    "model". Prints the summary table, writes tables, predictions, plots and the evaluation record
    (``<split>_evaluation.json``: model, dataset version, split, resolution, preprocessing,
    platform) to ``output_dir/evaluation`` and to ``run``; the record also goes to the registered
    ``model_version`` (name, version) when given. With ``options.compare`` (a run id) adds
    per-sample deltas. Returns the task's EvaluationResult.
    """
    from rich.console import Console

    from masklab.tasks import DEFAULT_TASK, get_task

    task = task or get_task(DEFAULT_TASK)
    opts = evaluation_options(options)
    resolution = opts["resolution"]
    samples = scored_samples(dataset, split, class_table, label)
    out = output_dir / "evaluation"
    where = "original resolution" if resolution == "original" else f"model resolution ({rule.describe()})"
    result = score_split(task, model, rule, dataset, samples, split, opts, out, where)
    files = task.evaluation_files(result, out, split)
    # Boundary IoU's void convention, where one was scored (the metric names say so, whatever the task)
    void = opts["boundary_ignore"] if any("BoundaryIoU" in k for k in result.metrics) else None
    record = evaluation_record(result, dataset, split, resolution, rule, rule_source, model_uri or label, void,
                               tta=str(opts["tta"]))
    files.append(atomic_write(out / f"{split}_evaluation.json", lambda tmp: tmp.write_text(record.to_json())))
    files.extend(curve_plots(run, task.curve_metrics, out))
    rule_note = rule.describe() + ("" if rule_source == "model" else ", OVERRIDDEN by this config's augment.eval")
    void_note = f"; Boundary IoU next to void: {void}" if void and dataset.class_table.ignore_index is not None else ""
    Console().print(task.summary_table(result, f"{dataset.name} / {split}: {len(samples)} images, {label}, scored at "
                                               f"{where}; input: {rule_note}{void_note}"))
    if opts.get("compare"):
        files.append(compare_with(result.per_sample, str(opts["compare"]), split, out, run, task.gate_metric))
    if run is not None:
        run.metrics(result.metrics)
        run.files(files, "evaluation")
        run.directory(out / f"{split}_pred", f"evaluation/{split}_pred")
    _log_record(record, run, model_version)
    return result


def scored_samples(dataset: Dataset, split: str, class_table: ClassTable, label: str) -> list[Any]:
    """The labeled samples of ``split``, after checking that the model ``label`` has the dataset's classes."""
    if class_table.names != dataset.class_table.names:
        raise UserError(f"{label} has classes {class_table.names}; dataset {dataset.root} has "
                        f"{dataset.class_table.names}")
    samples = dataset.labeled(split)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{split}' has no labeled samples")
    return samples


def score_split(task: Any, model: Any, rule: Any, dataset: Dataset, samples: list[Any], split: str,
                opts: dict[str, Any], out: Path, where: str) -> Any:
    """The task's scores of ``model`` on ``samples`` (predictions written to ``<out>/<split>_pred``), with the
    per-sample table's split and resolution columns and the task's headline metric."""
    from torch.utils.data import DataLoader

    from masklab.console import progress
    from masklab.inference import Predictor

    resolution = opts["resolution"]
    predictor = Predictor(model, rule, opts["device"], int(opts["batch_size"]), tta=str(opts["tta"]))
    loader = DataLoader(task.eval_dataset(dataset, samples, rule if resolution == "model" else None),
                        batch_size=predictor.batch_size, collate_fn=task.collate,
                        num_workers=int(opts["num_workers"]))
    batches = progress(loader, f"evaluating {dataset.name}/{split} at {where} (batches)", total=len(loader))
    writer = PredictionWriter(task, dataset, out / f"{split}_pred")
    result = task.score(predictor, batches, dataset.class_table, f"{RESOLUTION_PREFIX[resolution]}/{split}", opts,
                        on_prediction=writer)
    writer.finish()
    result.headline_metric = task.gate_metric
    result.per_sample.insert(1, "split", split)
    result.per_sample.insert(2, "resolution", resolution)
    return result


def evaluation_record(result: Any, dataset: Dataset, split: str, resolution: str, rule: Any, rule_source: str,
                      model: str, boundary_ignore: str | None = None, tta: str = "none") -> Any:
    """The EvaluationRecord of ``result``: what was scored, on which data, with which rules, on which platform."""
    from masklab.evaluation.record import EvaluationRecord
    from masklab.platform import masklab_version, platform_fingerprint

    return EvaluationRecord(
        model=model, dataset=dataset.name, manifest_sha256=dataset.manifest_hash, split=split,
        resolution=resolution,
        metrics={k: float(v) for k, v in result.metrics.items()}, input_rule=rule.to_dict(),
        input_rule_source=rule_source, boundary_ignore=boundary_ignore, masklab_version=masklab_version(),
        platform=platform_fingerprint(), tta=tta)


def curve_plots(run: RunLog | None, curves: tuple[str, ...], out: Path) -> list[Path]:
    """The training curves of the run the evaluation is logged to, as ``training_curves.png`` (none untracked)."""
    from masklab.report.plots import training_curves

    history = run.metric_history(curves) if run is not None else {}
    return [training_curves(history, out / "training_curves.png")] if history else []


def _log_record(record: Any, run: Any, model_version: tuple[str, str] | None) -> None:
    """Attach the evaluation record to the MLflow entities it belongs to (run and/or model version)."""
    if run is None:  # an untracked evaluation keeps its record in <split>_evaluation.json only
        return
    from masklab.tracking.evaluations import log_evaluation

    log_evaluation(run.tracking_uri, record, run_id=run.run_id, model_version=model_version)


def compare_with(per_sample: pd.DataFrame, other_run: str, split: str, out: Path, run: RunLog | None,
                 metric: str = "mIoU") -> Path:
    """Join this evaluation with run ``other_run``'s per-sample table on id; write the deltas of every per-sample
    score both have, and print the samples whose ``metric`` (the task's headline, a per-sample column) dropped."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from masklab.tracking.runs import RunLog

    if run is None:
        raise UserError("compare= needs the evaluation to be tracked in MLflow")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            other = RunLog(run.tracking_uri, other_run)
            other.run_data()
        except Exception as exc:
            raise UserError(f"compare={other_run}: no such MLflow run in {run.tracking_uri}") from exc
        found = other.download(f"evaluation/{split}_per_sample.parquet", Path(tmp))
        if found is None:
            raise UserError(f"compare={other_run}: that run has no evaluation/{split}_per_sample.parquet; "
                            f"evaluate it on split '{split}' first")
        theirs = pd.read_parquet(found)
    scores = (metric, *(c for c in ("mIoU", "boundary_mIoU", "pixel_acc", "mDice") if c != metric))
    cols = [c for c in scores if c in per_sample and c in theirs]
    if metric not in cols:
        raise UserError(f"compare={other_run}: its per-sample table has no '{metric}' column to compare with")
    merged = per_sample[["id", *cols]].merge(theirs[["id", *cols]], on="id", suffixes=("", "_other"))
    for c in cols:
        merged[f"delta_{c}"] = merged[c] - merged[f"{c}_other"]
    merged = merged.sort_values(f"delta_{metric}", ignore_index=True)
    path = atomic_write(out / f"{split}_compare.parquet", lambda tmp: merged.to_parquet(tmp, index=False))
    worse = merged[merged[f"delta_{metric}"] < 0]
    table = Table(title=f"{len(worse)} of {len(merged)} samples got worse than run {other_run[:8]} ({metric})")
    shown = ("id", metric, f"{metric}_other", f"delta_{metric}")
    for col in shown:
        table.add_column(col, justify="left" if col == "id" else "right")
    for row in worse.head(10)[list(shown)].itertuples(index=False):
        table.add_row(str(row[0]), f"{row[1]:.4f}", f"{row[2]:.4f}", f"{row[3]:+.4f}")
    Console().print(table)
    return path


def evaluate_checkpoint(ckpt: Path, dataset: Dataset, split: str, output_dir: Path, run=None,
                        options: DictConfig | dict | None = None, rule: Any = None):
    """:func:`evaluate_model` for the model of a checkpoint file, with the input rule it was trained
    with unless ``rule`` (an InputRule) overrides it."""
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference import rule_from_meta
    from masklab.tasks import task_for

    loaded = load_checkpoint_model(ckpt)
    trained_in = loaded.meta.get("mlflow_run_id")
    model_uri = f"runs:/{trained_in}" if run is not None and trained_in == run.run_id else f"checkpoint:{ckpt}"
    return evaluate_model(loaded.model, loaded.class_table, f"checkpoint {ckpt.name}", dataset, split, output_dir,
                          rule or rule_from_meta(loaded.meta), run, options=options, task=task_for(loaded.meta),
                          model_uri=model_uri, rule_source="model" if rule is None else "config")


def evaluate(cfg: DictConfig, output_dir: str | Path, *, ckpt_path: str | Path | None = None,
             run_id: str | None = None, model_ref: str | None = None, split: str = "val") -> Evaluation:
    """Evaluate exactly one of a checkpoint file, an MLflow run's best checkpoint or a registered model
    (``models:/<name>/<stage or version>`` / ``models:/<name>@<alias>``) on ``split`` of ``cfg.data``.

    ``cfg``: an ``evaluate`` config (data, augment, logger, evaluation, paths, check_data). The
    model's own input rule is used unless ``evaluation.preprocess=config`` (then ``augment.eval``).
    Results go to the run that trained the checkpoint when the store has it, else to a new run; a
    registered model's evaluation record is also attached to its model version.
    """
    from masklab.data.open import open_dataset
    from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY, read_checkpoint_meta
    from masklab.inference import InputRule
    from masklab.tasks import task_for
    from masklab.tracking.model_ref import load_model_ref, registry_version
    from masklab.tracking.runs import RunLog, downloaded_checkpoint, open_run

    chosen = [k for k, v in (("ckpt_path", ckpt_path), ("run_id", run_id), ("model", model_ref)) if v]
    if len(chosen) != 1:
        raise UserError("evaluate needs exactly one of ckpt_path=<file>, run_id=<MLflow run id> or "
                        f"model=<models:/name/stage|models:/name@alias>; got {chosen or 'none'}")
    uri = cfg.logger.tracking_uri
    options = evaluation_options(cfg.evaluation)
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    output = Path(output_dir)
    override = InputRule.from_eval_pipeline(cfg.augment.eval, ignore_index=dataset.class_table.ignore_index) \
        if options["preprocess"] == "config" else None
    if model_ref:
        # Resolved once, to a version number: a promotion between loading and recording cannot attach this
        # evaluation to another version than the one scored.
        registered = registry_version(str(model_ref), uri) if str(model_ref).startswith("models:/") else None
        version_uri = f"models:/{registered[0]}/{registered[1]}" if registered else str(model_ref)
        package = load_model_ref(version_uri, uri)
        run = open_run(uri, None, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.model": str(model_ref),
                        "masklab.model_version": "/".join(registered) if registered else "",
                        "masklab.dataset": dataset.name, "masklab.dataset_root": str(dataset.root.resolve()),
                        "masklab.manifest_sha256": dataset.manifest_hash})
        result = evaluate_model(package.model, package.class_table, str(model_ref), dataset, split, output,
                                override or package.input_rule, run, options=options, task=task_for(package.spec),
                                model_uri=version_uri,
                                rule_source="model" if override is None else "config",
                                model_version=registered)
    elif run_id:
        with downloaded_checkpoint(uri, str(run_id)) as ckpt:
            run = RunLog(uri, str(run_id))
            result = evaluate_checkpoint(ckpt, dataset, split, output, run, options=options, rule=override)
    else:
        ckpt = Path(str(ckpt_path))
        if not ckpt.is_file():
            raise UserError(f"ckpt_path: checkpoint {ckpt} does not exist")
        trained_in = read_checkpoint_meta(ckpt)[CHECKPOINT_META_KEY].get("mlflow_run_id")
        run = open_run(uri, trained_in, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       {"masklab.command": "evaluate", "masklab.checkpoint": str(ckpt.resolve()),
                        "masklab.dataset_root": str(dataset.root.resolve())})
        result = evaluate_checkpoint(ckpt, dataset, split, output, run, options=options, rule=override)
    return Evaluation(result, run.run_id, output / "evaluation")
