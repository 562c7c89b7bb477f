"""The public Python API: workflows called in-process with configs from `hydra.compose` (no `@hydra.main`).

`fit` gives the same metrics as `masklab train` with the same overrides; the fitted run then goes
through evaluate, register, promote and predict as plain function calls.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import DEBUG_FAST, FAST, composed, miou_from_confusion, mlflow_runs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """`workflows.fit` in this process, in its own project folder (other tests used other stores in this
    process before: the store must follow the project, not MLflow's per-URI cache)."""
    from masklab import workflows

    project = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MASKLAB_ROOT", raising=False)
        cfg = composed("train", [*FAST, "registry.register=true", "registry.name=shapes"])
        result = workflows.fit(cfg, output_dir=project / "run")
    return project, result


def test_fit_returns_the_run_checkpoint_and_evaluations(fitted):
    project, result = fitted
    assert result.monitor == "val/mIoU"
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert result.best_checkpoint.is_relative_to(project / "run")  # the given folder, not a Hydra one
    assert set(result.evaluations) == {"val"}
    val = result.evaluations["val"]
    assert val.metrics["eval/val/mIoU"] == pytest.approx(miou_from_confusion(val.confusion), abs=1e-12)
    assert result.registered == ("shapes", "1")
    assert result.tracking_uri == f"sqlite:///{project}/experiments/mlflow.db"  # absolute: usable from anywhere
    _, runs = mlflow_runs(project, "synthetic")
    assert [r.info.run_id for r in runs] == [result.run_id]
    # The best value is the best epoch's val/mIoU as logged (monitor_mode max).
    client, _ = mlflow_runs(project, "synthetic")
    assert result.best_value == max(m.value for m in client.get_metric_history(result.run_id, "val/mIoU"))
    assert runs[0].data.tags["masklab.task"] == "semantic"


def test_evaluate_promote_predict_as_functions(fitted, tmp_path, monkeypatch):
    from masklab import workflows

    project, result = fitted
    monkeypatch.chdir(project)
    cfg = composed("evaluate", DEBUG_FAST)
    evaluation = workflows.evaluate(cfg, tmp_path / "eval", ckpt_path=result.best_checkpoint)
    assert evaluation.run_id == result.run_id  # logged to the run that trained the checkpoint
    saved = json.loads((tmp_path / "eval" / "evaluation" / "val_metrics.json").read_text())
    assert saved["eval/val/mIoU"] == pytest.approx(result.evaluations["val"].metrics["eval/val/mIoU"], abs=1e-12)

    uri = result.tracking_uri
    moved = workflows.promote(uri, "shapes", "1", "Staging")
    assert (moved.from_stage, moved.to_stage, moved.forced, moved.gate) == ("None", "Staging", False, None)
    # The evaluation record went to the training run: model, dataset version, split, resolution.
    record = json.loads((tmp_path / "eval" / "evaluation" / "val_evaluation.json").read_text())
    assert (record["model"], record["split"], record["resolution"]) == (f"runs:/{result.run_id}", "val", "original")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(images / "a.png")
    done = workflows.predict("models:/shapes/Staging", images, tmp_path / "masks", uri)
    (mask,) = done.written
    assert np.asarray(Image.open(mask)).shape == (40, 56)  # at the image's own size


def test_fit_skips_images_awaiting_labels(tmp_path, monkeypatch):
    """Dataset format v2: `pool` images and rows with status unlabeled (no mask) stay out of training and
    evaluation; their extra keys survive; the dataset check accepts them."""
    import dataclasses

    from masklab import workflows
    from masklab.data.check import check_dataset
    from masklab.data.manifest import read_manifest, write_manifest
    from masklab.data.synth import synthesize

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "data" / "shapes"
    synthesize(root, count=16, size=32, seed=0)
    rows = read_manifest(root)
    no_target = {"mask": None, "mask_sha256": None, "instances": None, "instance_classes": {}}
    waiting = [dataclasses.replace(rows[0], id="pool_a", split="pool", extra={"source": "camera 2"}, **no_target),
               dataclasses.replace(rows[1], id="train_unlabeled", split="train", status="unlabeled", extra={},
                                   **no_target)]
    write_manifest(root, [*rows, *waiting])
    assert not [p for p in check_dataset(root) if p.severity == "error"]
    cfg = composed("train", [*FAST, f"data.root={root}", "data.name=shapes"])
    result = workflows.fit(cfg, output_dir=tmp_path / "run")
    table = result.evaluations["val"].per_sample
    assert "pool_a" not in set(table["id"]) and len(table) == sum(r.split == "val" for r in rows)
    assert {r.id: r.extra for r in read_manifest(root)}["pool_a"] == {"source": "camera 2"}
