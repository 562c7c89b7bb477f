"""Every experiment preset composes and runs; the data commands work on synthetic and real folders.

In this process: the workflows and the command functions, with a command's errors shown through the
CLI's own error path (``masklab.errors.run_reporting_errors``: exit status and the one-line message).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import (
    DEBUG_FAST,
    FAST,
    REPO,
    SHARED_DATASETS,
    command_in,
    composed,
    exits_as_user_error,
    fit_in,
    mlflow_runs,
)

PRESETS = sorted(p.stem for p in (REPO / "src/masklab/conf/experiment").glob("*.yaml"))
# Presets on real data need the shared datasets; a subset is imported into the test project first.
REAL_SOURCES = {"kvasir_seg": ("kvasir_seg/images", "kvasir_seg/masks", ".jpg"),
                "membrane": ("membrane/train/image", "membrane/train/label", ".png")}


def import_subset(project: Path, source: str, capsys: pytest.CaptureFixture, count: int = 10) -> None:
    images, masks, suffix = REAL_SOURCES[source]
    if not (SHARED_DATASETS / images).is_dir():
        pytest.skip(f"{SHARED_DATASETS / images} not present (shared datasets are only on dev and CI machines)")
    sub_i, sub_m = project / "src_images", project / "src_masks"
    sub_i.mkdir()
    sub_m.mkdir()
    for path in sorted((SHARED_DATASETS / images).glob(f"*{suffix}"))[:count]:
        shutil.copy(path, sub_i / path.name)
        shutil.copy(SHARED_DATASETS / masks / path.name, sub_m / path.name)
    command_in(project, "data import", [f"source={source}", f"images={sub_i}", f"masks={sub_m}",
                            "fractions={train: 0.6, val: 0.4, test: 0.0}"])
    assert "Imported" in capsys.readouterr().out


def import_instance_subset(project: Path, capsys: pytest.CaptureFixture, count: int = 6) -> None:
    """The first ``count`` image folders of DSB 2018 (one mask file per nucleus), imported as the preset's dataset."""
    source = SHARED_DATASETS / "dsb2018_nuclei_256" / "stage1_train"
    if not source.is_dir():
        pytest.skip(f"{source} not present (shared datasets are only on dev and CI machines)")
    sub = project / "src_instances"
    for folder in sorted(p for p in source.iterdir() if p.is_dir())[:count]:
        shutil.copytree(folder, sub / folder.name)
    command_in(project, "data import", ["source=dsb2018_nuclei_256", f"images={sub}",
                            "fractions={train: 0.5, val: 0.5, test: 0.0}"])
    assert "Imported" in capsys.readouterr().out


