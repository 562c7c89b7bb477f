"""`masklab sweep` / `masklab sweep summary`: real Optuna studies of debug=fast trainings, real MLflow SQLite store.

The sweeps run in this process (as the command's function; trials of workers=1 run in-process anyway), so
each debug=fast trial costs ~3 s; only Hydra's own handling of the command line goes through the CLI's main
(also in this process). The workers=2 test starts real worker processes: that is what it tests.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from masklab.errors import UserError
from masklab.overrides import format_override
from masklab.sweep.pruning import OptunaPruningCallback
from masklab.sweep.space import parse_overrides, parse_param
from masklab.sweep.study import open_storage

from conftest import command_in, exits_as_user_error, mlflow_runs


def study_of(project: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{project}/experiments/optuna.db")


def parent_and_children(project: Path, experiment: str = "synthetic"):
    """(parent run, child runs) of the only sweep in ``experiment``; every run is one or the other."""
    _, runs = mlflow_runs(project, experiment)
    parents = [r for r in runs if r.data.tags.get("masklab.command") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    parent = parents[0]
    children = [r for r in runs if r is not parent]
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in children)
    return parent, children


def summary_rows(stdout: str) -> list[list[str]]:
    """The body rows of the summary table: [rank, trial, state, value, overrides, ...]."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]
    return [r for r in rows if r and r[1].isdigit()]


# -- end to end, in this process (the trials of workers=1 run here anyway) ------------------------------------

def run_sweep(project: Path, overrides: list[str], folder: str = "sweep") -> Path:
    """``masklab sweep <overrides>`` without the subprocess: the command on its composed config, with
    ``project/experiments/runs/<folder>`` as the command's run folder (returned)."""
    out = project / "experiments" / "runs" / folder
    command_in(project, "sweep", overrides, out)
    return out


def info_messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("masklab"))


def test_grid_sweep_gives_one_child_run_per_point_under_one_parent(project, seed_store, caplog):
    seed_store(project)
    folder = run_sweep(project, ["sweep=fast_grid"])
    parent, children = parent_and_children(project)
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.001", "0.003"]
    assert {r.data.tags["masklab.trial_state"] for r in children} == {"complete"}
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    best = max(children, key=lambda r: r.data.metrics["val/mIoU"])
    assert parent.data.metrics["best/val/mIoU"] == pytest.approx(best.data.metrics["val/mIoU"])
    assert parent.data.tags["masklab.best_overrides"] == f"optimizer.lr={best.data.params['optimizer.lr']}"
    assert parent.data.tags["masklab.best_run_id"] == best.info.run_id
    # each trial has its own run folder under the sweep's
    assert len(list(folder.glob("trials/*/checkpoints/last.ckpt"))) == 2
    # the grid is done: running the command again adds nothing
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="masklab"):
        run_sweep(project, ["sweep=fast_grid"], "again")
    assert "nothing to run" in info_messages(caplog)
    assert len(study_of(project, "fast_grid").trials) == 2


def test_sweep_of_an_instance_preset_ranks_trials_by_mask_ap(project, seed_store):
    """Sweeps are task-blind: an instance preset's trials report and rank by its monitor, val/mask_AP."""
    seed_store(project)
    run_sweep(project, ["sweep=fast_grid", "overrides=['experiment=bottomup-resnet18_synthetic-64']"])
    parent, children = parent_and_children(project, "bottomup-resnet18_synthetic-64")
    assert len(children) == 2 and all(r.data.tags["masklab.task"] == "instance" for r in children)
    best = max(children, key=lambda r: r.data.metrics["val/mask_AP"])
    assert parent.data.metrics["best/val/mask_AP"] == pytest.approx(best.data.metrics["val/mask_AP"])
    assert study_of(project, "fast_grid").user_attrs["masklab.monitor"] == "val/mask_AP"


