"""`masklab pipeline <stage> [extra overrides]`: the commands that dvc.yaml runs.

Every stage composes masklab's ``train`` config with the overrides in ``params.yaml`` (then any
given after the stage name), so all stages of one pipeline see one config. DVC's own Hydra
composition is refused: it rewrites params.yaml on each ``dvc exp run`` but not on ``dvc repro``,
so the two could run different configs (dvc #8355).

One key of params.yaml is the pipeline's own, not a train override: ``source: <preset>`` makes
``prepare`` import a real dataset with that ``conf/source`` preset instead of synthesizing one.

Stages and what they write (the paths dvc.yaml declares):
  prepare   the dataset at ``data.root``: synthesized, or imported from ``source``
  train     <out>/train/{model.ckpt, metrics.json, history.csv, run.json, config.yaml}
  evaluate  <out>/evaluate/{metrics.json, per_class.csv, evaluation/}, logged to the training run
  report    <out>/report/index.html, the HTML explorer of the evaluation
  cv        <out>/cv/{metrics.json, cv_folds.csv, cv_per_sample.parquet, out_of_fold/, run.json}: k-fold
            cross-validation (``cv:`` in params.yaml; ``prepare`` deals the folds into the dataset's manifest,
            so this stage never changes another stage's output)
  label-errors  <out>/label_errors/{label_errors.parquet, label_issues.parquet, explorer/}, from cv's
            out-of-fold predictions, logged to the cross-validation's MLflow run
(train and evaluate also write platform.json, the platform fingerprint their metrics came from).

``masklab pipeline check [rev=HEAD] [tolerance=...]`` is no stage: after a fresh ``dvc repro`` it
compares the work tree's metrics with the committed ones (masklab.pipeline.check); exit 1 when
they differ by more than the two platforms allow.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from masklab.config import compose, to_plain
from masklab.console import logger, result
from masklab.errors import EXIT_PROBLEMS, UserError
from masklab.pipeline.outputs import MODEL_FILE, RUN_FILE, write_evaluation_outputs
from masklab.pipeline.params import read_params, to_overrides

log = logger(__name__)
STAGES = ("prepare", "train", "evaluate", "report", "cv", "label-errors")
CV_DIR, LABEL_ERRORS_DIR = "cv", "label_errors"
# Set to 1 to let `prepare` replace a recorded dataset version by what it regenerates.
ACCEPT_REGENERATED = "MASKLAB_ACCEPT_REGENERATED"
USAGE = (f"usage: masklab pipeline <{'|'.join(STAGES)}> [params=params.yaml] [out=pipeline] [overrides]\n"
         "Runs one stage of dvc.yaml with the Hydra overrides of params.yaml; see README, Pipelines.\n"
         "       masklab pipeline check [rev=HEAD] [out=pipeline] [tolerance=<one max |diff| for every metric>]\n"
         "Compares the metrics of the last `dvc repro` with those committed at rev: equal on the same platform, "
         "within the tolerance on another; exit 1 otherwise.")


def check_no_dvc_hydra(root: Path) -> None:
    """Refuse to run when DVC's Hydra composition is on: it would overwrite params.yaml."""
    for name in ("config", "config.local"):
        path = root / ".dvc" / name
        if not path.is_file():
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.get("hydra", "enabled", fallback="false").strip().lower() in ("true", "1", "yes"):
            raise UserError(f"{path}: hydra.enabled is true; masklab pipelines keep params.yaml as the only "
                            "config and compose it themselves. Run `dvc config --unset hydra.enabled`.")


def experiments_redirect(cwd: Path) -> list[str]:
    """Overrides that keep MLflow runs and run folders in the main work tree's experiments/ when
    DVC runs a queued or temporary experiment in ``<repo>/.dvc/tmp/exps/<tmp>/`` (deleted afterwards)."""
    parts = cwd.resolve().parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return [f"paths.experiments_dir={Path(*parts[:i]) / 'experiments'}"]
    return []


