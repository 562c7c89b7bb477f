"""One trial of a sweep: `train` composed with the trial's overrides (Hydra compose API) and run in this process.

In-process trials pay the imports (torch, Lightning, MLflow) once per process instead of once per trial;
parallelism comes from several worker processes (``masklab.sweep.worker``), each running trials like this.
Each trial writes its own run folder ``<sweep folder>/trials/<number>/`` (config, checkpoints, train.log)
and its own MLflow run, a child of the sweep's parent run.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from masklab.errors import UserError
from masklab.files import Retrying
from masklab.overrides import format_override
from masklab.sweep.space import Param, one_line


@dataclass
class SweepSpec:
    """Everything a process needs to run trials of one sweep (sent to workers as JSON)."""

    study: str
    storage: str
    monitor: str
    direction: str
    params: list[dict[str, Any]]
    sampler: Any
    pruner: Any
    base_overrides: list[str]
    experiment_name: str
    tracking_uri: str
    sweep_dir: str
    parent_run_id: str | None = None
    stop_after_failures: int = 3
    seed_offset: int = 0
    worker: int = 0
    n_trials: int | None = None
    cv_folds: int = 0
    # A time-boxed study (`masklab tune`): no trial starts after ``deadline`` (seconds since the epoch) minus
    # ``trial_time`` (each trial's own budget, seconds); ``report_step``: the pruning step, "epoch" or "seconds" of
    # training (trials of one time budget with different epoch lengths are compared at equal time).
    deadline: float | None = None
    trial_time: float | None = None
    report_step: str = "epoch"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SweepSpec:
        return cls(**json.loads(text))


def cv_section(folds: int, seed: int) -> dict[str, Any]:
    """The ``cv:`` config of a cross-validated trial: ``folds`` over train + val, no out-of-fold predictions
    (a sweep compares settings; `masklab cv` keeps them for label errors)."""
    return {"folds": int(folds), "splits": ["train", "val"], "seed": int(seed), "reassign": False,
            "out_of_fold": False, "resolution": "model"}


class TrialFailed(Exception):
    """A trial failed at run time (not a configuration mistake): the sweep goes on with the next trial."""


def stop_error_types() -> tuple[type[BaseException], ...]:
    """Errors that every trial would repeat (configuration, dataset): they stop the sweep at once."""
    from hydra.errors import HydraException
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import OmegaConfBaseException

    from masklab.data.errors import DatasetFormatError

    return UserError, DatasetFormatError, HydraException, OmegaConfBaseException, MisconfigurationException


def compose_train(overrides: list[str]):
    """`train`'s config with these overrides (Hydra's compose API; no Hydra runtime needed)."""
    import masklab.tasks  # noqa: F401  (${masklab.task_monitor:...}, which `monitor` uses)
    from masklab.config import compose

    return compose("train", list(overrides), source="sweep overrides")


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextmanager
def captured_output(path: Path) -> Iterator[None]:
    """Send the trial's prints, warnings and console log records to ``path`` (the sweep's console stays short)."""
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    console = sys.stderr
    with open(path, "a", encoding="utf-8", buffering=1) as f:
        swapped = {id(h): h.stream for h in _stream_handlers()}
        for h in _stream_handlers():
            h.stream = f
        try:
            with redirect_stdout(f), redirect_stderr(f):
                yield
        finally:
            # handlers created during the trial (on the redirected sys.stderr) go back to the console too
            for h in _stream_handlers():
                if h.stream is f or id(h) in swapped:
                    h.stream = swapped.get(id(h), console)


def release_memory() -> None:
    """Free what a finished trial left behind before the next one starts in this process."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class TrialRunner:
    """The Optuna objective: sample, compose, train, report; decides which failures stop the sweep."""

    def __init__(self, spec: SweepSpec, out=None):
        import sys

        self.spec = spec
        self.params = [Param.from_dict(p) for p in spec.params]
        self.out = out or sys.stdout
        self.completed = 0
        self.failures_in_a_row = 0
        self.last_run_id: str | None = None

    # -- output ------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        prefix = f"[worker {self.spec.worker}] " if self.spec.worker else ""
        print(prefix + text, file=self.out, flush=True)

    # -- MLflow ------------------------------------------------------------------------------------------
    def _client(self):
        from masklab.tracking.runs import client

        return client(self.spec.tracking_uri)

    def child_runs(self, number: int) -> list:
        """The MLflow runs of trial ``number`` (found by tag: a run may exist even if training never started)."""
        c = self._client()
        exp = c.get_experiment_by_name(self.spec.experiment_name)
        if exp is None:
            return []
        study = self.spec.study.replace("'", "\\'")
        return c.search_runs([exp.experiment_id],  # (the client retries a locked store itself)
                             f"tags.`masklab.sweep` = '{study}' and tags.`masklab.trial` = '{number}'")

    def close_child_runs(self, number: int, state: str, status: str | None, run_id: str | None = None) -> str | None:
        """Tag the trial's run (``run_id``, else every run found by tag) with its state and, unless ``status`` is
        None, end it with ``status``; returns a run id."""
        try:
            c = self._client()
            run_ids = [run_id] if run_id else [r.info.run_id for r in self.child_runs(number)]
            for rid in run_ids:
                c.set_tag(rid, "masklab.trial_state", state)
                if status:
                    c.set_terminated(rid, status)
            return run_ids[-1] if run_ids else None
        except Exception as exc:  # bookkeeping must not hide the trial's own outcome
            self.say(f"warning: could not update the MLflow run of trial {number}: {one_line(str(exc))}")
            return None

    # -- config --------------------------------------------------------------------------------------------
    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The `train` overrides of a trial's parameter values."""
        by_name = {p.name: p for p in self.params}
        return [by_name[k].override(v) if k in by_name else format_override(k, v) for k, v in values.items()]

    def compose(self, number: int, values: dict[str, Any], out_dir: Path):
        param_overrides = self.overrides(values)
        try:
            return compose_train([*self.spec.base_overrides, *param_overrides])
        except Exception as exc:
            raise UserError(self.explain_compose_error(number, param_overrides, exc)) from None

    def explain_compose_error(self, number: int, param_overrides: list[str], exc: Exception) -> str:
        """Name the parameter whose override `train` does not accept (each one is tried alone)."""
        for override in param_overrides:
            try:
                compose_train([*self.spec.base_overrides, override])
            except Exception as alone:
                name = override.split("=", 1)[0]
                return (f"trial {number}: sweep parameter '{name}' is not a valid train override "
                        f"({override}): {one_line(str(alone))}")
        return f"trial {number}: train does not accept the overrides {param_overrides}: {one_line(str(exc))}"

    def task_config(self, cfg, number: int):
        """The config `fit` receives: the sweep's logger, tags and pruning callback."""
        from omegaconf import OmegaConf, open_dict, read_write

        from masklab.sweep.pruning import CALLBACK_KEY, CALLBACK_TARGET

        task = copy.deepcopy(cfg)
        with read_write(task), open_dict(task):
            task.logger.experiment_name = self.spec.experiment_name
            task.logger.tracking_uri = self.spec.tracking_uri
            task.logger.run_name = f"{self.spec.study}-{number:03d}"
            tags = OmegaConf.to_container(task.tags, resolve=True) if task.get("tags") else {}
            tags.update({"masklab.sweep": self.spec.study, "masklab.trial": str(number)})
            if self.spec.parent_run_id:
                tags["mlflow.parentRunId"] = self.spec.parent_run_id
            task.tags = tags
            if task.get("callbacks") is None:
                task.callbacks = {}
            task.callbacks[CALLBACK_KEY] = {"_target_": CALLBACK_TARGET, "monitor": "${monitor}",
                                            "step": self.spec.report_step}
            task.trainer.enable_progress_bar = False  # the output goes to train.log
        return task

    def cross_validated(self, task, out_dir: Path) -> tuple[float, str]:
        """The trial scored by ``cv_folds``-fold cross-validation of ``task``: the mean over folds of the
        monitored metric on each held-out fold (folds as the launcher dealt them into the manifest), and the
        cross-validation's parent run. Not pruned: a fold's curve says little about the next fold's."""
        from omegaconf import open_dict, read_write

        from masklab.sweep.pruning import CALLBACK_KEY
        from masklab.workflows import cross_validate

        with read_write(task), open_dict(task):
            task.callbacks.pop(CALLBACK_KEY, None)
            task.cv = cv_section(self.spec.cv_folds, task.seed)
        done = cross_validate(task, out_dir)
        return done.mean(self.spec.monitor.split("/", 1)[1]), done.parent_run_id

    # -- the objective ---------------------------------------------------------------------------------------
    def failed(self, trial: Any, exc: Exception, shown: str, log_path: Path) -> Exception:
        """Record trial ``trial``'s failure (its child runs FAILED, the reason, a bug's traceback in its log) and
        the error that follows: a UserError that stops the sweep (a mistake in the input, no trial completed yet,
        too many failures in a row), else TrialFailed, which fails this trial only."""
        number = trial.number
        run_id = self.close_child_runs(number, "failed", "FAILED", self.last_run_id)
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        reason = one_line(str(exc)) or type(exc).__name__
        trial.set_user_attr("error", reason[:1000])
        if not isinstance(exc, stop_error_types()):
            reason = f"{type(exc).__name__}: {reason}"
            with open(log_path, "a", encoding="utf-8") as f:
                traceback.print_exception(exc, file=f)
        self.failures_in_a_row += 1
        self.say(f"trial {number} FAILED: {reason}  (log: {log_path})")
        if isinstance(exc, stop_error_types()):
            return UserError(f"trial {number} ({shown}): {reason}")
        if not self.completed:
            return UserError(f"trial {number} ({shown}) failed before any trial completed, so the sweep "
                             f"stops: {reason}; see {log_path}")
        if self.failures_in_a_row >= self.spec.stop_after_failures:
            return UserError(f"{self.failures_in_a_row} trials failed in a row, so the sweep stops; "
                             f"last: trial {number}: {reason}; see {log_path}")
        return TrialFailed(reason)

    def __call__(self, trial) -> float:
        import optuna

        number = trial.number
        start = time.perf_counter()
        self.last_run_id = None
        values = {p.name: p.suggest(trial) for p in self.params}
        param_overrides = self.overrides(values)
        shown = " ".join(param_overrides)
        out_dir = Path(self.spec.sweep_dir) / "trials" / f"{number:03d}"
        log_path = out_dir / "train.log"
        trial.set_user_attr("overrides", param_overrides)
        trial.set_user_attr("base_overrides", list(self.spec.base_overrides))
        trial.set_user_attr("output_dir", str(out_dir.resolve()))
        self.say(f"trial {number} started: {shown}")
        try:
            cfg = self.compose(number, values, out_dir)  # a UserError here stops the sweep
        except UserError as exc:
            trial.set_user_attr("error", str(exc)[:1000])
            raise

        try:
            value, run_id = self.train(trial, cfg, number, out_dir, param_overrides)
        except optuna.TrialPruned as exc:
            run_id = self.close_child_runs(number, "pruned", "KILLED", self.last_run_id)
            if run_id:
                trial.set_user_attr("mlflow_run_id", run_id)
            self.failures_in_a_row = 0
            self.say(f"trial {number} {exc}  {shown}  {time.perf_counter() - start:.1f} s")
            raise
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
            run_id = self.close_child_runs(number, "interrupted", "KILLED", self.last_run_id)
            if run_id:
                trial.set_user_attr("mlflow_run_id", run_id)
            trial.set_user_attr("error", "interrupted")
            self.say(f"trial {number} interrupted: {shown}")
            raise KeyboardInterrupt from None
        except Exception as exc:
            error = self.failed(trial, exc, shown, log_path)
            raise error from (exc if isinstance(error, TrialFailed) else None)

        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
            self.close_child_runs(number, "complete", None, run_id)
        self.completed += 1
        self.failures_in_a_row = 0
        self.say(f"trial {number} complete: {self.spec.monitor}={value:.4f}  {shown}  "
                 f"{time.perf_counter() - start:.1f} s")
        return value

    def train(self, trial, cfg, number: int, out_dir: Path, param_overrides: list[str]) -> tuple[float, str | None]:
        """Run `train`; returns (best value, run id).

        Not retried when a store is locked: each call on one retries that call instead (MLflow: the client and
        Lightning's logger; Optuna: the pruning callback's reports, through ``Retrying(trial)``), and a store
        still locked after that retry stops the sweep (a UserError) rather than training again from the start."""
        import math

        from omegaconf import OmegaConf

        from masklab.sweep.pruning import bind
        from masklab.workflows import fit

        task = self.task_config(cfg, number)
        (out_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(task, out_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create([*self.spec.base_overrides, *param_overrides]),
                       out_dir / ".hydra" / "overrides.yaml")
        self.last_run_id = None
        try:
            if self.spec.cv_folds:
                with captured_output(out_dir / "train.log"):
                    value, self.last_run_id = self.cross_validated(task, out_dir.resolve())
            else:
                # trial.report / should_prune write to and read the Optuna storage: each call retries a lock
                with bind(Retrying(trial)) as binding, captured_output(out_dir / "train.log"):
                    try:
                        value = fit(task, out_dir.resolve()).best_value
                    finally:
                        self.last_run_id = binding.callback.run_id if binding.callback else None
        finally:
            release_memory()
        run_id = self.last_run_id
        if value is None or math.isnan(value):
            raise UserError(f"{self.spec.monitor} was never logged, so trials cannot be compared (check monitor=)")
        return float(value), run_id