def test_cross_validated_sweep_scores_each_trial_by_its_mean_over_held_out_folds(project, seed_store):
    """cv_folds=2: folds dealt once into the manifest; each trial is a cross-validation (a child of the sweep
    with a run per fold under it) whose value is the mean of val/mIoU's metric over the held-out folds."""
    from masklab.data.manifest import read_manifest

    from conftest import mlflow_runs

    seed_store(project)
    run_sweep(project, ["sweep=fast_grid", "cv_folds=2", "n_trials=1"])
    folds = {s.fold for s in read_manifest(project / "data/synthetic") if s.split in ("train", "val")}
    assert folds == {0, 1}
    _, runs = mlflow_runs(project, "synthetic")
    parent = next(r for r in runs if r.data.tags.get("masklab.command") == "sweep")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 1 and trials[0].data.tags["masklab.command"] == "cv"
    study = study_of(project, "fast_grid")
    (trial,) = study.trials
    run = trials[0]
    assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
    assert trial.value == pytest.approx(run.data.metrics["cv/mIoU/mean"])
    assert sorted(r.data.tags["masklab.cv_fold"] for r in runs
                  if r.data.tags.get("mlflow.parentRunId") == run.info.run_id) == ["0", "1"]
    assert parent.data.params["cv_folds"] == "2"


def test_optuna_sweep_summary_and_resume(project, seed_store, capsys, caplog):
    seed_store(project)
    run_sweep(project, ["sweep=fast_tpe"])
    assert (project / "experiments" / "optuna.db").is_file()
    study = study_of(project, "fast_tpe")
    assert len(study.trials) == 3
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert study.direction.name == "MAXIMIZE"  # monitor_mode: max
    parent, children = parent_and_children(project)
    assert len(children) == 3
    assert {r.data.params["model.arch"] for r in children} <= {"Unet", "FPN"}
    assert {r.data.tags["masklab.trial"] for r in children} == {"0", "1", "2"}

    capsys.readouterr()
    summary_dir = project / "experiments" / "runs" / "summary"
    command_in(project, "sweep summary", ["sweep=fast_tpe"], summary_dir)
    printed = capsys.readouterr().out
    rows = summary_rows(printed)
    assert sorted(int(r[1]) for r in rows) == [0, 1, 2]
    complete = [r for r in rows if r[2] == "complete"]
    assert [r[0] for r in complete] == [str(i) for i in range(1, len(complete) + 1)]
    values = [float(r[3]) for r in complete]
    assert values == sorted(values, reverse=True)  # ranked, best first
    assert all("optimizer.lr=" in r[4] and "model=" in r[4] for r in rows)
    png = Path(re.search(r"Plot: (\S+\.png)", printed).group(1))
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.parent == summary_dir  # the command's run folder

    # resume: the same study gets a 4th trial, under the same parent run
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="masklab"):
        run_sweep(project, ["sweep=fast_tpe", "n_trials=1"], "more")
    assert "3 trial(s) so far" in info_messages(caplog)
    study = study_of(project, "fast_tpe")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    parent2, children = parent_and_children(project)
    assert parent2.info.run_id == parent.info.run_id and len(children) == 4


def test_two_workers_run_trials_in_parallel_on_one_study(project, seed_store, capfd):
    seed_store(project)
    folder = run_sweep(project, ["sweep=fast_tpe", "n_trials=2", "workers=2"])
    out = capfd.readouterr().out  # the workers' stdout is the command's
    assert "[worker 1]" in out and "[worker 2]" in out
    worker_logs = list(folder.glob("workers/worker-*.err"))
    assert len(worker_logs) == 2
    for log in worker_logs:
        text = log.read_text()
        assert "locked" not in text and "Traceback" not in text, text[-2000:]
    trials = study_of(project, "fast_tpe").trials
    assert len(trials) == 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    a, b = trials
    assert a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete  # they overlapped
    _, children = parent_and_children(project)
    assert len(children) == 2


def test_unknown_preset_lists_the_presets(project, cli):
    """Hydra's own composition of the command line (a config group option that does not exist): the CLI."""
    res = cli("sweep", "sweep=nope")
    assert res.returncode == 2
    assert "nope" in res.stderr and "fast_grid" in res.stderr and "fast_tpe" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_search_space_type_is_a_one_line_error(project, capsys):
    message = exits_as_user_error(
        "sweep", lambda: run_sweep(project, ["sweep=fast_tpe", "sweep.params.model.type=categorcal"]), capsys)
    assert "sweep.params.model" in message and "categorcal" in message
    assert not (project / "experiments" / "optuna.db").exists()  # nothing written


