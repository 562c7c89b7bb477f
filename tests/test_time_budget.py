"""A wall-clock budget (``trainer.max_time``): the schedule anneals within it and the run ends at an epoch's end."""

from __future__ import annotations

import math
import time

import pytest
import torch

from masklab.errors import UserError
from masklab.training.schedules import ProgressSchedule
from masklab.training.trainer import parse_duration

from conftest import FAST, fit_in, mlflow_runs


def rates(schedule: torch.optim.lr_scheduler.LRScheduler, epochs: int) -> list[float]:
    """The learning rate of each of ``epochs`` epochs, stepping ``schedule`` once per epoch."""
    out = []
    for _ in range(epochs):
        out.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.optimizer.step()
        schedule.step()
    return out


def optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_progress_schedule_is_torchs_cosine_annealing():
    ours = rates(ProgressSchedule(optimizer(), horizon=12), 12)
    theirs = rates(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer(), T_max=12), 12)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    assert ours[0] == 0.01 and ours[-1] < 0.01 * 0.02


def test_one_cycle_warms_up_then_anneals_and_a_new_horizon_bends_the_rest():
    schedule = ProgressSchedule(optimizer(), horizon=10, warmup=0.3, start_factor=0.04, end_factor=4e-6)
    first = rates(schedule, 4)
    assert first[0] == pytest.approx(0.01 * 0.04)
    assert first[0] < first[1] < first[2] < first[3] == pytest.approx(0.01)  # the peak at 30 % of 10 epochs
    schedule.set_horizon(6)  # the budget says 6 epochs in all: from the next step on, epoch 5 of 6 is near the end
    assert schedule.state_dict()["horizon"] == 6  # a resumed run keeps the length (Lightning saves this state)
    current, last = rates(schedule, 2)
    assert current == pytest.approx(0.01 * (4e-6 + (1 - 4e-6) * 0.5 * (1 + math.cos(math.pi * 0.1 / 0.7))))
    progress = (5 / 6 - 0.3) / 0.7
    assert last == pytest.approx(0.01 * (4e-6 + (1 - 4e-6) * 0.5 * (1 + math.cos(math.pi * progress))))


def test_schedule_without_a_horizon_holds_its_start_and_bad_options_are_user_errors():
    assert rates(ProgressSchedule(optimizer(), horizon=None, warmup=0.2, start_factor=0.1), 3) == \
        pytest.approx([0.001] * 3)
    for kwargs, word in (({"shape": "step"}, "scheduler.shape='step'"), ({"warmup": 1.0}, "scheduler.warmup=1.0"),
                         ({"horizon": 0}, "scheduler.horizon=0")):
        with pytest.raises(UserError, match=word):
            ProgressSchedule(optimizer(), **{"horizon": 5, **kwargs})


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h30m", 5400), ("45s", 45), ("00:01:30:00", 5400),
                                           (90, 90), ("2.5min", 150), ({"minutes": 2}, 120)])
def test_durations(text, seconds):
    assert parse_duration(text, "trainer.max_time") == seconds


@pytest.mark.parametrize("bad", ["soon", "0s", -5, "1:30", True])
def test_bad_durations_name_the_key_and_the_forms(bad):
    with pytest.raises(UserError, match=r"trainer.max_time=.*expected a positive duration such as 20m"):
        parse_duration(bad, "trainer.max_time")


