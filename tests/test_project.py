"""The user's project: `masklab init`, its conf/ searched before masklab's, imports that write
conf/data/<name>.yaml, missing datasets named, and image sizes given as [H, W]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from masklab.augment import build_pipeline
from masklab.config import compose
from masklab.data.open import synthesizes_on_first_use
from masklab.data.project_conf import suggest_image_size
from masklab.inference import InputRule
from masklab.project import PACKAGE_CONF_DIR

from conftest import FAST, command_in, exits_as_user_error, fit_in

ROADS = {"name": "roads", "root": "${paths.data_dir}/${data.name}", "image_size": [64, 96], "batch_size": 2,
         "num_workers": 0, "synth": None}
MY_EXPERIMENT = "# @package _global_\ndefaults:\n  - override /data: roads\nexperiment_name: my-roads\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def plant_images_and_masks(folder: Path, count: int = 10, height: int = 64, width: int = 96) -> tuple[Path, Path]:
    """``count`` random RGB images with a rectangle of class 1 in their masks, all ``height`` x ``width``."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4: height // 2, width // 3: 2 * width // 3] = 1
        image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8) + (mask[..., None] * 150).astype(np.uint8)
        Image.fromarray(image).save(images / f"s{i:02d}.png")
        Image.fromarray(mask).save(masks / f"s{i:02d}.png")
    return images, masks


