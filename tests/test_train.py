"""Training: one run through the real CLI (its output, MLflow contents, evaluation files), then evaluation,
resume and determinism through the workflows in this process (the CLI's error path included)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import (
    DEBUG_FAST,
    FAST,
    copy_store,
    exits_as_user_error,
    fit_in,
    in_project,
    miou_from_confusion,
    mlflow_runs,
    run_masklab,
)


def run_dir(project: Path) -> Path:
    dirs = sorted((project / "experiments" / "runs").glob("*/*_train"))
    assert dirs, "no run folder written"
    return dirs[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_template):
    """One debug=fast training run through the CLI, shared by the read-only tests below."""
    project = tmp_path_factory.mktemp("trained")
    copy_store(mlflow_template, project)  # a migrated store: the CLI skips MLflow's migrations
    res = run_masklab(["train", *FAST], project)
    assert res.returncode == 0, res.stderr[-4000:]
    return project, res


def test_train_logs_metrics_params_artifacts_and_context(trained):
    project, res = trained
    assert "Best val/mIoU" in res.stdout and "Open the MLflow UI with:  masklab ui" in res.stderr
    client, runs = mlflow_runs(project, "synthetic")
    assert len(runs) == 1
    run = runs[0]
    history = client.get_metric_history(run.info.run_id, "val/mIoU")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 2  # one per epoch
    for key in ("val/mDice", "val/pixel_acc", "val/mIoU_image", "val/iou/background", "train/loss_epoch",
                "eval/val/mIoU", "eval/val/iou/circle"):
        assert key in run.data.metrics, key
    assert run.data.params["model.arch"] == "Unet"
    assert run.data.params["data.image_size"] == "32"
    tags = run.data.tags
    assert tags["masklab.dataset"] == "synthetic"
    assert len(tags["masklab.manifest_sha256"]) == 64
    assert "masklab.git_commit" in tags
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config", "checkpoints", "evaluation"} <= artifacts
    # Only the best model is tracked: its weights and masklab's metadata as safetensors (no optimizer state, no
    # pickle); last.ckpt with the training state stays in the run folder. It is the run folder's best checkpoint.
    assert {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")} == {"checkpoints/best.safetensors"}
    from masklab.evaluation.checkpoint import model_state_dict, read_checkpoint, read_checkpoint_meta

    tracked_meta, tracked = read_checkpoint(next((project / "experiments" / "mlartifacts").rglob("best.safetensors")))
    lightning = read_checkpoint_meta(next((run_dir(project) / "checkpoints").glob("best*.ckpt")))
    assert tracked_meta == lightning["masklab"] and tracked_meta["mlflow_run_id"] == run.info.run_id
    weights = model_state_dict(lightning)
    assert tracked.keys() == weights.keys() and all(torch.equal(tracked[k], v) for k, v in weights.items())
    evaluation = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/val_per_sample.parquet" in evaluation and "evaluation/val_metrics.json" in evaluation
    # Artifacts of the local store live under experiments/, not ./mlruns.
    assert not (project / "mlruns").exists()
    assert list((project / "experiments" / "mlartifacts").rglob("best.safetensors"))


def test_evaluation_files_and_per_sample_table(trained):
    project, _ = trained
    folder = run_dir(project) / "evaluation"
    metrics = json.loads((folder / "val_metrics.json").read_text())
    confusion = pd.read_csv(folder / "val_confusion.csv", index_col=0)
    assert metrics["eval/val/mIoU"] == pytest.approx(miou_from_confusion(confusion), abs=1e-12)
    table = pd.read_parquet(folder / "val_per_sample.parquet")
    assert list(table.columns[:5]) == ["id", "split", "resolution", "mIoU", "mDice"]
    assert "iou/circle" in table.columns and "dice/background" in table.columns
    assert table["id"].is_unique and table["id"].str.startswith("synth_").all()
    assert abs(table["mIoU"].mean() - metrics["eval/val/mIoU_image"]) < 1e-9


def evaluate_in(project: Path, folder: Path, **model):
    """``workflows.evaluate`` of the debug=fast ``evaluate`` config in ``project``, into ``folder``."""
    from masklab import workflows
    from masklab.config import compose

    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        return workflows.evaluate(compose("evaluate", DEBUG_FAST), folder, **model)


def test_evaluate_by_checkpoint_and_by_run_id_agree(trained, tmp_path, capsys):
    project, _ = trained
    best = next((run_dir(project) / "checkpoints").glob("best*.ckpt"))
    client, runs = mlflow_runs(project, "synthetic")
    run_id = runs[0].info.run_id
    by_path = evaluate_in(project, tmp_path / "by_path", ckpt_path=best)
    by_run = evaluate_in(project, tmp_path / "by_run", run_id=run_id)
    assert by_path.run_id == by_run.run_id == run_id  # both logged to the run that trained the checkpoint
    a, b = (json.loads((f / "val_metrics.json").read_text()) for f in (by_path.folder, by_run.folder))
    assert by_path.folder == tmp_path / "by_path" / "evaluation" and a == b
    printed = capsys.readouterr().out
    assert "mean" in printed and "circle" in printed  # the per-class table


def test_evaluate_unknown_run_is_one_line_error(trained, tmp_path, capsys):
    project, _ = trained
    message = exits_as_user_error(
        "evaluate", lambda: evaluate_in(project, tmp_path, run_id="0123456789abcdef"), capsys)
    assert "0123456789abcdef" in message


def test_checkpoint_loads_with_weights_only(trained):
    project, _ = trained
    best = next((run_dir(project) / "checkpoints").glob("best*.ckpt"))
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt["masklab"]["classes"]["classes"][1]["name"] == "circle"
    assert ckpt["masklab"]["model"]["arch"] == "Unet"


def val_history(project: Path) -> list[float]:
    client, runs = mlflow_runs(project, "synthetic")
    (run,) = runs
    return [m.value for m in client.get_metric_history(run.info.run_id, "val/mIoU")]


def test_same_config_twice_gives_same_metrics(trained, tmp_path, mlflow_template):
    """The CLI's run (its own process) and ``workflows.fit`` in this process, after other tests trained here (and,
    under xdist, after other modules ran in this worker): the same training curve, best value and evaluation."""
    cli_project, _ = trained
    copy_store(mlflow_template, tmp_path)
    result = fit_in(tmp_path, FAST)
    assert val_history(tmp_path) == val_history(cli_project)
    assert len(val_history(tmp_path)) == 2 and max(val_history(tmp_path)) == result.best_value
    _, (cli_run,) = mlflow_runs(cli_project, "synthetic")
    _, (api_run,) = mlflow_runs(tmp_path, "synthetic")
    for key in ("val/mIoU", "val/loss", "eval/val/mIoU", "eval/val/mBoundaryIoU"):
        assert cli_run.data.metrics[key] == api_run.data.metrics[key], key


def test_resume_from_last_continues_the_same_run(project, seed_store):
    """last.ckpt is where training stands even when the monitored value stopped improving (with Lightning 2.6's
    save_last it stayed at the best epoch), and a resume from it continues the same run."""
    seed_store(project)
    # monitor=epoch in min mode: epoch 0 is the best, and no later epoch improves on it
    never_better = ["monitor=epoch", "monitor_mode=min", "evaluate_after=false"]
    first = fit_in(project, [*FAST, "trainer.max_epochs=2", *never_better], "first")
    folder = project / "experiments" / "runs" / "first"
    assert first.output_dir == folder and first.best_checkpoint.name == "best-000.ckpt"
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 4)  # the end of epoch 1, not the best epoch 0
    # the best checkpoint is weights only; last.ckpt keeps the optimizer state a resume needs
    assert "optimizer_states" in last
    assert "optimizer_states" not in torch.load(first.best_checkpoint, weights_only=True)
    resumed = fit_in(project, [*FAST, "trainer.max_epochs=3", *never_better, "ckpt_path=last",
                               f"resume_dir={folder}"], "resumed")
    assert resumed.run_id == first.run_id
    client, runs = mlflow_runs(project, "synthetic")
    assert len(runs) == 1  # the resumed training logs into the run it continues
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "val/mIoU")]
    assert steps == [1, 3, 5]  # epochs 0 and 1 once each (not redone from the best epoch), then epoch 2
    last = torch.load(resumed.output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2


def test_resume_without_resume_dir_is_clear_error(project, capsys):
    message = exits_as_user_error("train", lambda: fit_in(project, [*FAST, "ckpt_path=last"]), capsys)
    assert "resume_dir" in message
    assert not (project / "experiments" / "mlflow.db").exists()  # refused before anything was logged


def test_a_nan_loss_stops_training_naming_the_step_and_samples_and_keeps_the_good_weights(project, seed_store,
                                                                                         capsys):
    """A learning rate of 1e30 blows the weights up at the first step, so the second step's loss is not finite:
    training stops with one line naming the epoch, the step and the batch's sample ids, the run is FAILED, and the
    checkpoint holds the finite weights from before that step (a resume can start from them)."""
    import torch

    from masklab.config import compose
    from masklab.data.manifest import load_dataset

    seed_store(project)
    folder = project / "experiments" / "runs" / "nan"

    def train():
        from masklab import workflows

        workflows.fit(compose("train", [*FAST, "optimizer.lr=1e30", "scheduler=none"]), output_dir=folder)

    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        message = exits_as_user_error("train", train, capsys)
    found = re.search(r"the loss is (\S+) at epoch 0, step (\d+) \(batch \d+ of the epoch; samples ([^)]+)\)", message)
    assert found, message
    assert found.group(1) in ("nan", "inf", "-inf") and int(found.group(2)) >= 1
    ids = {s.id for s in load_dataset(project / "data" / "synthetic").labeled("train")}
    assert set(found.group(3).split(", ")) <= ids
    state = torch.load(folder / "checkpoints" / "last-good.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == int(found.group(2))
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    _, runs = mlflow_runs(project, "synthetic")
    assert [r.info.status for r in runs] == ["FAILED"]