def test_a_time_budget_ends_on_an_epoch_with_the_rate_annealed(project):
    """The issue's case: max_epochs=1000 as a mere cap and a budget. Without the budget's schedule the cosine over
    1000 epochs would leave the rate at its start; with it, the last epoch trains near the end of the cosine, the
    run stops at an epoch's end (every epoch validated) and within the budget."""
    budget = 12.0
    started = time.monotonic()
    result = fit_in(project, [*FAST, "trainer.max_epochs=1000", f"trainer.max_time={budget:g}s",
                              "evaluate_after=false"])
    took = time.monotonic() - started
    client, runs = mlflow_runs(project, "synthetic")
    rates_logged = [m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, "lr-AdamW"),
                                            key=lambda m: m.step)]
    validations = client.get_metric_history(runs[0].info.run_id, "val/mIoU")
    assert 3 <= result.epochs < 1000
    assert len(validations) == len(rates_logged) == result.epochs  # stopped at an epoch's end, not mid-epoch
    assert rates_logged[0] == pytest.approx(0.002)
    assert rates_logged[-1] < 0.3 * 0.002, rates_logged  # annealed (cosine over 1000 epochs: 0.99998 x)
    assert all(b <= a + 1e-12 for a, b in zip(rates_logged[1:], rates_logged[2:])), rates_logged
    assert took < budget + 30  # the budget counts training and validation; the rest is start-up and MLflow


def test_lr_auto_runs_the_range_test_and_records_its_curve(project):
    """optimizer.lr=auto: the suggested rate is the one trained with (the run's param and config), the curve is an
    artifact, and the model starts training from the same initial weights as with a fixed rate."""
    import csv

    result = fit_in(project, [*FAST, "optimizer.lr=auto", "lr_finder.steps=12", "evaluate_after=false"])
    client, runs = mlflow_runs(project, "synthetic")
    run = runs[0]
    lr = float(run.data.params["optimizer.lr"])
    assert 1e-6 <= lr <= 1.0 and run.data.tags["masklab.lr_finder"] == "suggestion"
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "lr_find")) == \
        ["lr_find/lr_find.csv", "lr_find/lr_find.png"]
    rows = list(csv.DictReader(open(result.output_dir / "lr_find" / "lr_find.csv")))
    assert 5 <= len(rows) <= 12 and float(rows[0]["lr"]) < float(rows[-1]["lr"])
    rates = client.get_metric_history(run.info.run_id, "lr-AdamW")
    assert min(rates, key=lambda m: m.step).value == pytest.approx(lr)


def test_the_range_test_leaves_the_initial_weights_as_they_were(project):
    from masklab.config import compose
    from masklab.data.open import open_dataset
    from masklab.tasks import task_for
    from masklab.workflows.fit_steps import build_parts, with_found_learning_rate

    cfg = compose("train", [*FAST, "optimizer.lr=auto", "lr_finder.steps=10"])
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=True)
    task = task_for(cfg)
    parts = build_parts(cfg, task, dataset)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    found_cfg, found = with_found_learning_rate(cfg, task, parts, dataset)
    after = parts.model.state_dict()
    assert found is not None and found_cfg.optimizer.lr == float(f"{found.suggestion:.3g}")
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert with_found_learning_rate(compose("train", FAST), task, parts, dataset) == (compose("train", FAST), None)


def test_ema_weights_are_what_validation_scored_and_what_the_best_checkpoint_holds(project, seed_store):
    """callbacks=ema: the best checkpoint (weights only), evaluated at the model's resolution, scores exactly the
    val/mIoU validation logged for it: the file holds the averaged weights that were scored (with Lightning's own
    EMAWeightAveraging it would hold the current weights). last.ckpt keeps both to resume."""
    seed_store(project)
    done = fit_in(project, [*FAST, "callbacks=ema", "trainer.max_epochs=3", "trainer.limit_val_batches=1.0",
                            "evaluation.resolution=model", "evaluation.boundary=false"])
    scored = done.evaluations["val"].metrics["eval_model_res/val/mIoU"]
    assert scored == pytest.approx(done.best_value, abs=1e-6), (scored, done.best_value)
    last = torch.load(done.output_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert "current_model_state" in last and "averaging_state" in last
    differs = [k for k, v in last["state_dict"].items() if v.is_floating_point()
               and not torch.equal(v, last["current_model_state"][k])]
    assert differs  # the average is not the current weights
