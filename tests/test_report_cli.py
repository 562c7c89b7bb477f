"""Evaluation tables, error analysis, plots, compare=, and the report / data browse commands, in this process
(the workflows and command functions, their errors through the CLI's error path)."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from masklab.errors import UserError

from conftest import (
    DEBUG_FAST,
    FAST,
    command_in,
    copy_store,
    exits_as_user_error,
    fit_in,
    miou_from_confusion,
    mlflow_runs,
)


def page_data(index: Path) -> dict:
    """The data an explorer page carries inline (what its script renders: samples, table columns, problems)."""
    match = re.search(r'<script type="application/json" id="masklab-data">(.*?)</script>', index.read_text(), re.S)
    assert match, f"{index}: no inline data"
    return json.loads(match.group(1))


def assert_plot(path: Path, min_size: tuple[int, int]) -> None:
    """A PNG plot: at least ``min_size`` pixels, with drawing on it (not one flat colour or nearly so)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_size[0] and image.height >= min_size[1], image.size
        rgb = np.asarray(image.convert("RGB"))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    drawn = (rgb != rgb[0, 0]).any(axis=-1).mean()  # pixels unlike the background corner
    assert len(colours) > 20 and drawn > 0.02, (path.name, len(colours), drawn)


def thumbnail(uri: str):
    """A card's inline image (a JPEG data URI), decoded."""
    from PIL import Image

    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):])))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, mlflow_template):
    """Two debug=fast runs (different seeds) on the same synthetic dataset, both evaluated."""
    project = tmp_path_factory.mktemp("report")
    copy_store(mlflow_template, project)
    for seed in (1, 2):
        fit_in(project, [*FAST, f"seed={seed}"], f"seed{seed}_train")
    client, runs = mlflow_runs(project, "synthetic")
    runs = sorted(runs, key=lambda r: r.info.start_time)
    return project, client, [r.info.run_id for r in runs]


def test_per_sample_table_has_every_column(two_runs):
    project, client, (run_a, _) = two_runs
    folder = project / "experiments" / "runs" / "seed1_train" / "evaluation"  # run_a's folder
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
    # Matplotlib figures at 110 dpi: 4 classes' bars (6.4 x 3.6 in), a 4 x 4 heatmap (4.8 x 3.9), two curves (9 x 3.4)
    for png, size in (("val_per_class.png", (500, 300)), ("val_confusion.png", (400, 300)),
                      ("training_curves.png", (800, 300))):
        assert_plot(folder / png, size)
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


def test_compare_reports_per_sample_deltas(two_runs, tmp_path, capsys):
    from masklab import workflows

    project, _, (run_a, run_b) = two_runs
    done = command_in(project, "evaluate", [*DEBUG_FAST, f"compare={run_a}"],
                      func=lambda cfg: workflows.evaluate(cfg, tmp_path / "compare", run_id=run_b))
    assert done.run_id == run_b
    assert "got worse than run" in capsys.readouterr().out
    table = pd.read_parquet(done.folder / "val_compare.parquet")
    assert np.allclose(table["delta_mIoU"], table["mIoU"] - table["mIoU_other"], equal_nan=True)
    message = exits_as_user_error("evaluate", lambda: command_in(
        project, "evaluate", [*DEBUG_FAST, "compare=0123456789abcdef0123456789abcdef"],
        func=lambda cfg: workflows.evaluate(cfg, tmp_path / "bad", run_id=run_b)), capsys)
    assert "compare=" in message


def test_report_builds_explorer_and_logs_it(two_runs, tmp_path, capsys):
    project, client, (run_a, _) = two_runs
    command_in(project, "report", [f"run={run_a}", f"output={tmp_path / 'report'}"])
    assert f"Wrote {tmp_path / 'report' / 'index.html'} and logged it" in capsys.readouterr().out
    data = page_data(tmp_path / "report" / "index.html")
    # One card per val sample of run_a's evaluation, its per-sample table's values in the page's columns.
    table = pd.read_parquet(project / "experiments" / "runs" / "seed1_train" / "evaluation" / "val_per_sample.parquet")
    samples = data["samples"]
    assert sorted(samples["id"]) == sorted(table["id"]) and all(i.startswith("synth_") for i in samples["id"])
    assert set(samples["split"]) == {"val"} and all(samples["ok"]) and data["problems"] == []
    assert data["title"].endswith(" / val · Boundary IoU next to void: exclude")  # from the evaluation record
    # It opens worst first by the headline metric, whose value the cards show (the browser tests render views).
    assert (data["view"]["sort"], data["view"]["dir"]) == ("mIoU", "asc"), data["view"]
    columns = {c["name"]: c["values"] for c in data["columns"]}
    expected = table.set_index("id").loc[samples["id"], "mIoU"].to_numpy(float)
    shown = np.array([np.nan if v is None else v for v in columns["mIoU"]], float)
    assert np.allclose(shown, expected, rtol=5e-4, atol=0, equal_nan=True)  # (the page keeps 4 significant digits)
    # Every card: the image (a 32 px thumbnail), ground truth, prediction and their error map, as files too.
    assert set(samples["files"]) == {"igpe"} and all(samples["gt"]) and all(samples["pred"])
    for uri, name in zip(samples["img"], samples["name"]):
        assert thumbnail(uri).size == (32, 32)
        assert all((tmp_path / "report" / "full" / f"{name}_{kind}.png").is_file()
                   for kind in ("image", "gt", "pred", "error"))
    assert "report/index.html" in {f.path for f in client.list_artifacts(run_a, "report")}


def test_report_of_run_without_evaluation_still_renders(project, seed_store, capsys, caplog):
    seed_store(project)
    run_id = fit_in(project, [*FAST, "evaluate_after=false"]).run_id
    with caplog.at_level(logging.WARNING, logger="masklab"):
        command_in(project, "report", [f"run={run_id}", f"output={project / 'report'}"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # a message (stderr and the job log), not a result (stdout)
    assert any(w.startswith(f"run {run_id} has no evaluation of split 'val'") for w in warnings), warnings
    assert "has no evaluation" not in capsys.readouterr().out
    html = (project / "report" / "index.html").read_text()
    assert "has no evaluation" in html


def test_report_unknown_run_is_one_line_error(project, seed_store, capsys):
    seed_store(project)
    unknown = ["run=0123456789abcdef0123456789abcdef", f"output={project / 'out'}"]
    message = exits_as_user_error("report", lambda: command_in(project, "report", unknown), capsys)
    assert "no such MLflow run" in message


def test_data_browse_writes_explorer(project, capsys):
    command_in(project, "data browse", [*DEBUG_FAST, f"output={project / 'browse'}"])
    index = project / "browse" / "index.html"
    assert f"Wrote {index}" in capsys.readouterr().out
    data = page_data(index)
    lines = (project / "data" / "synthetic" / "manifest.jsonl").read_text().splitlines()
    manifest = [json.loads(line) for line in lines]
    assert len(manifest) == 16  # (debug=fast: 16 images, split=all)
    assert data["samples"]["id"] == [r["id"] for r in manifest]
    assert data["samples"]["split"] == [r["split"] for r in manifest]
    assert all(data["samples"]["ok"]) and data["columns"] == [] and data["problems"] == []
    assert not any(data["samples"]["pred"])  # a dataset without predictions
    assert [c["name"] for c in data["classes"]] == ["background", "circle", "rectangle", "triangle"]
