"""`masklab tune`: a time-boxed Optuna study on the sweep machinery, the best recipe retrained and written as a
preset; its budget kept across an interruption; its mistakes refused before anything trains.

Real Optuna studies (SQLite), real MLflow store, real debug=fast trainings in this process (the command's function
on its composed config, as test_sweep.py does)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from conftest import command_in, exits_as_user_error, mlflow_runs

# Seconds, not minutes: trials of 5 s on the tiny debug=fast data, the quick space, min_trial lowered to match.
TUNE = ["data=synthetic", "trials=2", "min_trial=5s", "space=quick", "overrides=['debug=fast','model=unet_tiny']"]


def run_tune(project: Path, overrides: list[str], folder: str = "tune") -> Path:
    out = project / "experiments" / "runs" / folder
    command_in(project, "tune", overrides, out)
    return out


def study_of(project: Path, name: str = "tune-synthetic") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{project}/experiments/optuna.db")


def trial_seconds(study: optuna.Study) -> float:
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials
               if t.datetime_complete is not None)


def test_tune_searches_within_its_budget_retrains_the_best_and_writes_a_preset(project, seed_store):
    from masklab.config import compose

    seed_store(project)
    started = time.monotonic()
    run_tune(project, [*TUNE, "time=24s"])
    took = time.monotonic() - started
    study = study_of(project)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                       optuna.trial.TrialState.PRUNED)]
    assert finished and trial_seconds(study) <= 0.5 * 24 + 5  # the search kept to its share (+ one trial's slack)
    assert took < 24 + 25  # the whole budget, plus start-up, checks and the final evaluation
    _, runs = mlflow_runs(project, "synthetic")
    parent = next(r for r in runs if r.data.tags.get("masklab.command") == "tune")
    final = next(r for r in runs if r.data.tags.get("masklab.tune_final") == "true")
    trials = [r for r in runs if r.data.tags.get("masklab.trial") is not None]
    assert final.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    # Trials are chosen on val only; the final model alone is evaluated (eval/val here: synthetic has no test).
    assert not any(k.startswith("eval/") for r in trials for k in r.data.metrics)
    assert "eval/val/mIoU" in final.data.metrics
    assert parent.data.tags["masklab.best_trial"] == final.data.tags["masklab.tune_best_trial"]
    # The preset trains the best trial's recipe again, for the epochs the final training ran.
    best = study.best_trial
    preset = project / "conf" / "experiment" / "tuned-synthetic.yaml"
    cfg = compose("train", ["experiment=tuned-synthetic", "debug=fast"])
    assert "Tuned with debug=fast too, which a preset cannot set" in preset.read_text()
    assert cfg.optimizer.lr == pytest.approx(best.params["optimizer.lr"])
    assert cfg.loss.class_weights == ("auto" if best.params["loss"] == "ce_dice_balanced" else None)
    assert cfg.scheduler.get("warmup", 0.0) == (0.3 if best.params["scheduler"] == "one_cycle" else 0.0)
    assert cfg.model.arch == "Unet" and cfg.data.image_size == 32 and cfg.trainer.max_epochs >= 1
    assert cfg.trainer.max_time is None and cfg.experiment_name == "tuned-synthetic"
    assert f"trial {best.number}" in preset.read_text()
    # The same command again: the study is finished; nothing trains, the preset is kept.
    before = preset.read_text()
    run_tune(project, [*TUNE, "time=24s"], "again")
    assert len(study_of(project).trials) == len(study.trials) and preset.read_text() == before


def test_an_interrupted_tune_resumes_within_the_same_budget(project, seed_store, monkeypatch):
    """Ctrl-C during the final training: the study keeps the trials and the time they took; the same command again
    searches only for what is left of the search's share (nothing, or one more trial when the first run's trials
    left a whole slot unused) and retrains for what is left of the same budget."""
    import masklab.sweep.tune as tune_module

    real_retrain = tune_module.retrain
    given: list[float] = []

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    seed_store(project)
    monkeypatch.setattr(tune_module, "retrain", interrupted)
    with pytest.raises(SystemExit) as stop:
        run_tune(project, [*TUNE, "time=24s"])
    assert stop.value.code == 130
    first = study_of(project)
    assert first.trials and not first.user_attrs.get("masklab.tune_final_run_id")

    def recorded(plan, study, best, base, parent_id, seconds):
        given.append(seconds)
        return real_retrain(plan, study, best, base, parent_id, seconds)

    monkeypatch.setattr(tune_module, "retrain", recorded)
    started = time.monotonic()
    run_tune(project, [*TUNE, "time=24s"], "resumed")
    took = time.monotonic() - started
    after = study_of(project)
    spent = trial_seconds(after)
    assert spent <= 0.5 * 24 + 6  # both runs' trials together kept to the search's share (+ one slot's slack)
    assert given and given[0] <= 24 - spent + 1  # the final training gets what is left of the same 24 s
    assert took < 24 - trial_seconds(first) + 25
    assert after.user_attrs.get("masklab.tune_final_run_id")
    with pytest.raises(Exception, match="was started with time=24 s, not 30 s"):
        run_tune(project, [*TUNE, "time=30s"], "other")


@pytest.mark.parametrize("overrides, message", [
    (["time=10s"], r"time=10s: too small for one trial: 2 trials in 50% of it get 2 s each \(min_trial=5s"),
    (["time=ages"], "time='ages': expected a positive duration"),
    (["time=24s", "+space.model=[unet,nosuch]"], r"tune.space.model: model=nosuch is not a valid train option"),
    (["time=24s", "+space.seed={type:int,low:5,high:1}"], r"tune.space.seed: low \(5\) must be below high \(1\)"),
    (["time=24s", "search_share=1.0"], "search_share=1.0: expected the share"),
])
def test_tune_mistakes_are_one_line_errors_before_anything_trains(project, capsys, overrides, message):
    import re

    line = exits_as_user_error("tune", lambda: run_tune(project, [*TUNE, *overrides]), capsys)
    assert re.search(message, line), line
    assert not (project / "experiments" / "optuna.db").exists()  # refused before any study or training


def test_a_dataset_without_val_and_an_existing_preset_are_refused_before_training(project, capsys):
    from masklab.config import compose
    from masklab.data.manifest import write_manifest
    from masklab.data.open import open_dataset

    cfg = compose("train", ["data=synthetic", "debug=fast"])
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)  # synthesizes it
    for s in dataset.samples:
        if s.split == "val":
            s.split = "train"
    write_manifest(dataset.root, dataset.samples)
    line = exits_as_user_error("tune", lambda: run_tune(project, [*TUNE, "time=24s"]), capsys)
    assert "data=synthetic: split 'val' has no labeled samples" in line, line
    for s in dataset.samples[:3]:
        s.split = "val"
    write_manifest(dataset.root, dataset.samples)
    (project / "conf" / "experiment").mkdir(parents=True)
    (project / "conf" / "experiment" / "mine.yaml").write_text("# a user's preset\n")
    line = exits_as_user_error("tune", lambda: run_tune(project, [*TUNE, "time=24s", "preset=mine"]), capsys)
    assert "preset=mine:" in line and "exists; choose another preset= or pass overwrite=true" in line, line
    assert (project / "conf" / "experiment" / "mine.yaml").read_text() == "# a user's preset\n"


def test_time_searched_counts_side_by_side_trials_once():
    """Two workers' trials that overlap cover their union of wall time, not the sum (else workers=2 would leave the
    final training nothing); an unfinished trial counts nothing."""
    from datetime import datetime, timedelta

    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial, TrialState

    from masklab.sweep.tune import spent_searching

    t0 = datetime(2026, 12, 8, 1, 0, 0)
    study = optuna.create_study()
    for number, (start, end, state) in enumerate([(0, 30, TrialState.COMPLETE), (5, 40, TrialState.PRUNED),
                                                  (50, 60, TrialState.FAIL), (55, None, TrialState.RUNNING)]):
        study.add_trial(FrozenTrial(
            number=number, state=state, value=0.5 if state == TrialState.COMPLETE else None, values=None,
            datetime_start=t0 + timedelta(seconds=start),
            datetime_complete=None if end is None else t0 + timedelta(seconds=end),
            params={"x": 0.1}, distributions={"x": FloatDistribution(0, 1)}, user_attrs={}, system_attrs={},
            intermediate_values={0: 0.4} if state == TrialState.PRUNED else {}, trial_id=number))
    assert spent_searching(study) == pytest.approx(40 + 10)
