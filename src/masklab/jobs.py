"""masklab commands as submitit jobs: SLURM jobs, or processes on this machine.

Two routes share this module:

- ``masklab train ... hydra/launcher=submitit_slurm -m`` (any Hydra command, a grid or a single run): Hydra's
  sweeper hands the jobs to masklab's launchers (``hydra_plugins.masklab_submitit``), which call
  :func:`launch_jobs` here in the submitting process and :func:`run_job` in each job.
- ``masklab sweep ... hydra/launcher=submitit_slurm``: the sweep's workers become jobs
  (:func:`submit_function`, used by ``masklab.sweep.launch``).

Before submitting: the preset's settings are checked (one line naming the key), a new SQLite MLflow store is
created once (jobs starting together on a fresh store raced its migration), and the jobs get the project root
(``MASKLAB_ROOT``) so their paths and tracking URI resolve as here. After: one result line per job, and a failed
job's one-line error with the job's exit status and its log file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from masklab.errors import EXIT_JOB_LOST, CommandExit, UserError

SUBMITIT_ENV = "SUBMITIT_EXECUTOR"  # set by submitit in every job it starts (slurm or local)
LAUNCHER_PREFIX = "hydra_plugins.masklab_submitit."
# Settings that must be whole numbers >= 1, and those that may also be 0 / null.
POSITIVE = ("nodes", "tasks_per_node", "timeout_min")
COUNTS = ("gpus_per_node", "cpus_per_task", "mem_gb")
FOLLOWS_TRAINER = {"nodes": "trainer.num_nodes", "tasks_per_node": "trainer.devices",
                   "gpus_per_node": "trainer.devices"}


class JobFailed(Exception):
    """Sent back by a job whose command failed: its exit status and its one-line message (picklable)."""

    def __init__(self, code: int, message: str):
        super().__init__(code, message)
        self.code = code
        self.message = message


class JobsFailed(UserError):
    """Jobs of a launch failed: their messages in one line, and the exit status they ended with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def in_job() -> bool:
    """Whether this process runs inside a submitit job."""
    return bool(os.environ.get(SUBMITIT_ENV))


def is_masklab_launcher(launcher: Any) -> bool:
    """Whether a ``hydra.launcher`` config is one of masklab's submitit launchers."""
    target = launcher.get("_target_") if hasattr(launcher, "get") else None
    return str(target or "").startswith(LAUNCHER_PREFIX)


def launcher_kind(launcher: Any) -> str:
    """``slurm`` or ``local``, from a masklab launcher config's ``_target_``."""
    return "slurm" if str(launcher.get("_target_")).endswith("SlurmLauncher") else "local"