def prepare(cfg: DictConfig, params: Path, source: str | None, cv: DictConfig | None = None) -> None:
    """Synthesize ``cfg.data`` or, with ``source``, import it with that conf/source preset; with ``cv`` (the
    composed ``cv`` config, when params.yaml has ``cv:``), deal its folds into the manifest."""
    from masklab.data.manifest import summary
    from masklab.data.open import synthesizes_on_first_use
    from masklab.data.synth import synthesize
    from masklab.workflows import import_dataset

    root = Path(cfg.data.root)
    if root.exists():
        raise UserError(f"{root} exists: DVC removes a stage's outputs before running it, so this was not started "
                        "by `dvc repro`; run the stage through DVC, or remove the folder yourself")
    if source:
        # write_conf=false: a DVC stage writes only its declared output, never the project's conf/.
        imported = import_dataset(compose("data_import", [f"source={source}", f"name={cfg.data.name}", f"out={root}",
                                                          "write_conf=false"], str(params)))
        result(f"Imported {summary(imported.dataset)}")
    elif synthesizes_on_first_use(cfg.data):
        synthesize(root, **to_plain(cfg.data.synth))
    else:
        raise UserError(f"{params}: data={cfg.data.name} is not synthetic and no `source:` says where to import it "
                        f"from (a conf/source preset, e.g. source: kvasir_seg)")
    if cv is not None:
        from masklab.data.folds import ensure_folds
        from masklab.data.manifest import load_dataset

        ensure_folds(load_dataset(root), int(cv.cv.folds), list(cv.cv.splits), int(cv.cv.seed))
    check_regenerated(root, params)
    result(f"prepare: wrote {root}")


def check_regenerated(root: Path, params: Path, stage: str = "prepare") -> None:
    """Refuse data that differ from the version dvc.lock records for the same inputs.

    With unchanged code and params, a deterministic generator gives the recorded bytes back,
    unless the recorded version holds hand edits (label fixes committed with `dvc commit`). A
    fresh clone running `dvc repro` without those data would silently lose the fixes; instead the
    stage fails and says how to fetch the recorded version.
    """
    import yaml

    from masklab.data.versioning import dvc_md5, find_dvc_root, locked_stage

    repo = find_dvc_root(root)
    locked = locked_stage(repo, stage) if repo else None
    if not locked:
        return
    rel = os.path.normpath(os.path.relpath(root.resolve(), repo))
    recorded = next((o.get("md5") for o in locked.get("outs", []) if os.path.normpath(o["path"]) == rel), None)
    if recorded is None:
        return
    current = yaml.safe_load(params.read_text()) or {}
    for file, values in (locked.get("params") or {}).items():
        if Path(file).name == params.name and any(current.get(k) != v for k, v in values.items()):
            return  # params changed: new data are expected
    for dep in locked.get("deps", []):
        if not (repo / dep["path"]).exists() or dvc_md5(repo / dep["path"]) != dep.get("md5"):
            return  # code changed: new data are expected
    produced = dvc_md5(root)
    if produced == recorded:
        return
    if os.environ.get(ACCEPT_REGENERATED) == "1":
        log.warning("prepare: %s differs from the version in dvc.lock (%s vs %s); kept, as %s=1 asks",
                    root, produced, recorded, ACCEPT_REGENERATED)
        return
    shutil.rmtree(root)  # only what this stage wrote a moment ago; the recorded version is in DVC
    raise UserError(
        f"{root}: regenerated data ({produced}) differ from the version in dvc.lock ({recorded}) although code and "
        f"params are unchanged: the recorded data hold hand edits (label fixes), or other library versions made "
        f"other bytes. Fetch the recorded data with `dvc pull {rel}` (or `dvc checkout {rel}`), then `dvc repro`; "
        f"to use the regenerated data instead, run `{ACCEPT_REGENERATED}=1 dvc repro`.")


def trained_run(out: Path) -> str:
    """The MLflow run id the train stage recorded in ``<out>/train/run.json``."""
    run_file = out / "train" / RUN_FILE
    if not run_file.is_file():
        raise UserError(f"{run_file} does not exist: run the train stage first (dvc repro)")
    return json.loads(run_file.read_text())["mlflow_run_id"]


