"""`masklab sweep sweep=<preset>`: an Optuna study of `train` runs, one MLflow parent run, K local workers.

1. Validate the preset (search space, sampler, pruner) and compose `train` with its base overrides, which
   gives the monitored metric, the direction (``monitor_mode``), the MLflow store and experiment.
2. Create or load the study (``load_if_exists``): running the command again resumes it and adds trials.
   A grid is enqueued as fixed trials, only the points without a finished (or running) trial.
3. Create the parent MLflow run, or reopen the study's one; trials are its children (``mlflow.parentRunId``).
4. Run the trials here (``workers=1``), in K worker processes on the same study, or in K submitit jobs
   (``hydra/launcher=submitit_slurm|submitit_local``: SLURM jobs or local processes, see masklab.jobs).
5. Record the best value and overrides on the parent run; print them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from masklab.config import to_plain
from masklab.console import logger, result
from masklab.errors import UserError
from masklab.files import call_with_retry
from masklab.overrides import format_override
from masklab.sweep.space import Param, grid_points, one_line, parse_grid, parse_overrides, parse_params
from masklab.sweep.study import (
    direction_of,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    redact,
    sampler_kind,
    study_lock,
)
from masklab.sweep.trial import SweepSpec, compose_train
from masklab.sweep.worker import ERROR_PREFIX, run_trials

PRESET_KEYS = {"name", "description", "sampler", "params", "grid", "pruner", "n_trials", "overrides"}
ATTR_MONITOR = "masklab.monitor"
ATTR_PARENT = "masklab.parent_run_id"
ATTR_TRACKING = "masklab.tracking_uri"
ATTR_SWEEPS = "masklab.sweeps_started"
WORKER_STOP_TIMEOUT_S = 60

log = logger(__name__)


def parse_preset(preset: dict[str, Any]) -> tuple[str, list[Param]]:
    """(sampler kind, parameters) of a preset; every mistake is a UserError naming the key."""
    unknown = sorted(set(preset) - PRESET_KEYS)
    if unknown:
        raise UserError(f"sweep: unknown key(s) {unknown}; a preset takes {sorted(PRESET_KEYS)}")
    kind, _ = sampler_kind(preset.get("sampler"))
    if kind == "grid":
        if preset.get("params"):
            raise UserError("sweep: sampler grid takes grid: {key: [values]}, not params:")
        return kind, parse_grid(preset.get("grid"))
    if preset.get("grid"):
        raise UserError(f"sweep: grid: is for sampler: grid; sampler {kind} takes params:")
    return kind, parse_params(preset.get("params"))


def positive_int(value: Any, key: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}: expected a positive integer, got {value!r}")
    return value


def trial_params(trial) -> dict[str, Any]:
    """Parameters of a trial, also of a WAITING one (enqueued, not yet sampled)."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})


def enqueue_grid(study, params: list[Param], n_trials: int | None) -> tuple[int, str]:
    """Enqueue the grid points that have no complete, pruned or running trial; returns (trials to run, note).

    Waiting trials left by a stopped sweep are run first when they still are grid points, and dropped
    (marked failed) when the grid changed.
    """
    import warnings

    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RUNNING trials of a killed sweep: failed, so run again

    def key(values: dict[str, Any]) -> tuple:
        return tuple(sorted((str(k), repr(v)) for k, v in values.items()))

    points = grid_points(params)
    grid = {key(p) for p in points}
    trials = study.get_trials(deepcopy=False)
    done = {key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)}
    waiting = set()
    for t in trials:
        if t.state != TrialState.WAITING:
            continue
        k = key(trial_params(t))
        if k in grid and k not in done and k not in waiting:
            waiting.add(k)
        else:
            study._storage.set_trial_user_attr(t._trial_id, "error", "dropped: not a pending point of the grid")
            call_with_retry(study._storage.set_trial_state_values, t._trial_id, TrialState.FAIL)
    pending = [p for p in points if key(p) not in done and key(p) not in waiting]
    budget = len(pending) + len(waiting) if n_trials is None else n_trials
    new = pending[: max(0, budget - len(waiting))]
    for point in new:
        call_with_retry(study.enqueue_trial, point)
    n_done = sum(key(p) in done for p in points)
    return min(budget, len(waiting) + len(new)), f"grid of {len(points)} points, {n_done} done or running"