def check_launch_mode(words: tuple[str, ...]) -> None:
    """Refuse a submitit launcher in a command Hydra runs here without ``--multirun``: the command would run on
    this machine (a cluster's login node), not as a job. ``masklab sweep`` is the exception: its workers are
    the jobs. Inside a job, nothing to check."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if in_job() or not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if words == ("sweep",) or hydra.mode == RunMode.MULTIRUN or not is_masklab_launcher(hydra.launcher):
        return
    name = hydra.runtime.choices.get("hydra/launcher")
    raise UserError(f"hydra/launcher={name} submits jobs only with --multirun (-m); add -m (a single run is a "
                    f"multirun of one job), or drop hydra/launcher= to run here")


def check_params(kind: str, params: dict[str, Any], config: Any = None) -> dict[str, Any]:
    """The submitit settings of a launcher preset, checked: keys the plugin knows, whole numbers where it needs
    them. Each mistake is a UserError naming ``hydra.launcher.<key>``, the value and what was expected; a count
    that follows the trainer names the trainer's value in ``config`` (the composed command config)."""
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from omegaconf import OmegaConf

    schema = SlurmQueueConf if kind == "slurm" else LocalQueueConf
    known = {f.name for f in fields(schema)} - {"_target_"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise UserError(f"hydra.launcher.{unknown[0]}: not a setting of hydra/launcher=submitit_{kind}; "
                        f"expected one of {sorted(known)}")
    for key in (*POSITIVE, *COUNTS):
        value = params.get(key)
        if key in COUNTS and value is None:
            continue
        low = 1 if key in POSITIVE else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            expected = "a whole number >= 1" if low else "a whole number >= 0 or null"
            path = FOLLOWS_TRAINER.get(key)
            found = OmegaConf.select(config, path, default=None) if path and config is not None else None
            if found is not None:  # the preset took it from the trainer: name the value the user set
                raise UserError(f"{path}={found}: a job asks the scheduler for a number (hydra.launcher.{key} "
                                f"follows it and got {value!r}); expected {expected}")
            raise UserError(f"hydra.launcher.{key}={value!r}: expected {expected}")
    if kind == "local" and params["nodes"] != 1:
        raise UserError(f"hydra.launcher.nodes={params['nodes']}: submitit_local runs on this machine only; "
                        "expected 1 (use submitit_slurm for several nodes)")
    return params


@contextmanager
def job_environment(n_jobs: int, kind: str) -> Iterator[None]:
    """Environment variables the jobs inherit while they are submitted (sbatch and submitit's local processes
    copy this process's environment): the project root, so a job resolves ``paths.*`` and the tracking URI as
    this command does wherever it starts; for local jobs, which all run at once, a share of the CPU cores each."""
    from masklab.project import project_root

    env = {"MASKLAB_ROOT": str(project_root())}
    if kind == "local" and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, n_jobs)))
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare_tracking_store(config: Any) -> None:
    """Create and migrate a new SQLite MLflow store here, once, before jobs open it at the same time."""
    from omegaconf import OmegaConf

    uri = OmegaConf.select(config, "logger.tracking_uri", default=None)
    if uri and str(uri).startswith("sqlite:"):
        from masklab.tracking.runs import client

        client(str(uri)).search_experiments(max_results=1)