def train(cfg: DictConfig, out: Path) -> None:
    """Fit without evaluation (the evaluate stage does it) and export the stage's outputs."""
    from omegaconf import OmegaConf, open_dict

    from masklab.pipeline.outputs import write_fit_outputs
    from masklab.workflows import fit

    with open_dict(cfg):
        cfg.evaluate_after = False
    # The run folder of `masklab train`'s layout (checkpoints/, last.ckpt for resuming).
    output_dir = Path(cfg.paths.experiments_dir) / "runs" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S_pipeline-train")
    as_given = OmegaConf.to_yaml(cfg)  # the config file the stage exports, before fit fills in the run folder
    fitted = fit(cfg, output_dir)
    if fitted.best_checkpoint is not None:
        write_fit_outputs(out / "train", fitted, as_given)
    result(f"train: best {fitted.monitor} {fitted.best_value:.6f}; wrote {out / 'train'}; MLflow run {fitted.run_id}")


def evaluate(cfg: DictConfig, out: Path) -> None:
    from masklab.data.open import open_dataset
    from masklab.tracking.runs import open_run
    from masklab.workflows import evaluate_checkpoint

    ckpt = out / "train" / MODEL_FILE
    if not ckpt.is_file():
        raise UserError(f"{ckpt} does not exist: run the train stage first (dvc repro)")
    trained_in = trained_run(out)
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    run = open_run(cfg.logger.tracking_uri, trained_in, cfg.logger.artifact_root, cfg.logger.experiment_name,
                   {"masklab.command": "pipeline evaluate", "masklab.checkpoint": str(ckpt.resolve())})
    folder = out / "evaluate"
    results = {split: evaluate_checkpoint(ckpt, dataset, split, folder, run, options=cfg.evaluation)
               for split in ("val", "test") if dataset.labeled(split)}
    write_evaluation_outputs(folder, {split: r.metrics for split, r in results.items()}, results["val"].per_class)
    result(f"evaluate: wrote {folder}; logged to MLflow run {run.run_id}")


def cross_validation(cfg: DictConfig, out: Path) -> None:
    """K-fold cross-validation on the folds ``prepare`` stored; fold run folders under experiments/runs/."""
    from masklab.data.folds import covered_samples
    from masklab.data.open import open_dataset
    from masklab.pipeline.outputs import write_cv_outputs
    from masklab.workflows import cross_validate

    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    unassigned = [s.id for s in covered_samples(dataset, list(cfg.cv.splits)) if s.fold is None]
    if unassigned:
        raise UserError(f"{dataset.root}: {len(unassigned)} samples have no fold (e.g. {unassigned[:3]}); the cv "
                        "stage does not change the prepared data: put `cv: {folds: K}` in params.yaml and run "
                        "`dvc repro` (prepare deals the folds)")
    runs = Path(cfg.paths.experiments_dir) / "runs" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S_pipeline-cv")
    done = cross_validate(cfg, out / CV_DIR, runs_dir=runs)
    write_cv_outputs(out / CV_DIR, done.summary, done.parent_run_id)
    result(f"cv: {done.k} folds, mIoU {done.mean('mIoU'):.4f} ± {done.std('mIoU'):.4f}; wrote {out / CV_DIR}; "
           f"MLflow run {done.parent_run_id}")


def label_errors(cfg: DictConfig, out: Path) -> None:
    """The label-error ranking and its explorer view from the cv stage's out-of-fold predictions."""
    from masklab.data.open import open_dataset
    from masklab.tasks import task_for
    from masklab.tracking.runs import RunLog
    from masklab.workflows import find_label_errors, write_label_error_explorer

    run_file, oof = out / CV_DIR / RUN_FILE, out / CV_DIR / "out_of_fold"
    if not run_file.is_file() or not oof.is_dir():
        raise UserError(f"{run_file} or {oof} does not exist: run the cv stage first (dvc repro)")
    run = RunLog(cfg.logger.tracking_uri, json.loads(run_file.read_text())["mlflow_run_id"])
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    task = task_for(cfg).name
    found = find_label_errors(oof, dataset, out / LABEL_ERRORS_DIR, run, task=task)
    index = write_label_error_explorer(found, dataset, oof, top=100, task=task, run=run)
    result(f"label-errors: {len(found.samples)} samples ranked; wrote {out / LABEL_ERRORS_DIR} ({index})")