def test_init_lays_out_a_project_and_refuses_a_non_empty_folder(project: Path, capsys):
    from masklab.commands.init import main as init  # `masklab init` (a plain command: no Hydra, no config)

    init(["proj"])
    assert "Created the masklab project proj" in capsys.readouterr().out
    proj = project / "proj"
    for rel in ("conf/README.md", "conf/experiment/example.yaml", "dvc.yaml", "params.yaml", ".gitignore",
                "README.md", "tests/test_configs.py"):
        assert (proj / rel).is_file(), rel
    for rel in ("conf/data", "conf/model", "data", "experiments"):
        assert (proj / rel).is_dir(), rel
    assert "masklab data import" in (proj / "README.md").read_text()
    # The pipeline has the repository's shape, on the project's own conf/ rather than masklab's source.
    stages = yaml.safe_load((proj / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["prepare", "train", "evaluate", "report"]
    for name, stage in stages.items():
        assert stage["cmd"].startswith(f"masklab pipeline {name}")
        assert not any("src/masklab" in str(dep) for dep in stage.get("deps", []))
    assert "conf" in stages["train"]["deps"]
    assert yaml.safe_load((proj / "params.yaml").read_text())["experiment"] == "example"

    (proj / "params.yaml").write_text("seed: 1\n")
    (proj / "README.md").unlink()
    before = files_under(proj)
    message = exits_as_user_error("init", lambda: init(["proj"]), capsys)
    assert "proj" in message and "not empty" in message and files_under(proj) == before
    # --force adds what is missing and keeps what is there.
    init(["proj", "--force"])
    assert (proj / "README.md").is_file() and (proj / "params.yaml").read_text() == "seed: 1\n"


def test_project_configs_come_first_for_the_cli_and_compose(project: Path, cli):
    write(project / "conf/data/roads.yaml", yaml.safe_dump(ROADS, sort_keys=False))
    write(project / "conf/experiment/my.yaml", MY_EXPERIMENT)
    # Same name as a package option (unet, the default): shadows it.
    write(project / "conf/model/unet.yaml", (PACKAGE_CONF_DIR / "model/fpn.yaml").read_text())
    res = cli("train", "experiment=my", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    assert printed["data"]["name"] == "roads" and printed["experiment_name"] == "my-roads"
    assert printed["model"]["arch"] == "FPN"
    cfg = compose("train", ["data=roads"])
    assert list(cfg.data.image_size) == [64, 96] and cfg.model.arch == "FPN"
    assert compose("train", ["experiment=my"]).experiment_name == "my-roads"


def test_import_writes_a_data_config_that_train_uses(project: Path, seed_store, capsys):
    images, masks = plant_images_and_masks(project / "raw")
    command_in(project, "data import", ["name=tiles", f"images={images}", f"masks={masks}",
                                        "fractions={train: 0.6, val: 0.4, test: 0.0}"])
    written = project / "conf/data/tiles.yaml"
    data = yaml.safe_load(written.read_text())
    assert data["name"] == "tiles" and data["root"] == "${paths.data_dir}/${data.name}"
    assert data["image_size"] == [64, 96]  # the images' aspect; [H, W] as they are not square
    assert "1=class_1" in written.read_text()  # the class table, for information
    source = yaml.safe_load((project / "conf/source/tiles.yaml").read_text())
    assert source["images"] == "raw/images" and source["fractions"]["val"] == 0.4  # relative: the project moves

    # Trains right away, on a non-square size (multiples of 32 for the encoder).
    seed_store(project)
    trained = fit_in(project, ["data=tiles", *FAST, "data.image_size=[32,64]"])
    assert trained.evaluations["val"].per_sample["id"].str.startswith("s").all()  # the imported samples

    # A second import of the same name keeps the (possibly edited) config; overwrite=true replaces it.
    write(written, written.read_text().replace("batch_size: 8", "batch_size: 3"))
    capsys.readouterr()
    command_in(project, "data import", ["name=tiles", f"images={images}", f"masks={masks}", "out=data/tiles2"])
    assert "kept the existing" in capsys.readouterr().out and yaml.safe_load(written.read_text())["batch_size"] == 3
    command_in(project, "data import", ["name=tiles", f"images={images}", f"masks={masks}", "overwrite=true"])
    assert yaml.safe_load(written.read_text())["batch_size"] == 8


def test_a_missing_dataset_is_named_with_those_that_exist(project: Path, cli):
    write(project / "data/roads/manifest.jsonl", "")
    write(project / "conf/data/fields.yaml", yaml.safe_dump({**ROADS, "name": "fields"}))
    before = files_under(project)
    res = cli("data", "check", "data.name=roadz")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    message = res.stderr.strip()
    assert len(message.splitlines()) == 1 and "'roadz' not found" in message
    for existing in ("roads", "fields", "synthetic", "kvasir_seg"):
        assert existing in message
    assert files_under(project) == before  # nothing synthesized, no run folder


def test_only_the_builtin_dataset_is_synthesized_on_first_use(project: Path):
    assert synthesizes_on_first_use(compose("train", []).data)
    assert not synthesizes_on_first_use(compose("train", ["data.name=roadz"]).data)
    assert not synthesizes_on_first_use(compose("train", ["data=kvasir_seg", "debug=fast"]).data)


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
def test_augment_presets_give_the_configured_height_and_width(project: Path, preset: str):
    cfg = compose("train", [f"augment={preset}", "data.image_size=[32,48]"])
    image = np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)
    mask = np.zeros((40, 70), np.uint8)
    for nodes in (cfg.augment.train, cfg.augment.eval):
        pipeline = build_pipeline(nodes, seed=0)
        for _ in range(8):  # each random rotation/crop has a chance to show up
            out = pipeline(image=image, mask=mask)
            assert out["image"].shape == (32, 48, 3) and out["mask"].shape == (32, 48)
    rule = InputRule.from_eval_pipeline(cfg.augment.eval)
    assert (rule.height, rule.width) == (32, 48)


def test_right_angle_rotations_only_for_square_sizes(project: Path):
    def rotate_p(size: str) -> float:
        nodes = compose("train", ["augment=light", f"data.image_size={size}"]).augment.train
        return next(n.p for n in nodes if n._target_.endswith("RandomRotate90"))

    assert rotate_p("32") == 0.5 and rotate_p("[48,48]") == 0.5 and rotate_p("[32,48]") == 0.0
    # The synthetic generator makes square images of the short side; Resize brings them to [H, W].
    assert compose("train", ["data.image_size=[32,48]"]).data.synth.size == 32


def test_a_bad_image_size_names_the_key_and_what_is_expected(project: Path):
    cfg = compose("train", ["data.image_size=[32]"])
    with pytest.raises(Exception, match=r"data.image_size=\[32\]: expected a positive int or \[height, width\]"):
        OmegaConf.to_container(cfg.augment, resolve=True)


@pytest.mark.parametrize(("sizes", "expected"), [
    ([(64, 96)] * 3, [64, 96]),
    ([(1080, 1920), (1080, 1920), (720, 1280)], [256, 448]),  # short side 256, aspect kept
    ([(96, 64)], [96, 64]),  # portrait: [H, W] keeps the order
    ([(512, 512), (500, 520)], 256),  # square: one int
    ([(100, 100)], 96),  # never upscaled past the median image
])
def test_suggested_image_size(sizes: list[tuple[int, int]], expected: int | list[int]):
    assert suggest_image_size(sizes) == expected
