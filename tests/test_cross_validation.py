"""k-fold cross-validation: folds stored in the manifest, one parent run with a child per fold, mean ± std,
and out-of-fold predictions that come from the model that never saw the sample (real trainings, tiny)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masklab.data.folds import EXCLUDED_SPLIT, deal_folds, ensure_folds, fold_view
from masklab.data.manifest import load_dataset, read_manifest
from masklab.errors import UserError

from conftest import FAST, command_in, in_project, mlflow_runs


def test_folds_are_balanced_seeded_and_keep_what_was_dealt():
    ids = [f"s{i:02d}" for i in range(23)]
    folds = deal_folds(ids, 5, seed=0)
    assert sorted(np.bincount(list(folds.values()))) == [4, 4, 5, 5, 5]
    assert deal_folds(list(reversed(ids)), 5, seed=0) == folds  # the order ids come in does not matter
    assert deal_folds(ids, 5, seed=1) != folds
    grown = deal_folds([*ids, "new1", "new2"], 5, seed=0, existing=folds)
    assert {i: grown[i] for i in ids} == folds  # no earlier sample moves
    assert sorted(np.bincount(list(grown.values()))) == [5, 5, 5, 5, 5]  # newcomers fill the smallest folds


@pytest.fixture
def synthetic(project: Path) -> Path:
    from masklab.config import compose
    from masklab.data.synth import synthesize

    cfg = compose("train", FAST)
    synthesize(Path("data/synthetic"), **{**dict(cfg.data.synth), "count": 16})
    return project / "data/synthetic"


def test_folds_are_stored_in_the_manifest_and_reused(synthetic: Path):
    dataset = load_dataset(synthetic)
    covered = {s.id for s in dataset.samples if s.split in ("train", "val")}
    dataset, plan = ensure_folds(dataset, 3, ["train", "val"], seed=0)
    assert plan.changed and set(plan.folds) == covered
    assert {s.id: s.fold for s in read_manifest(synthetic) if s.id in covered} == plan.folds
    again, same = ensure_folds(dataset, 3, ["train", "val"], seed=7)  # stored folds win over the seed
    assert not same.changed and same.folds == plan.folds
    with pytest.raises(UserError, match=r"folds \[2\].*cv.folds=3.*cv.reassign=true"):
        ensure_folds(again, 2, ["train", "val"], seed=0)
    _, dealt = ensure_folds(again, 2, ["train", "val"], seed=0, reassign=True)
    assert set(dealt.folds.values()) == {0, 1}
    with pytest.raises(UserError, match="cv.folds=1"):
        ensure_folds(again, 1, ["train"], seed=0)
    n_train = len(again.labeled("train"))
    with pytest.raises(UserError, match=f"only {n_train} labeled samples"):
        ensure_folds(again, n_train + 1, ["train"], seed=0)
    with pytest.raises(UserError, match=r"\['tran'\]"):
        ensure_folds(again, 2, ["tran"], seed=0)


def test_a_fold_view_trains_on_the_other_folds_and_holds_its_own_out(synthetic: Path):
    dataset, plan = ensure_folds(load_dataset(synthetic), 2, ["train"], seed=0)
    view = fold_view(dataset, plan, 1)
    by_id = {s.id: s.split for s in view.samples}
    assert {i for i, split in by_id.items() if split == "val"} == set(plan.members(1))
    assert {i for i, split in by_id.items() if split == "train"} == set(plan.members(0))
    # the dataset's own val samples are outside this cross-validation: in neither of the fold's splits
    assert {i for i, split in by_id.items() if split == EXCLUDED_SPLIT} == {s.id for s in dataset.split("val")}
    assert view.manifest_hash == dataset.manifest_hash and view.root == dataset.root


def test_a_wrong_out_of_fold_resolution_is_refused_before_any_training(project: Path):
    from masklab.config import compose
    from masklab.workflows import cross_validate

    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        with pytest.raises(UserError, match=r"cv.resolution=full: expected one of \['original', 'model'\]"):
            cross_validate(compose("cv", [*FAST, "cv.folds=2", "cv.resolution=full"]), project / "out")
    assert list((project / "out").iterdir()) == []  # no fold trained, no out-of-fold folder

def test_cross_validation_runs_logs_and_keeps_out_of_fold_probabilities(synthetic: Path, project: Path, capsys,
                                                                         seed_store):
    import torch

    from masklab.curation.out_of_fold import OutOfFold
    from masklab.data.images import read_image
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference import Predictor, rule_from_meta

    seed_store(project)
    out = project / "experiments/runs/cv"
    command_in(project, "cv", [*FAST, "data.synth.count=16", "cv.folds=2"], out=out)
    printed = capsys.readouterr().out
    assert "2-fold cross-validation" in printed and "mIoU" in printed and "±" in printed

    _, runs = mlflow_runs(project, "synthetic")
    parent = next(r for r in runs if r.data.tags.get("masklab.command") == "cv")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["masklab.cv_fold"] for r in children) == ["0", "1"]
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    per_fold = [c.data.metrics[f"eval/fold_{c.data.tags['masklab.cv_fold']}/mIoU"]
                for c in sorted(children, key=lambda r: r.data.tags["masklab.cv_fold"])]
    assert parent.data.metrics["cv/mIoU/mean"] == pytest.approx(np.mean(per_fold))
    assert parent.data.metrics["cv/mIoU/std"] == pytest.approx(np.std(per_fold, ddof=1))

    dataset = load_dataset(synthetic)
    folds = {s.id: s.fold for s in dataset.samples if s.split in ("train", "val")}
    import pandas as pd

    per_sample = pd.read_parquet(out / "cv_per_sample.parquet")
    assert sorted(per_sample["id"]) == sorted(folds) and all(folds[i] == f for i, f in zip(per_sample["id"],
                                                                                          per_sample["fold"]))
    oof = OutOfFold(out / "out_of_fold")
    assert sorted(oof.ids) == sorted(folds)
    sample = next(iter(oof))
    assert sample.array.dtype == np.float16 and sample.array.shape == (4, 32, 32) and sample.resolution == "model"
    assert np.allclose(sample.array.astype(np.float32).sum(axis=0), 1.0, atol=4e-3)
    # the probabilities are those of the fold model that held this sample out, recomputed here
    fold_run = next(c for c in children if c.data.tags["masklab.cv_fold"] == str(sample.fold))
    ckpt = Path(fold_run.data.tags["masklab.output_dir"]) / "checkpoints"
    loaded = load_checkpoint_model(next(ckpt.glob("best*.ckpt")))
    assert loaded.meta["dataset"]["manifest_sha256"] == dataset.manifest_hash
    image = read_image(dataset.root / next(s for s in dataset.samples if s.id == sample.id).image)
    logits = Predictor(loaded.model, rule_from_meta(loaded.meta), "cpu").logits([image], resolution="model")[0]
    expected = torch.softmax(logits, dim=0).numpy()
    assert np.abs(sample.array.astype(np.float32) - expected).max() < 1e-3
    assert oof.index["fold"].tolist() == [folds[i] for i in oof.ids]


@pytest.mark.parametrize("kind", ["bottom_up", "maskrcnn"])
def test_instance_out_of_fold_predictions_are_class_probabilities_of_the_objects(kind):
    """Both instance model kinds give the label-error ranking (C, h, w) class probabilities: at the network's
    size under a resize rule, float16, summing to 1 per pixel (untrained models: only the shapes matter)."""
    import torch

    from masklab.inference import Predictor
    from masklab.inference.rule import InputRule
    from masklab.models.instance import build_bottom_up, build_maskrcnn
    from masklab.tasks import get_task

    torch.manual_seed(0)
    model = build_bottom_up(3, encoder="resnet18") if kind == "bottom_up" else \
        build_maskrcnn(3, variant="mobilenet_v3_fpn", min_size=64, max_size=64, anchor_sizes=(8, 16, 32))
    predictor = Predictor(model, InputRule("resize", 32, 32), "cpu", batch_size=2)
    images = [np.random.default_rng(k).integers(0, 255, (48, 40, 3), dtype=np.uint8) for k in range(2)]
    for probs in get_task("instance").class_probabilities(predictor, images, "model"):
        assert probs.dtype == np.float16 and probs.shape == (3, 32, 32)
        assert np.allclose(probs.astype(np.float32).sum(axis=0), 1.0, atol=0.01)


def test_label_errors_of_an_instance_dataset_compare_the_objects_class_map(synthetic: Path, tmp_path: Path):
    """find_label_errors(task="instance"): the masks compared are the objects painted as classes; an object the
    model sees that no object covers ranks first as a missing object."""
    from test_label_errors import confident

    from masklab.curation.out_of_fold import OutOfFoldWriter
    from masklab.tasks import get_task
    from masklab.workflows import find_label_errors, write_label_error_explorer

    dataset = load_dataset(synthetic)
    task = get_task("instance")
    writer = OutOfFoldWriter(tmp_path / "oof", "model")
    victim = dataset.samples[3]
    for k, sample in enumerate(dataset.samples):
        seen = task.label_map(dataset.root, sample).copy()
        if sample is victim:
            free = np.argwhere(seen == 0)
            y, x = free[len(free) // 2]
            seen[max(0, y - 3):y + 4, max(0, x - 3):x + 4] = 1  # an object the dataset lacks
        writer.add(sample.id, k % 2, confident(seen, classes=len(dataset.class_table.classes)))
    writer.close()
    found = find_label_errors(tmp_path / "oof", dataset, tmp_path / "out", task="instance")
    assert found.samples.iloc[0]["id"] == victim.id and found.samples.iloc[0]["side"] == "unlabelled"
    index = write_label_error_explorer(found, dataset, tmp_path / "oof", top=4, task="instance")
    assert victim.id in index.read_text()


def test_splits_the_dataset_lacks_are_left_out_and_named(tmp_path: Path, caplog):
    """A dataset imported with split_mode=none has only `train`: the default cv.splits [train, val] folds the train
    samples and says val is missing; splits of which none exists are refused."""
    import logging

    from masklab.data.classes import ClassInfo, ClassTable
    from masklab.data.folds import covered_samples
    from masklab.data.writer import DatasetWriter

    table = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "thing", (255, 0, 0))))
    with DatasetWriter(tmp_path / "flat", table) as writer:
        for i in range(4):
            writer.add(f"s{i}", np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=np.uint8), "train")
        writer.commit()
    dataset = load_dataset(tmp_path / "flat")
    with caplog.at_level(logging.WARNING, logger="masklab"):
        covered = covered_samples(dataset, ["train", "val"])
    assert [s.id for s in covered] == ["s0", "s1", "s2", "s3"]
    assert any("cv.splits: ['val'] not in dataset" in r.getMessage() and "samples of ['train']" in r.getMessage()
               for r in caplog.records)
    _, plan = ensure_folds(dataset, 2, ["train", "val"], seed=0)
    assert sorted(len(plan.members(f)) for f in (0, 1)) == [2, 2]
    with pytest.raises(UserError, match=r"cv.splits: \['val', 'test'\] not in dataset"):
        covered_samples(dataset, ["val", "test"])
