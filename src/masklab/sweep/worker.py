"""`python -m masklab.sweep.worker`: run trials of one study in this process; the SweepSpec (JSON) comes on stdin.

`masklab sweep workers=K` starts K of these; they share the study through its storage (Optuna hands each
trial to one worker) and log their trials to the same MLflow parent run. A configuration mistake ends the
worker with ``masklab sweep: error: <message>`` on stderr and exit status 2; a bug ends it with its
traceback and exit status 1. With ``hydra/launcher=submitit_slurm`` (or ``submitit_local``) the sweep submits
:func:`run_as_job` as K submitit jobs instead, which report the same way through their result.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from masklab.sweep.study import make_pruner, make_sampler, open_storage, open_study
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
    study.optimize(runner, n_trials=spec.n_trials, catch=(TrialFailed,), gc_after_trial=True)


def run_reported(spec: SweepSpec) -> None:
    """Run the trials as a command does: a user's mistake ends with one ERROR_PREFIX line on stderr and exit
    status 2, a bug with its traceback and 1 (a CommandExit, which the launcher tells apart)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from masklab.cli import quiet_third_party, run_reporting_errors
    from masklab.console import setup_logging

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