def test_presets_are_named_by_convention():
    assert len(PRESETS) >= 3
    for name in PRESETS:
        arch_encoder, dataset_size = name.split("_", 1)
        assert "-" in arch_encoder and dataset_size.rsplit("-", 1)[1].isdigit(), name


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_keeps_the_model_the_user_picks(preset):
    """A preset sets only what its model group's option does not (the encoder comes from model/<option>.yaml):
    with another `model=`, the model is that option's, with no key of the preset's own model."""
    for model in ("maskrcnn_mobilenet", "bottom_up", "segformer"):
        task = ["task=instance"] if model != "segformer" else ["task=semantic"]
        picked = composed("train", [f"experiment={preset}", f"model={model}", *task]).model
        alone = composed("train", [f"model={model}", *task]).model
        assert set(picked) <= set(alone), (preset, model, set(picked) - set(alone))
        assert picked.get("encoder") == alone.get("encoder") and picked["_target_"] == alone["_target_"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_runs_fast(project, seed_store, capsys, preset):
    for source in REAL_SOURCES:
        if f"_{source}-" in preset:
            import_subset(project, source, capsys)
    if "_dsb2018_nuclei_256-" in preset:
        import_instance_subset(project, capsys)
    seed_store(project)
    done = fit_in(project, [f"experiment={preset}", *DEBUG_FAST, "trainer.max_epochs=1", "evaluate_after=false"])
    _, runs = mlflow_runs(project, preset)
    monitor = composed("train", [f"experiment={preset}"]).monitor  # val/mIoU, or val/mask_AP for instance presets
    assert len(runs) == 1 and monitor in runs[0].data.metrics
    assert runs[0].info.run_id == done.run_id and done.evaluations == {}


def test_every_command_is_the_function_and_config_the_tests_call(project):
    """The tests call command functions on composed configs; the CLI's table must name exactly those."""
    from importlib import import_module

    from masklab.cli import COMMANDS, PLAIN_COMMANDS

    for words, (config_name, target, _) in COMMANDS.items():
        module, func = target.split(":")
        assert callable(getattr(import_module(module), func)), words
        # groups without a default
        required = {"sweep_run": ["sweep=fast_grid"], "tune": ["data=synthetic"]}.get(config_name, [])
        assert composed(config_name, required).task_name == config_name.replace("_run", ""), words
    for words, (target, _) in PLAIN_COMMANDS.items():
        module, func = target.split(":")
        assert callable(getattr(import_module(module), func)), words
    assert COMMANDS[("data", "synth")][:2] == ("data_synth", "masklab.commands.data:synth")
    assert COMMANDS[("data", "import")][:2] == ("data_import", "masklab.commands.data:import_")


def test_data_synth_check_preview(project, capsys, cli):
    command_in(project, "data synth", DEBUG_FAST)
    assert "16 samples" in capsys.readouterr().out
    again = cli("data", "synth", *DEBUG_FAST)  # through the CLI's main once
    assert again.returncode == 2 and "overwrite=true" in again.stderr and "Traceback" not in again.stderr
    command_in(project, "data check", DEBUG_FAST)
    out = capsys.readouterr().out
    assert "No problems found" in out
    shares = re.search(r"class pixels in train \((\d+) masks\): background ([\d.]+) %", out)
    assert shares and int(shares[1]) > 0 and 50 < float(shares[2]) < 100, out
    out = project / "preview.png"
    command_in(project, "data preview", [*DEBUG_FAST, f"output={out}", "augment=strong", "rows=2", "cols=3"])
    assert f"Wrote {out}" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size[0] >= 3 * 192 and im.size[1] > 2 * 192


def test_data_check_lists_every_error_and_train_refuses(project, capsys):
    command_in(project, "data synth", DEBUG_FAST)
    root = project / "data" / "synthetic"
    masks = sorted((root / "masks").glob("*.png"))
    Image.new("L", (32, 32), 9).save(masks[0])  # value 9 is no class
    Image.new("L", (20, 32), 0).save(masks[1])  # wrong size
    capsys.readouterr()
    with pytest.raises(SystemExit) as check:
        command_in(project, "data check", DEBUG_FAST)
    assert check.value.code == 1
    listed = capsys.readouterr().out
    assert masks[0].name in listed and "9" in listed
    assert masks[1].name in listed
    message = exits_as_user_error("train", lambda: fit_in(project, FAST), capsys, one_line=False)  # a table
    assert masks[0].name in message
    assert not (project / "experiments" / "mlflow.db").exists()  # refused before anything was tracked


def test_train_check_is_cached_by_manifest(project, seed_store):
    seed_store(project)
    fit_in(project, [*FAST, "trainer.max_epochs=1", "evaluate_after=false"], "first")
    cache = list((project / "experiments" / "cache" / "data_check").glob("*.json"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    fit_in(project, [*FAST, "trainer.max_epochs=1", "evaluate_after=false"], "second")
    assert cache[0].stat().st_mtime_ns == stamp  # second run used the cached result


def test_import_errors_are_listed_without_traceback(project, capsys):
    images, masks = project / "imgs", project / "msks"
    images.mkdir()
    masks.mkdir()
    Image.new("RGB", (16, 16)).save(images / "a.png")
    Image.new("RGB", (16, 16)).save(images / "b.png")
    Image.new("L", (16, 8)).save(masks / "a.png")
    overrides = ["name=bad", f"images={images}", f"masks={masks}"]
    message = exits_as_user_error("data import", lambda: command_in(project, "data import", overrides), capsys,
                                  one_line=False)
    assert "a.png" in message and "b.png" in message
    assert not (project / "data" / "bad").exists()


def test_import_requires_name(project, capsys):
    (project / "x").mkdir()
    (project / "y").mkdir()
    # a config value the user must give: a user error, one line
    message = exits_as_user_error("data import", lambda: command_in(project, "data import", ["images=x", "masks=y"]),
                                  capsys)
    assert message == "masklab data import: error: Missing mandatory value: name; full_key: name; object_type=dict"


