"""Evaluation tables, error analysis, plots, compare=, and the report / data browse commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from masklab.errors import UserError

from conftest import FAST, miou_from_confusion, mlflow_runs, run_masklab


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two debug=fast runs (different seeds) on the same synthetic dataset, both evaluated."""
    project = tmp_path_factory.mktemp("report")
    for seed in (1, 2):
        res = run_masklab(["train", *FAST, f"seed={seed}"], project)
        assert res.returncode == 0, res.stderr[-3000:]
    client, runs = mlflow_runs(project, "synthetic")
    runs = sorted(runs, key=lambda r: r.info.start_time)
    return project, client, [r.info.run_id for r in runs]


def latest(project, pattern):
    found = sorted((project / "experiments" / "runs").glob(pattern))
    assert found, pattern
    return found[-1]


def test_per_sample_table_has_every_column(two_runs):
    project, client, (run_a, _) = two_runs
    folder = latest(project, "*/*_train") / "evaluation"
    table = pd.read_parquet(folder / "val_per_sample.parquet")
    for col in ("id", "split", "mIoU", "mDice", "boundary_mIoU", "pixel_acc", "conf_mean_max_prob",
                "conf_mean_entropy", "conf_low_fraction"):
        assert col in table.columns, col
    for metric in ("iou", "dice", "boundary_iou", "tp", "fp", "fn", "true_area", "pred_area", "missed",
                   "hallucinated"):
        assert f"{metric}/circle" in table.columns, metric
    assert table["id"].is_unique and (table["split"] == "val").all()
    # Counts agree with each other: true area = TP + FN, predicted area = TP + FP.
    assert (table["true_area/circle"] == table["tp/circle"] + table["fn/circle"]).all()
    assert (table["pred_area/circle"] == table["tp/circle"] + table["fp/circle"]).all()
    assert (table["missed/circle"] == ((table["true_area/circle"] > 0) & (table["tp/circle"] == 0))).all()
    # The top softmax probability of 4 classes is at least 1/4; a fraction of pixels lies in [0, 1].
    assert table["conf_mean_max_prob"].between(0.25, 1).all() and table["conf_low_fraction"].between(0, 1).all()
    metrics = json.loads((folder / "val_metrics.json").read_text())
    per_class = pd.read_csv(folder / "val_per_class.csv")
    assert metrics["eval/val/mBoundaryIoU"] == pytest.approx(np.nanmean(per_class["BoundaryIoU"]), abs=1e-12)
    confusion = pd.read_csv(folder / "val_confusion.csv", index_col=0)
    assert metrics["eval/val/mIoU"] == pytest.approx(miou_from_confusion(confusion), abs=1e-12)
    pairs = pd.read_csv(folder / "val_confusion_pairs.csv")
    assert list(pairs.columns) == ["gt", "pred", "pixels", "share_of_gt", "images"]
    assert (pairs["images"] >= 1).all() and (pairs["gt"] != pairs["pred"]).all()
    for png in ("val_per_class.png", "val_confusion.png", "training_curves.png"):
        assert (folder / png).stat().st_size > 1000, png
    assert len(list((folder / "val_pred").glob("*.png"))) == len(table)
    logged = {f.path for f in client.list_artifacts(run_a, "evaluation")}
    assert {"evaluation/val_per_sample.parquet", "evaluation/val_confusion.png", "evaluation/val_pred"} <= logged


def test_worst_samples_and_row_normalised_confusion():
    from masklab.evaluation.analysis import row_normalised, worst_samples

    table = pd.DataFrame({"id": list("abcd"), "mIoU": [0.9, 0.1, np.nan, 0.5]})
    assert list(worst_samples(table, "mIoU", 2)["id"]) == ["b", "d"]
    with pytest.raises(UserError, match="column .nope. is not in the per-sample table"):
        worst_samples(table, "nope")
    norm = row_normalised(np.array([[3, 1], [0, 0]]))
    assert np.allclose(norm, [[0.75, 0.25], [0, 0]])


def test_compare_reports_per_sample_deltas(two_runs):
    project, _, (run_a, run_b) = two_runs
    res = run_masklab(["evaluate", *FAST, f"run_id={run_b}", f"compare={run_a}"], project)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "got worse than run" in res.stdout
    table = pd.read_parquet(latest(project, "*/*_evaluate") / "evaluation" / "val_compare.parquet")
    assert np.allclose(table["delta_mIoU"], table["mIoU"] - table["mIoU_other"], equal_nan=True)
    bad = run_masklab(["evaluate", *FAST, f"run_id={run_b}", "compare=0123456789abcdef0123456789abcdef"], project)
    assert bad.returncode == 2 and "compare=" in bad.stderr and "Traceback" not in bad.stderr


def test_report_builds_explorer_and_logs_it(two_runs):
    project, client, (run_a, _) = two_runs
    res = run_masklab(["report", f"run={run_a}"], project)
    assert res.returncode == 0, res.stderr[-3000:]
    index = latest(project, "*/*_report") / "report" / "index.html"
    html = index.read_text()
    assert "synth_" in html and "data:image" in html
    assert "report/index.html" in {f.path for f in client.list_artifacts(run_a, "report")}


def test_report_of_run_without_evaluation_still_renders(project):
    res = run_masklab(["train", *FAST, "evaluate_after=false"], project)
    assert res.returncode == 0, res.stderr[-3000:]
    _, runs = mlflow_runs(project, "synthetic")
    report = run_masklab(["report", f"run={runs[0].info.run_id}"], project)
    assert report.returncode == 0, report.stderr[-3000:]
    run_id = runs[0].info.run_id
    assert f"warning: run {run_id} has no evaluation of split 'val'" in report.stderr  # a message, not a result
    assert "has no evaluation" not in report.stdout
    html = (latest(project, "*/*_report") / "report" / "index.html").read_text()
    assert "has no evaluation" in html


def test_report_unknown_run_is_one_line_error(project):
    res = run_masklab(["report", "run=0123456789abcdef0123456789abcdef"], project)
    assert res.returncode == 2 and "no such MLflow run" in res.stderr and "Traceback" not in res.stderr


def test_data_browse_writes_explorer(project):
    res = run_masklab(["data", "browse", *FAST], project)
    assert res.returncode == 0, res.stderr[-3000:]
    index = latest(project, "*/*_data_browse") / "browse" / "index.html"
    assert index.stat().st_size > 1000