def test_parameter_that_is_not_a_train_override_stops_at_the_first_trial(project, seed_store, capsys, caplog):
    seed_store(project)
    message = exits_as_user_error(
        "sweep", lambda: run_sweep(project, ["sweep=fast_grid", "+sweep.grid.max_epoch=[1,2]", "study=typo"]), capsys)
    assert "'max_epoch' is not a valid train override" in message
    # what `masklab -q` would show besides the error line: nothing
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("masklab")]
    assert shown == []
    trials = study_of(project, "typo").trials
    assert [t.state.name for t in trials if t.state.name != "WAITING"] == ["FAIL"]  # not all 4 grid points
    parent, children = parent_and_children(project)
    assert parent.info.status == "FAILED" and children == []


# -- units ------------------------------------------------------------------------------------------------------

class FakeTrial:
    def __init__(self, prune: bool):
        self.prune = prune
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.prune


def fake_trainer(value: float, epoch: int, sanity: bool = False):
    import torch

    return SimpleNamespace(sanity_checking=sanity, current_epoch=epoch,
                           callback_metrics={"val/mIoU": torch.tensor(value)}, logger=SimpleNamespace(run_id="run-1"))


def test_pruning_callback_reports_each_validation_and_raises_when_told():
    trial = FakeTrial(prune=False)
    cb = OptunaPruningCallback(trial, "val/mIoU")
    cb.setup(fake_trainer(0.0, 0), None, "fit")
    assert cb.run_id == "run-1"
    cb.on_validation_end(fake_trainer(0.5, 0, sanity=True), None)  # sanity check: not reported
    cb.on_validation_end(fake_trainer(0.25, 0), None)
    cb.on_validation_end(fake_trainer(0.5, 1), None)
    assert trial.reports == [(0.25, 0), (0.5, 1)]

    pruned = FakeTrial(prune=True)
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        OptunaPruningCallback(pruned, "val/mIoU").on_validation_end(fake_trainer(0.1, 2), None)
    assert pruned.reports == [(pytest.approx(0.1), 2)]


def test_search_space_values_round_trip_through_hydra_overrides():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in (0.001, 1e-05, 3, True, None, "fpn", "16-mixed", "a b", "it's", "1", "x:y"):
        parsed = parser.parse_override(format_override("k", value)).value()
        assert parsed == value and type(parsed) is type(value), (value, parsed)
    assert parse_overrides('debug=fast "trainer.max_epochs=3"') == ["debug=fast", "trainer.max_epochs=3"]


@pytest.mark.parametrize("spec, message", [
    ({"type": "flaot", "low": 0, "high": 1}, "unknown type 'flaot'"),
    ({"type": "float", "low": 1}, "needs low and high"),
    ({"type": "float", "low": 1, "high": 0.1}, "must be below"),
    ({"type": "float", "low": 0, "high": 1, "log": True}, "log: true needs low > 0"),
    ({"type": "int", "low": 1.5, "high": 4}, "expected an integer"),
    ({"type": "categorical", "choices": []}, "non-empty list"),
    ({"type": "categorical", "choice": [1]}, "unknown key"),
])
def test_search_space_mistakes_name_the_entry(spec, message):
    with pytest.raises(UserError, match=re.escape(message)) as info:
        parse_param("optimizer.lr", spec, "sweep.params")
    assert "sweep.params.optimizer.lr" in str(info.value)


def test_non_sqlite_storage_takes_the_generic_path_and_hides_the_password():
    # No server listens there (or no driver is installed): either way a one-line UserError, no SQLite assumption.
    with pytest.raises(UserError) as info:
        open_storage("postgresql://sweeper:s3cret@127.0.0.1:9/masklab")
    assert "s3cret" not in str(info.value) and "postgresql://sweeper:***@127.0.0.1:9/masklab" in str(info.value)