def open_parent_run(study, study_name: str, tracking_uri: str, artifact_root: str, experiment: str,
                    params: dict[str, str], tags: dict[str, str]) -> tuple[str, bool]:
    """The study's parent run (reopened) or a new one; returns (run id, created)."""
    from masklab.tracking.runs import RunLog, artifact_location, client

    c = client(tracking_uri)
    previous = study.user_attrs.get(ATTR_PARENT)
    if previous and study.user_attrs.get(ATTR_TRACKING) == tracking_uri:
        try:
            run = c.get_run(previous)
            if run.info.lifecycle_stage == "active":
                c.update_run(previous, status="RUNNING")  # (the client retries a locked store itself)
                return previous, False
        except Exception:  # deleted, or another store: start a new parent
            pass
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp_id = c.create_experiment(experiment,
                                         artifact_location=artifact_location(tracking_uri, artifact_root, experiment))
        except Exception:  # created meanwhile by another process
            exp = c.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    run = c.create_run(exp_id, run_name=f"sweep-{study_name}", tags=tags)
    run_id = run.info.run_id
    RunLog(tracking_uri, run_id).params(params)
    study.set_user_attr(ATTR_PARENT, run_id)
    study.set_user_attr(ATTR_TRACKING, tracking_uri)
    return run_id, True


def finish_parent(study, tracking_uri: str, run_id: str, monitor: str, status: str) -> Any:
    """Best value, overrides and trial counts on the parent run; end it with ``status``. Returns the best trial."""
    from collections import Counter

    from optuna.trial import TrialState

    from masklab.tracking.runs import RunLog

    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    run = RunLog(tracking_uri, run_id)
    metrics = {"trials_complete": counts[TrialState.COMPLETE], "trials_pruned": counts[TrialState.PRUNED],
               "trials_failed": counts[TrialState.FAIL], "trials": len(trials)}
    tags = {"masklab.sweep_status": status}
    if best is not None:
        metrics[f"best/{monitor}"] = float(best.value)
        tags.update({"masklab.best_trial": str(best.number),
                     "masklab.best_overrides": " ".join(best.user_attrs.get("overrides") or
                                                        [format_override(k, v) for k, v in best.params.items()]),
                     "masklab.best_run_id": str(best.user_attrs.get("mlflow_run_id", ""))})
    run.metrics(metrics, step=len(trials))
    run.tags(tags)
    run.end(status)
    return best