def launch_jobs(launcher: Any, submit: Callable[[Sequence[Sequence[str]], int], Any],
                job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
    """In the submitting process: check the settings, prepare the store, ``submit`` the jobs and wait for them,
    then print a line per job. A failure ends the command with one line and the jobs' exit status."""
    from masklab.console import setup_logging
    from masklab.errors import run_reporting_errors

    setup_logging()
    label = str(launcher.config.hydra.job.name).replace("_", " ")

    def run() -> Any:
        kind = launcher._EXECUTOR  # the plugin's name for its executor: slurm or local
        launcher.params = check_params(kind, dict(launcher.params), launcher.config)
        prepare_tracking_store(launcher.config)
        with job_environment(len(job_overrides), kind):
            try:
                results = submit(job_overrides, initial_job_idx)
            except Exception as exc:
                raise job_died(exc) from None
        report(results, initial_job_idx)
        return results

    return run_reporting_errors(label, run)


def job_died(exc: Exception) -> Exception:
    """submitit's error for a job that ended without sending a result back (killed, out of memory, out of
    time) as one line with its log; any other error as it is."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    if not isinstance(exc, FailedJobError | UncompletedJobError):
        return exc
    first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    logs = sorted({m for m in str(exc).split() if m.endswith(("_result.pkl", ".err", ".out"))})
    where = f"; its files: {Path(logs[0]).parent}" if logs else ""
    return JobsFailed(f"a job ended without a result: {first.strip()}{where}", EXIT_JOB_LOST)


def report(results: Sequence[Any], initial_job_idx: int) -> None:
    """One result line per finished job; failed jobs raise :class:`JobsFailed` (all their messages, one line)."""
    from hydra.core.utils import JobStatus

    from masklab.console import result

    failures: list[tuple[int, str, int, str]] = []
    for n, ret in enumerate(results, initial_job_idx):
        overrides = " ".join(ret.overrides or []) or "(no overrides)"
        log = getattr(ret, "masklab_log", "")
        if ret.status == JobStatus.COMPLETED:
            folder = ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg is not None else "?"
            value = ret.return_value
            shown = f"{value:.4f}" if isinstance(value, float) else ("done" if value is None else str(value))
            result(f"job #{n} ({overrides}): {shown}; run folder {folder}; log {log}", __name__)
            continue
        error = ret._return_value
        if isinstance(error, JobFailed):
            failures.append((n, error.message, error.code, log))
        else:
            failures.append((n, f"internal error: {type(error).__name__}: {error}", 1, log))
    if not failures:
        return
    messages = {message for _, message, _, _ in failures}
    codes = {code for _, _, code, _ in failures}
    jobs = ", ".join(f"#{n}" for n, _, _, _ in failures)
    if len(messages) == 1:
        text = f"{failures[0][1]} (job {jobs} of {len(results)}; log {failures[0][3]})"
    else:
        text = "; ".join(f"job #{n}: {message} (log {log})" for n, message, _, log in failures)
    raise JobsFailed(text, codes.pop() if len(codes) == 1 else 1)


def run_job(call: Callable[..., Any], sweep_overrides: Sequence[str], *args: Any, **kwargs: Any) -> Any:
    """In the job: run Hydra's job (``call``). A command that failed raised a CommandExit, a SystemExit,
    which would end the job without a result for submitit to send back: it becomes a failed JobReturn that
    carries its message and exit status. The job's log file travels with the result either way."""
    import submitit
    from hydra.core.utils import JobReturn, JobStatus

    import masklab.config  # noqa: F401  (masklab's ${masklab.*} resolvers, before Hydra composes the job's config)

    try:
        ret = call(sweep_overrides, *args, **kwargs)
    except SystemExit as exc:
        # CommandExit lives in masklab.errors, which the job imports by name even when the submitting process
        # pickled cli's functions by value (`python -m masklab.cli`): its class is the one imported here.
        message = exc.message if isinstance(exc, CommandExit) else f"exited with status {exc.code}"
        code = exc.code if isinstance(exc.code, int) else 1
        ret = JobReturn(overrides=list(sweep_overrides), status=JobStatus.FAILED,
                        _return_value=JobFailed(code, message))
    ret.masklab_log = str(submitit.JobEnvironment().paths.stderr)
    return ret


def make_executor(kind: str, params: dict[str, Any]) -> Any:
    """A submitit executor with a launcher preset's checked settings (``submitit_folder`` included), split as
    the plugin splits them: shared settings by name, the executor's own with its prefix (``slurm_partition``)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(params)
    folder = params.pop("submitit_folder")
    shared = {f.name for f in fields(BaseQueueConf)}
    init = {f"{kind}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind, **init)
    executor.update_parameters(**{k if k in shared else f"{kind}_{k}": v for k, v in params.items()})
    return executor


def submit_function(kind: str, params: dict[str, Any], function: Callable[..., Any],
                    calls: Sequence[tuple[Any, ...]], config: Any = None) -> list[Any]:
    """Submit ``function(*args)`` for each of ``calls`` as a submitit job with a launcher preset's resolved
    settings (:func:`resolve_launcher`; checked as for Hydra's launches); returns the submitit jobs. What
    `masklab sweep` runs its workers with."""
    executor = make_executor(kind, check_params(kind, {k: v for k, v in params.items() if k != "_target_"}, config))
    with job_environment(len(calls), kind):
        return [executor.submit(function, *args) for args in calls]


def launcher_for_workers() -> dict[str, Any] | None:
    """This command's ``hydra/launcher`` preset, unresolved, when it is one of masklab's submitit launchers and
    this process is not a job itself: `masklab sweep` then runs its workers as such jobs. Else None."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if in_job() or not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    if not is_masklab_launcher(launcher):
        return None
    raw = OmegaConf.to_container(launcher, resolve=False)
    raw["masklab_choice"] = HydraConfig.get().runtime.choices.get("hydra/launcher")
    return raw


def resolve_launcher(raw: dict[str, Any], config: Any, folder: Path, job_name: str) -> tuple[str, str, dict[str, Any]]:
    """(kind, preset name, settings) of an unresolved launcher preset, resolved against ``config`` (a composed
    train config, whose trainer the counts follow), the jobs' files going to ``folder``."""
    from omegaconf import OmegaConf

    raw = dict(raw)
    choice = str(raw.pop("masklab_choice", None) or f"submitit_{launcher_kind(raw)}")
    context = OmegaConf.create({"trainer": OmegaConf.to_container(config.trainer, resolve=False),
                                "hydra": {"sweep": {"dir": str(folder)}, "job": {"name": job_name},
                                          "launcher": raw}})
    params = OmegaConf.to_container(context.hydra.launcher, resolve=True)
    params["submitit_folder"] = str(folder / "%j")
    return launcher_kind(raw), choice, params
