"""`python -m masklab.sweep.worker`: run trials of one study in this process; the SweepSpec (JSON) comes on stdin.

`masklab sweep workers=K` starts K of these; they share the study through its storage (Optuna hands each
trial to one worker) and log their trials to the same MLflow parent run. A configuration mistake ends the
worker with ``masklab sweep: error: <message>`` on stderr and exit status 2; a bug ends it with its
traceback and exit status 1.
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


def main() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    spec = SweepSpec.from_json(sys.stdin.read())
    from masklab.cli import quiet_third_party, run_reporting_errors
    from masklab.console import setup_logging

    setup_logging()  # the level comes from the parent's MASKLAB_LOG_LEVEL
    quiet_third_party()
    try:
        # A user's mistake: one ERROR_PREFIX line, exit 2; a bug: its traceback, exit 1 (the launcher tells them apart).
        run_reporting_errors("sweep", lambda: run_trials(spec))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