def split_trials(n_trials: int | None, workers: int) -> list[int | None]:
    """The trials of each of ``min(workers, n_trials)`` workers, as even as can be; None (a time-boxed study:
    each worker runs trials until its deadline) for each of ``workers``."""
    if n_trials is None:
        return [None] * workers
    n = min(workers, n_trials)
    return [n_trials // n + (i < n_trials % n) for i in range(n)]


def quota_text(quotas: list[int | None]) -> str:
    """``3, 2 trials``, or ``trials until the deadline`` for a time-boxed study."""
    if any(q is None for q in quotas):
        return "trials until the deadline"
    return ", ".join(str(q) for q in quotas) + " trials"


def run_workers(spec: SweepSpec, n_trials: int | None, workers: int) -> None:
    """K worker processes on the study, ``n_trials`` split between them; the first configuration error stops all."""
    quotas = split_trials(n_trials, workers)
    n = len(quotas)
    env = dict(os.environ, PYTHONUNBUFFERED="1", MLFLOW_DISABLE_TELEMETRY="true")
    threads = str(max(1, (os.cpu_count() or 1) // n))  # the cores are shared, not oversubscribed
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    log_dir = Path(spec.sweep_dir) / "workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[int, subprocess.Popen, Path]] = []
    try:
        for i, quota in enumerate(quotas, 1):
            err_path = log_dir / f"worker-{i}.err"
            with open(err_path, "w") as err:
                proc = subprocess.Popen([sys.executable, "-m", "masklab.sweep.worker"], stdin=subprocess.PIPE,
                                        stderr=err, env=env, text=True)
            proc.stdin.write(replace(spec, worker=i, n_trials=quota).to_json())
            proc.stdin.close()
            procs.append((i, proc, err_path))
        log.info("Started %d workers (%s; stderr in %s)", n, quota_text(quotas), log_dir)
        while any(p.poll() is None for _, p, _ in procs):
            for i, p, err_path in procs:
                if p.poll() not in (None, 0):
                    raise worker_error(i, p.returncode, err_path)
            time.sleep(0.5)
        for i, p, err_path in procs:
            if p.returncode != 0:
                raise worker_error(i, p.returncode, err_path)
    finally:
        stop_workers([p for _, p, _ in procs])


def run_worker_jobs(spec: SweepSpec, n_trials: int | None, workers: int, launcher: dict[str, Any],
                    base: DictConfig) -> None:
    """K workers as submitit jobs (SLURM, or local processes) with the settings of the command's
    ``hydra/launcher`` preset, resolved against the trials' train config; wait for them. A worker's mistake stops
    the others (their running trials are recorded failed), as with local workers."""
    from masklab.jobs import resolve_launcher, submit_function
    from masklab.sweep.worker import run_as_job

    folder = Path(spec.sweep_dir) / "workers"
    kind, choice, params = resolve_launcher(launcher, base, folder, "sweep_worker")
    if kind == "slurm" and params.get("tasks_per_node") != 1:
        raise UserError(f"trainer.devices={base.trainer.devices}: a sweep worker runs its trials in one process; "
                        "sweep with one device per trial (a grid of multi-device runs: masklab train -m ...)")
    params["tasks_per_node"] = 1
    quotas = split_trials(n_trials, workers)
    calls = [(replace(spec, worker=i, n_trials=quota).to_json(),) for i, quota in enumerate(quotas, 1)]
    jobs = submit_function(kind, params, run_as_job, calls, config=base)
    log.info("Submitted %d worker job(s) with hydra/launcher=%s (%s; logs in %s): %s", len(jobs), choice,
             quota_text(quotas), folder, " ".join(str(j.job_id) for j in jobs))
    pending = dict(enumerate(jobs, 1))
    try:
        while pending:
            for i, job in list(pending.items()):
                if job.done():
                    del pending[i]
                    check_worker_job(i, job)
            time.sleep(1)
    finally:
        for job in pending.values():  # a worker failed, or Ctrl-C: the others stop (scancel, or SIGINT locally)
            job.cancel(check=False)


def check_worker_job(i: int, job: Any) -> None:
    """Raise what a finished worker job stands for: its UserError (status 2), a WorkerCrashed naming its log."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        code, message = job.result()
    except (FailedJobError, UncompletedJobError) as exc:  # killed, out of memory or time: no result came back
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise WorkerCrashed(f"worker {i} (job {job.job_id}) ended without a result: {first} "
                            f"(log {job.paths.stderr})") from None
    if code == 2:
        raise UserError(message)
    if code != 0:
        raise WorkerCrashed(f"worker {i} (job {job.job_id}) exited with status {code}: {message} "
                            f"(traceback in {job.paths.stderr})")


class WorkerCrashed(RuntimeError):
    """A sweep worker ended with a bug (not a configuration mistake); its traceback is in its stderr file."""


def worker_error(i: int, returncode: int, err_path: Path) -> Exception:
    """The error a failed worker stands for: its one-line UserError (exit 2), else a WorkerCrashed naming its log."""
    lines = err_path.read_text(errors="replace").splitlines() if err_path.is_file() else []
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return UserError(line[len(ERROR_PREFIX):])
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    return WorkerCrashed(f"worker {i} exited with status {returncode}: {last.strip()} (traceback in {err_path})")


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """Ctrl-C the workers still running (their trial is recorded as failed), then wait; kill the stubborn."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        try:
            p.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.time() + WORKER_STOP_TIMEOUT_S
    for p in running:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class SweepSettings:
    """What a sweep command asks for, checked: the preset's space and sampler, the study, the trials' budget."""

    preset: dict[str, Any]
    kind: str
    params: list[Param]
    study_name: str
    base_overrides: list[str]
    workers: int
    n_trials: int | None
    stop_after: int
    cv_folds: int
    sweep_dir: Path


def read_settings(cfg: DictConfig) -> SweepSettings:
    """The sweep's settings from its config and preset; every mistake a UserError naming the key."""
    preset = to_plain(cfg.sweep)
    kind, params = parse_preset(preset)
    study_name = str(cfg.study or preset.get("name") or "").strip()
    if not study_name:
        raise UserError("study: no study name; set name: in the preset or pass study=<name>")
    make_sampler(preset.get("sampler"))  # options checked before anything is written
    make_pruner(preset.get("pruner"))
    cv_folds = int(cfg.cv_folds if cfg.get("cv_folds") is not None else preset.get("cv_folds") or 0)
    if cv_folds == 1 or cv_folds < 0:
        raise UserError(f"cv_folds={cv_folds}: expected 0 (train once, score on val) or a number of folds >= 2")
    return SweepSettings(
        preset, kind, params, study_name,
        [*parse_overrides(preset.get("overrides"), "sweep.overrides"), *parse_overrides(cfg.overrides)],
        int(positive_int(cfg.workers, "workers") or 1),
        positive_int(cfg.n_trials if cfg.n_trials is not None else preset.get("n_trials"), "n_trials",
                     allow_none=kind == "grid"),
        int(positive_int(cfg.stop_after_failures, "stop_after_failures") or 1), cv_folds, Path(cfg.paths.output_dir))


def compose_base(settings: SweepSettings) -> DictConfig:
    """`train` with the sweep's base overrides: the monitor, its direction, the MLflow store and experiment."""
    try:
        base = compose_train(settings.base_overrides)
    except Exception as exc:
        raise UserError(f"overrides {settings.base_overrides}: train does not accept them: "
                        f"{one_line(str(exc))}") from None
    if settings.cv_folds and not str(base.monitor).startswith("val/"):
        raise UserError(f"cv_folds={settings.cv_folds}: trials are scored on held-out folds, so monitor must be a "
                        f"val/ metric (found monitor={base.monitor})")
    return base


def prepare_data(base: DictConfig, settings: SweepSettings, launcher: dict[str, Any] | None) -> None:
    """Synthesize, check and deal folds once, here, before several workers would at the same time."""
    if not (settings.workers > 1 or settings.cv_folds or launcher):
        return
    from masklab.data.open import open_dataset

    dataset = open_dataset(base.data, base.paths.cache_dir, check=bool(base.check_data))
    if settings.cv_folds:
        from masklab.data.folds import ensure_folds
        from masklab.sweep.trial import cv_section

        section = cv_section(settings.cv_folds, int(base.seed))
        ensure_folds(dataset, settings.cv_folds, section["splits"], section["seed"], section["reassign"])


@dataclass
class Joined:
    """This command's place in the study: trials to run, the trials and sweeps before it, the parent run."""

    to_run: int
    note: str
    n_before: int
    sweeps_before: int
    parent_id: str
    created: bool


def join_study(study: Any, settings: SweepSettings, base: DictConfig, storage_shown: str) -> Joined:
    """Under the study's lock (another sweep may join it now, from another shell or machine): check the monitor,
    count this sweep, enqueue the grid's pending points and open (or reopen) the parent MLflow run."""
    from masklab.tracking.runs import git_commit

    monitor, direction = str(base.monitor), direction_of(str(base.monitor_mode))
    parent_params = {"study": settings.study_name, "storage": storage_shown, "monitor": monitor,
                     "direction": direction, "sampler": settings.kind, "cv_folds": settings.cv_folds,
                     **{f"space.{p.name}": p.describe() for p in settings.params}}
    parent_tags = {"masklab.command": "sweep", "masklab.sweep": settings.study_name,
                   "masklab.optuna_storage": storage_shown, "masklab.monitor": monitor,
                   "masklab.git_commit": git_commit(Path.cwd()) or "unknown"}
    known_monitor = study.user_attrs.get(ATTR_MONITOR)
    if known_monitor and known_monitor != monitor:
        raise UserError(f"study '{settings.study_name}' ranks trials by {known_monitor}, not {monitor}; "
                        "use another study name (study=...)")
    if not known_monitor:
        study.set_user_attr(ATTR_MONITOR, monitor)
    n_before = len(study.get_trials(deepcopy=False))
    # Each sweep command on the study gets its own sampler seed, also two started at the same moment (same
    # n_before): else their samplers would propose the same points.
    sweeps_before = int(study.user_attrs.get(ATTR_SWEEPS, 0))
    study.set_user_attr(ATTR_SWEEPS, sweeps_before + 1)
    if settings.kind == "grid":
        to_run, note = enqueue_grid(study, settings.params, settings.n_trials)
    else:
        to_run, note = int(settings.n_trials or 0), f"{settings.kind} sampler"
    parent_id, created = open_parent_run(study, settings.study_name, str(base.logger.tracking_uri),
                                         str(base.logger.artifact_root), str(base.logger.experiment_name),
                                         parent_params, parent_tags)
    return Joined(to_run, note, n_before, sweeps_before, parent_id, created)


def announce(settings: SweepSettings, base: DictConfig, joined: Joined, storage_shown: str,
             launcher: dict[str, Any] | None) -> None:
    """Mark the parent run RUNNING with the sweep's config, and say what runs now."""
    from masklab.tracking.runs import RunLog

    monitor, direction = str(base.monitor), direction_of(str(base.monitor_mode))
    parent = RunLog(str(base.logger.tracking_uri), joined.parent_id)
    parent.tags({"masklab.output_dir": str(settings.sweep_dir.resolve()), "masklab.sweep_status": "RUNNING"})
    parent.yaml({"study": settings.study_name, "storage": storage_shown, "monitor": monitor, "direction": direction,
                 "n_trials": joined.to_run, "workers": settings.workers, "base_overrides": settings.base_overrides,
                 "sweep": settings.preset}, "config/sweep.yaml")
    how = f" as {launcher.get('masklab_choice') or 'submitit'} jobs" if launcher else ""
    doing = (f"running {joined.to_run} now with {min(settings.workers, joined.to_run)} worker(s){how}"
             if joined.to_run else "nothing to run: every grid point has a trial (a new point or n_trials adds more)")
    log.info(f"Sweep '{settings.study_name}': {settings.kind} over {'; '.join(p.describe() for p in settings.params)}"
             f"\n  {direction} {monitor}; base overrides: {' '.join(settings.base_overrides) or '(none)'}\n"
             f"  Optuna study in {storage_shown}: {joined.n_before} trial(s) so far ({joined.note}); {doing}\n"
             f"  MLflow parent run {joined.parent_id} ({'new' if joined.created else 'continued'}) in experiment "
             f"'{base.logger.experiment_name}'; trial folders in {settings.sweep_dir / 'trials'}")


def run_spec(cfg: DictConfig, settings: SweepSettings, base: DictConfig, joined: Joined) -> SweepSpec:
    """What every worker (a process here, a submitit job) needs to run this sweep's trials."""
    preset = settings.preset
    return SweepSpec(study=settings.study_name, storage=str(cfg.storage), monitor=str(base.monitor),
                     direction=direction_of(str(base.monitor_mode)), params=[p.to_dict() for p in settings.params],
                     sampler=preset.get("sampler"), pruner=preset.get("pruner"),
                     base_overrides=settings.base_overrides, experiment_name=str(base.logger.experiment_name),
                     tracking_uri=str(base.logger.tracking_uri), sweep_dir=str(settings.sweep_dir),
                     parent_run_id=joined.parent_id, stop_after_failures=settings.stop_after,
                     seed_offset=joined.n_before + 104729 * joined.sweeps_before, n_trials=joined.to_run,
                     cv_folds=settings.cv_folds)


def run_spec_trials(spec: SweepSpec, workers: int, launcher: dict[str, Any] | None, base: DictConfig) -> None:
    """The trials here (one worker), in worker processes, or as submitit jobs; a time-boxed study (a ``deadline``)
    runs until it whatever ``n_trials`` says."""
    if not (spec.n_trials or spec.deadline is not None):
        return
    if launcher:
        run_worker_jobs(spec, spec.n_trials, workers, launcher, base)
    elif workers == 1:
        run_trials(spec)
    else:
        run_workers(spec, spec.n_trials, workers)


def sweep(cfg: DictConfig, launcher: dict[str, Any] | None = None) -> None:
    """Run or resume the preset's study (see the module's docstring). ``launcher``: an unresolved submitit
    launcher preset (``hydra/launcher=submitit_slurm``): the workers run as its jobs instead of local processes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = read_settings(cfg)
    base = compose_base(settings)
    prepare_data(base, settings, launcher)
    storage = open_storage(str(cfg.storage))
    study = open_study(settings.study_name, storage, direction_of(str(base.monitor_mode)),
                       make_sampler(settings.preset.get("sampler")), make_pruner(settings.preset.get("pruner")))
    shown = redact(str(cfg.storage))
    with study_lock(storage, settings.study_name):
        joined = join_study(study, settings, base, shown)
    announce(settings, base, joined, shown, launcher)
    status, interrupted = "FAILED", False
    try:
        run_spec_trials(run_spec(cfg, settings, base, joined), settings.workers, launcher, base)
        status = "FINISHED"
    except KeyboardInterrupt:
        status, interrupted = "KILLED", True
    finally:
        try:
            best = finish_parent(study, str(base.logger.tracking_uri), joined.parent_id, str(base.monitor), status)
        except Exception as exc:  # never hide the sweep's own error
            log.warning("could not record the result on the parent run: %s", one_line(str(exc)))
            best = None
    report(study, settings.study_name, str(base.monitor), best, joined.n_before, cfg,
           "done" if status == "FINISHED" else "stopped")
    if interrupted:
        log.warning("masklab sweep: interrupted; the study keeps its trials: run the same command again to resume")
        raise SystemExit(130)


def report(study, study_name: str, monitor: str, best, n_before: int, cfg: DictConfig, how: str) -> None:
    from collections import Counter

    trials = study.get_trials(deepcopy=False)
    new = Counter(t.state.name.lower() for t in trials[n_before:])
    result(f"Sweep '{study_name}' {how}: {new['complete']} complete, {new['pruned']} pruned, {new['fail']} failed "
           f"this time; {len(trials)} trial(s) in the study", __name__)
    if best is not None:
        overrides = " ".join(best.user_attrs.get("overrides") or [])
        result(f"Best {monitor}: {best.value:.4f} (trial {best.number}): {overrides}", __name__)
        if best.user_attrs.get("mlflow_run_id"):
            result(f"  MLflow run {best.user_attrs['mlflow_run_id']}, folder {best.user_attrs.get('output_dir')}",
                   __name__)
    implicit = (f"sqlite:///{cfg.paths.experiments_dir}/optuna.db", os.environ.get("MASKLAB_SWEEP_STORAGE"))
    storage = "" if str(cfg.storage) in implicit else " storage=<the same storage>"
    log.info("Ranked trials and a plot:  masklab sweep summary study=%s%s", study_name, storage)