def report(cfg: DictConfig, out: Path) -> None:
    from masklab.workflows import report as write_report

    done = write_report(trained_run(out), out / "report", cfg.logger.tracking_uri)
    result(f"report: wrote {done.index}")
    for p in done.problems:
        log.warning("report: %s", p)


def run_stage(stage: str, params: Path, out: Path, extra: list[str]) -> None:
    root = Path.cwd()
    check_no_dvc_hydra(root)
    values = read_params(params)
    source = values.pop("source", None)  # the pipeline's own key (see the module docstring)
    cv = values.pop("cv", None)  # the cv stage's settings: only the cv config has them
    overrides = [*to_overrides(values), *extra, *experiments_redirect(root)]
    cv_cfg = compose("cv", [*overrides, *to_overrides({"cv": cv})], str(params)) if cv is not None else None
    if stage in ("cv", "label-errors"):
        if cv_cfg is None:
            raise UserError(f"{params}: no `cv:` section (e.g. cv: {{folds: 3}}); the {stage} stage needs it")
        (cross_validation if stage == "cv" else label_errors)(cv_cfg, out)
        return
    cfg = compose("train", overrides, str(params))
    if stage == "prepare":
        prepare(cfg, params, source, cv_cfg)
    elif stage == "train":
        train(cfg, out)
    elif stage == "evaluate":
        evaluate(cfg, out)
    else:
        report(cfg, out)


def check(out: Path, extra: list[str]) -> None:
    """``masklab pipeline check``: print the comparison with the committed metrics; exit 1 when it fails."""
    from masklab.pipeline.check import ACROSS_PLATFORMS, Tolerance
    from masklab.pipeline.check import check as check_metrics

    options: dict[str, str | None] = {"rev": "HEAD", "tolerance": None}
    for arg in extra:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            raise UserError(f"check: unknown argument '{arg}'; expected rev=<git revision>, tolerance=<number> "
                            "(one bound for every metric instead of the measured ones), out=<folder>")
        options[key] = value
    tolerance = ACROSS_PLATFORMS
    if options["tolerance"] is not None:
        try:
            bound = float(options["tolerance"])
        except ValueError:
            raise UserError(f"check: tolerance={options['tolerance']} is not a number") from None
        if not bound >= 0:
            raise UserError(f"check: tolerance={options['tolerance']} must be a number >= 0")
        tolerance = Tolerance.uniform(bound)
    compared = check_metrics(Path.cwd(), out, str(options["rev"]), tolerance)
    result(compared.report())
    if not compared.passed:
        raise SystemExit(EXIT_PROBLEMS)


def main(args: list[str]) -> None:
    """Entry point from ``masklab pipeline ...`` (not a Hydra app: its config is params.yaml)."""
    from masklab.console import quiet_third_party
    from masklab.errors import run_reporting_errors

    if not args or args[0] == "help" or {"-h", "--help"} & set(args):  # `masklab pipeline check --help` too
        result(USAGE)
        return
    stage, rest = args[0], args[1:]
    params, out, extra = Path("params.yaml"), Path("pipeline"), []
    for arg in rest:
        if arg.startswith("params="):
            params = Path(arg.split("=", 1)[1])
        elif arg.startswith("out="):
            out = Path(arg.split("=", 1)[1])
        else:
            extra.append(arg)

    def run() -> None:
        if stage == "check":
            check(out, extra)
            return
        if stage not in STAGES:
            raise UserError(f"unknown stage '{stage}'; expected one of {list(STAGES)} or check")
        quiet_third_party()
        run_stage(stage, params, out, extra)

    # The stage in the error line (`masklab pipeline train: error: ...`): dvc repro's log shows which one failed.
    run_reporting_errors(f"pipeline {stage}", run)
