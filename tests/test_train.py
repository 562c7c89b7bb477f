"""End-to-end training through the real CLI: MLflow contents, evaluation files, resume, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import FAST, mlflow_runs, run_masklab


def run_dir(project: Path) -> Path:
    dirs = sorted((project / "experiments" / "runs").glob("*/*_train"))
    assert dirs, "no run folder written"
    return dirs[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One debug=fast training run shared by the read-only tests below."""
    project = tmp_path_factory.mktemp("trained")
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
    # Only the best checkpoint is tracked, without optimizer state; last.ckpt stays in the run folder.
    assert {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")} == {"checkpoints/best.ckpt"}
    tracked = torch.load(next((project / "experiments" / "mlartifacts").rglob("best.ckpt")), weights_only=True)
    assert "optimizer_states" not in tracked and tracked["state_dict"]
    evaluation = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/val_per_sample.parquet" in evaluation and "evaluation/val_metrics.json" in evaluation
    # Artifacts of the local store live under experiments/, not ./mlruns.
    assert not (project / "mlruns").exists()
    assert list((project / "experiments" / "mlartifacts").rglob("best.ckpt"))


def test_evaluation_files_and_per_sample_table(trained):
    project, _ = trained
    folder = run_dir(project) / "evaluation"
    metrics = json.loads((folder / "val_metrics.json").read_text())
    assert 0.0 <= metrics["eval/val/mIoU"] <= 1.0
    table = pd.read_parquet(folder / "val_per_sample.parquet")
    assert list(table.columns[:4]) == ["id", "split", "mIoU", "mDice"]
    assert "iou/circle" in table.columns and "dice/background" in table.columns
    assert table["id"].is_unique and table["id"].str.startswith("synth_").all()
    assert abs(table["mIoU"].mean() - metrics["eval/val/mIoU_image"]) < 1e-9


def test_evaluate_by_checkpoint_and_by_run_id_agree(trained):
    project, _ = trained
    best = next((run_dir(project) / "checkpoints").glob("best*.ckpt"))
    by_path = run_masklab(["evaluate", *FAST, f"ckpt_path={best}"], project)
    assert by_path.returncode == 0, by_path.stderr[-3000:]
    client, runs = mlflow_runs(project, "synthetic")
    run_id = runs[0].info.run_id
    by_run = run_masklab(["evaluate", *FAST, f"run_id={run_id}"], project)
    assert by_run.returncode == 0, by_run.stderr[-3000:]
    folders = sorted((project / "experiments" / "runs").glob("*/*_evaluate"))
    assert len(folders) == 2
    a, b = (json.loads((f / "evaluation" / "val_metrics.json").read_text()) for f in folders)
    assert a == b
    assert "mean" in by_run.stdout and "circle" in by_run.stdout  # the per-class table


def test_evaluate_unknown_run_is_one_line_error(trained):
    project, _ = trained
    res = run_masklab(["evaluate", *FAST, "run_id=0123456789abcdef"], project)
    assert res.returncode == 2
    assert "0123456789abcdef" in res.stderr and "Traceback" not in res.stderr


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


def test_same_config_twice_gives_same_metrics(tmp_path):
    results = []
    for name in ("a", "b"):
        project = tmp_path / name
        project.mkdir()
        res = run_masklab(["train", *FAST, "evaluate_after=false"], project)
        assert res.returncode == 0, res.stderr[-3000:]
        results.append(val_history(project))
    assert results[0] == results[1]
    assert len(results[0]) == 2


def test_resume_from_last_continues_the_same_run(project):
    first = run_masklab(["train", *FAST, "trainer.max_epochs=1", "evaluate_after=false"], project)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = run_dir(project)
    resumed = run_masklab(["train", *FAST, "trainer.max_epochs=2", "evaluate_after=false", "ckpt_path=last",
                           f"resume_dir={folder}"], project)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, runs = mlflow_runs(project, "synthetic")
    assert len(runs) == 1  # the resumed training logs into the run it continues
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "val/mIoU")]
    assert len(steps) == 2 and steps[0] < steps[1]
    last = torch.load(run_dir(project) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1


def test_resume_without_resume_dir_is_clear_error(project):
    res = run_masklab(["train", *FAST, "ckpt_path=last"], project)
    assert res.returncode == 2
    assert "resume_dir" in res.stderr and "Traceback" not in res.stderr
