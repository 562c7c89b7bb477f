"""One Optuna study on PostgreSQL worked on by two `masklab sweep` processes started separately, as two machines
would: each in its own copy of the project, both logging to one MLflow server (tests/services.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import pytest

from conftest import MASKLAB, stop
from services import postgres, s3_server, start_tracking_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.team

# A 4-point grid of tiny trainings, in the project's own conf/ (a team's sweep preset lives with its project).
GRID_PRESET = """\
name: team_grid
sampler: grid
grid:
  optimizer.lr: [0.001, 0.002, 0.003, 0.004]
overrides: [debug=fast, evaluate_after=false, trainer.max_epochs=1]
"""
TPE_PRESET = """\
name: team_tpe
sampler: {type: tpe, seed: 0}
n_trials: 2
params:
  optimizer.lr: {type: float, low: 0.0001, high: 0.01, log: true}
overrides: [debug=fast, evaluate_after=false, trainer.max_epochs=1]
"""


@pytest.fixture(scope="module")
def tracking(postgres, s3_server, tmp_path_factory):  # noqa: F811
    server, proc = start_tracking_server(postgres, s3_server, tmp_path_factory.mktemp("mlflow"), "sweeps")
    try:
        yield server
    finally:
        stop(proc)


def machines(root, n: int = 2) -> list:
    """``n`` copies of one project (what each machine checked out of git), with the team's sweep presets."""
    first = root / "machine-1"
    (first / "conf" / "sweep").mkdir(parents=True)
    (first / "conf" / "sweep" / "team_grid.yaml").write_text(GRID_PRESET)
    (first / "conf" / "sweep" / "team_tpe.yaml").write_text(TPE_PRESET)
    copies = [first]
    for i in range(2, n + 1):
        copies.append(shutil.copytree(first, root / f"machine-{i}"))
    return copies


def start_sweeps(folders, args: list[str], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """``masklab sweep <args>`` in each folder at once (one core each); waits for all."""
    full = {**os.environ, **env, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore",
            "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*MASKLAB, "sweep", *args], cwd=f, env=full, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for f in folders]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=400)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def study_trials(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def sweep_twice(postgres, tracking, root, preset: str, study: str) -> list:  # noqa: F811
    """Two `masklab sweep sweep=<preset> study=<study>` at once on a new PostgreSQL database; both must succeed.
    Returns the study's trials."""
    url = postgres.create_database(f"optuna_{study}")
    env = {"MASKLAB_SWEEP_STORAGE": url, "MLFLOW_TRACKING_URI": tracking.url}
    for res in start_sweeps(machines(root), [f"sweep={preset}", f"study={study}"], env):
        assert res.returncode == 0, res.stderr[-3000:]
    return study_trials(url, study)


def test_two_machines_share_one_grid_study_on_postgres(postgres, tracking, tmp_path):  # noqa: F811
    """Two sweeps of one 4-point grid on one study: every point runs exactly once, none is lost or run twice;
    both sweeps share one MLflow parent run with one child per point."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    trials = sweep_twice(postgres, tracking, tmp_path, "team_grid", "shared")
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 4}, [(t.number, t.state) for t in trials]
    assert sorted(t.params["optimizer.lr"] for t in trials) == [0.001, 0.002, 0.003, 0.004]
    client = MlflowClient(tracking.url)
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials]
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1  # both sweeps under one parent run
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.001", "0.002", "0.003", "0.004"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_second_shell_joins_a_running_tpe_study(postgres, tracking, tmp_path):  # noqa: F811
    """Two TPE sweeps of 2 trials each on one study: 4 distinct trials, all complete."""
    from optuna.trial import TrialState

    trials = sweep_twice(postgres, tracking, tmp_path, "team_tpe", "joined")
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 4}
    assert len({t.params["optimizer.lr"] for t in trials}) == 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
