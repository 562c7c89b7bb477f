"""Every experiment preset composes and runs; the data commands work on synthetic and real folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import FAST, REPO, SHARED_DATASETS, mlflow_runs, run_masklab

PRESETS = sorted(p.stem for p in (REPO / "src/masklab/conf/experiment").glob("*.yaml"))
# Presets on real data need the shared datasets; a subset is imported into the test project first.
REAL_SOURCES = {"kvasir_seg": ("kvasir_seg/images", "kvasir_seg/masks", ".jpg"),
                "membrane": ("membrane/train/image", "membrane/train/label", ".png")}


def import_subset(project: Path, source: str, count: int = 10) -> None:
    images, masks, suffix = REAL_SOURCES[source]
    if not (SHARED_DATASETS / images).is_dir():
        pytest.skip(f"{SHARED_DATASETS / images} not present (shared datasets are only on dev and CI machines)")
    sub_i, sub_m = project / "src_images", project / "src_masks"
    sub_i.mkdir()
    sub_m.mkdir()
    for path in sorted((SHARED_DATASETS / images).glob(f"*{suffix}"))[:count]:
        shutil.copy(path, sub_i / path.name)
        shutil.copy(SHARED_DATASETS / masks / path.name, sub_m / path.name)
    res = run_masklab(["data", "import", f"source={source}", f"images={sub_i}", f"masks={sub_m}",
                       "fractions={train: 0.6, val: 0.4, test: 0.0}"], project)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Imported" in res.stdout


def test_presets_are_named_by_convention():
    assert len(PRESETS) >= 3
    for name in PRESETS:
        arch_encoder, dataset_size = name.split("_", 1)
        assert "-" in arch_encoder and dataset_size.rsplit("-", 1)[1].isdigit(), name


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_runs_fast(project, preset):
    for source in REAL_SOURCES:
        if f"_{source}-" in preset:
            import_subset(project, source)
    res = run_masklab(["train", f"experiment={preset}", *FAST, "trainer.max_epochs=1", "evaluate_after=false"],
                      project)
    assert res.returncode == 0, res.stderr[-3000:]
    _, runs = mlflow_runs(project, preset)
    assert len(runs) == 1 and "val/mIoU" in runs[0].data.metrics


def test_data_synth_check_preview(project):
    res = run_masklab(["data", "synth", *FAST], project)
    assert res.returncode == 0, res.stderr
    assert "16 samples" in res.stdout
    again = run_masklab(["data", "synth", *FAST], project)
    assert again.returncode == 2 and "overwrite=true" in again.stderr
    check = run_masklab(["data", "check", *FAST], project)
    assert check.returncode == 0 and "No problems found" in check.stdout
    out = project / "preview.png"
    preview = run_masklab(["data", "preview", *FAST, f"output={out}", "augment=strong", "rows=2", "cols=3"], project)
    assert preview.returncode == 0, preview.stderr
    with Image.open(out) as im:
        assert im.size[0] >= 3 * 192 and im.size[1] > 2 * 192


def test_data_check_lists_every_error_and_train_refuses(project):
    assert run_masklab(["data", "synth", *FAST], project).returncode == 0
    root = project / "data" / "synthetic"
    masks = sorted((root / "masks").glob("*.png"))
    Image.new("L", (32, 32), 9).save(masks[0])  # value 9 is no class
    Image.new("L", (20, 32), 0).save(masks[1])  # wrong size
    check = run_masklab(["data", "check", *FAST], project)
    assert check.returncode == 1
    assert masks[0].name in check.stdout and "9" in check.stdout
    assert masks[1].name in check.stdout
    train = run_masklab(["train", *FAST], project)
    assert train.returncode == 2
    assert "error" in train.stderr and masks[0].name in train.stderr and "Traceback" not in train.stderr


def test_train_check_is_cached_by_manifest(project):
    assert run_masklab(["train", *FAST, "trainer.max_epochs=1", "evaluate_after=false"], project).returncode == 0
    cache = list((project / "experiments" / "cache" / "data_check").glob("*.json"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    assert run_masklab(["train", *FAST, "trainer.max_epochs=1", "evaluate_after=false"], project).returncode == 0
    assert cache[0].stat().st_mtime_ns == stamp  # second run used the cached result


def test_import_errors_are_listed_without_traceback(project):
    images, masks = project / "imgs", project / "msks"
    images.mkdir()
    masks.mkdir()
    Image.new("RGB", (16, 16)).save(images / "a.png")
    Image.new("RGB", (16, 16)).save(images / "b.png")
    Image.new("L", (16, 8)).save(masks / "a.png")
    res = run_masklab(["data", "import", "name=bad", f"images={images}", f"masks={masks}"], project)
    assert res.returncode == 2
    assert "a.png" in res.stderr and "b.png" in res.stderr and "Traceback" not in res.stderr
    assert not (project / "data" / "bad").exists()


def test_import_requires_name(project):
    (project / "x").mkdir()
    (project / "y").mkdir()
    res = run_masklab(["data", "import", "images=x", "masks=y"], project)
    assert res.returncode == 2  # a config value the user must give: a user error, one line
    assert res.stderr.splitlines() == [
        "masklab data import: error: Missing mandatory value: name; full_key: name; object_type=dict"]
