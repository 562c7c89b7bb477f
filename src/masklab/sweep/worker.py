"""`python -m masklab.sweep.worker`: run trials of one study in this process; the SweepSpec (JSON) comes on stdin.

`masklab sweep workers=K` starts K of these; they share the study through its storage (Optuna hands each
trial to one worker) and log their trials to the same MLflow parent run. A configuration mistake ends the
worker with ``masklab sweep: error: <message>`` on stderr and exit status 2; a bug ends it with its
traceback and exit status 70. With ``hydra/launcher=submitit_slurm`` (or ``submitit_local``) the sweep submits
:func:`run_as_job` as K submitit jobs instead, which report the same way through their result.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from masklab.sweep.study import make_pruner, make_sampler, open_storage, open_study, sampler_kind, study_lock
from masklab.sweep.trial import SweepSpec, TrialFailed, TrialRunner

ERROR_PREFIX = "masklab sweep: error: "


def run_trials(spec: SweepSpec, out: TextIO | None = None) -> None:
    """Run ``spec.n_trials`` trials of the study here (None: until the study stops)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials report themselves in one line each
    storage = open_storage(spec.storage)
    study = open_study(spec.study, storage, sampler=make_sampler(spec.sampler, spec.seed_offset + 7919 * spec.worker),
                       pruner=make_pruner(spec.pruner))
    runner = TrialRunner(spec, out)
    if sampler_kind(spec.sampler)[0] == "grid":
        run_grid_trials(study, storage, runner, spec.n_trials)
    elif spec.deadline is not None:
        run_timed_trials(study, runner, spec)
    else:
        study.optimize(runner, n_trials=spec.n_trials, catch=(TrialFailed,), gc_after_trial=True)


def run_timed_trials(study, runner: TrialRunner, spec: SweepSpec) -> None:
    """Trials of ``spec.trial_time`` seconds each while a whole one still fits before ``spec.deadline`` (and fewer
    than ``spec.n_trials``, when set, ran here); a line after each: trials so far, the best, the time left."""
    import time

    ran = 0
    while (spec.n_trials is None or ran < spec.n_trials) and time.time() + (spec.trial_time or 0) <= spec.deadline:
        study.optimize(runner, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
        ran += 1
        runner.say(progress_line(study, spec.monitor, spec.deadline - time.time()))


def progress_line(study, monitor: str, left_s: float) -> str:
    """``5 trials (3 complete, 2 pruned); best val/mIoU 0.6120 (trial 2); 14 min 20 s of search left``."""
    from collections import Counter

    from optuna.trial import TrialState

    from masklab.console import duration

    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials if t.state != TrialState.RUNNING)
    done = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = (f"best {monitor} {study.best_value:.4f} (trial {study.best_trial.number})" if complete
            else "no trial complete yet")
    return f"{sum(counts.values())} trials ({done}); {best}; {duration(max(left_s, 0.0))} of search left"


def take_grid_point(study, storage):
    """The next enqueued grid point as a started trial, or None when none is left.

    A grid's study holds its points as waiting trials. ``study.optimize`` would sample a new point (outside the
    grid) once they are gone, and another sweep on the same study (another shell or machine) may take the last one
    between a check and a take: so both are done under the study's lock.
    """
    from optuna.trial import TrialState

    with study_lock(storage, study.study_name):
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None
        return study.ask()  # takes a waiting trial (Optuna pops it atomically)


def run_grid_trials(study, storage, runner: TrialRunner, n_trials: int | None) -> None:
    """Run waiting grid points until none is left (or ``n_trials`` ran), with what ``study.optimize`` gives a
    trial: a heartbeat (a killed worker's trial is failed by the next sweep and runs again), the pruned and failed
    states, and a failed state for a trial that an error or Ctrl-C stops before it propagates."""
    import gc

    import optuna
    from optuna.trial import TrialState

    ran = 0
    while n_trials is None or ran < n_trials:
        trial = take_grid_point(study, storage)
        if trial is None:
            return
        ran += 1
        with heartbeat(storage, trial._trial_id):
            try:
                value = runner(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except TrialFailed:
                study.tell(trial, state=TrialState.FAIL)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                study.tell(trial, value)
        gc.collect()


@contextmanager
def heartbeat(storage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat in the storage every interval while the block runs (what Optuna's optimize
    does for each trial; ``fail_stale_trials`` fails trials whose heartbeat stopped)."""
    import threading

    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stopped = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stopped.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


def run_reported(spec: SweepSpec) -> None:
    """Run the trials as a command does: a user's mistake ends with one ERROR_PREFIX line on stderr and exit
    status 2, a bug with its traceback and 1 (a CommandExit, which the launcher tells apart)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from masklab.console import quiet_third_party, setup_logging
    from masklab.errors import run_reporting_errors

    setup_logging()  # the level comes from the parent's MASKLAB_LOG_LEVEL
    quiet_third_party()
    run_reporting_errors("sweep", lambda: run_trials(spec))


def main() -> None:
    spec = SweepSpec.from_json(sys.stdin.read())
    try:
        run_reported(spec)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def run_as_job(spec_json: str) -> tuple[int, str]:
    """A worker submitted as a submitit job (`masklab sweep ... hydra/launcher=submitit_slurm`): (0, "") when its
    trials ran; else its exit status and one-line message (2: a mistake; 1: a bug, its traceback in the job's
    log). Returned, not raised: a SystemExit would end the job without a result to send back."""
    try:
        run_reported(SweepSpec.from_json(spec_json))
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 1), str(getattr(exc, "message", "") or "")
    return 0, ""


if __name__ == "__main__":
    main()
