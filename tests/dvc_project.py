"""A real DVC + git copy of the project for the pipeline tests (shared by test_dvc_pipeline.py and
test_dvc_experiments.py, which run on separate xdist workers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_store

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
           MLFLOW_DISABLE_TELEMETRY="true", PYTHONWARNINGS="ignore", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
           GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_GLOBAL=os.devnull)
ENV.pop("MLFLOW_TRACKING_URI", None)
ENV.pop("MASKLAB_ROOT", None)
# The project's params.yaml with the debug=fast sizes and an experiment and model of the project's own conf/
# (TINY_EXPERIMENT, TINY_MODELS) instead of the demo preset's UNet-resnet18 (14 M parameters, a 170 MB checkpoint
# for DVC to hash, cache and push).
FAST_PARAMS = {"experiment": "unet-tiny_synthetic-32", "model": "unet_tiny",
               "data": {"image_size": 32, "batch_size": 4, "synth": {"count": 16, "seed": 0}},
               "trainer": {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 2}}
TINY_EXPERIMENT = """# @package _global_
# The demo's data and recipe (unet-resnet18_synthetic-96) on a small UNet, at the pipeline tests' sizes.
defaults:
  - override /data: synthetic
  - override /model: unet_tiny
  - override /augment: light
  - override /loss: ce_dice

experiment_name: unet-tiny_synthetic-32
"""
# conf/model/<name>.yaml of the test project: the first 3 stages of a resnet18 (timm's, which builds only the stages
# it uses; smp's own resnet18 keeps all 11 M encoder weights at any depth) and narrow decoders, 0.77 M parameters
# each; they train, checkpoint and reproduce through DVC like the demo's model.
TINY_ENCODER = {"_target_": "masklab.models.build_model", "encoder": "tu-resnet18", "encoder_depth": 3,
                "encoder_weights": None, "weights_path": None}
TINY_MODELS = {"unet_tiny": {"arch": "Unet", **TINY_ENCODER, "decoder_channels": [32, 16, 8]},
               # smp's FPN head upsamples 4x for a 5-stage encoder; after 3 stages its decoder is at full size
               "fpn_tiny": {"arch": "FPN", **TINY_ENCODER, "decoder_pyramid_channels": 32,
                            "decoder_segmentation_channels": 32, "upsampling": 1}}
EDITED_MASK = "data/synthetic/masks/synth_00014.png"  # a val sample of the 16-image dataset


def sh(args: list[str], cwd: Path, check: bool = True, timeout: int = 300,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done


def dvc(*args: str, cwd: Path, check: bool = True, timeout: int = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return sh([str(BIN / "dvc"), *args], cwd, check, timeout, env)


def git(*args: str, cwd: Path) -> str:
    return sh(["git", *args], cwd).stdout.strip()


def git_clone(repo: Path, dest: Path) -> Path:
    """A fresh `git clone` of ``repo`` at ``dest``: what another machine gets, without DVC's cache or outputs."""
    sh(["git", "clone", "-q", str(repo), str(dest)], dest.parent)
    return dest


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def committed_project(tmp_path_factory: pytest.TempPathFactory, store: Path | None = None) -> Path:
    """The project's dvc.yaml, .dvc/config, .dvcignore, conf/ (plus TINY_EXPERIMENT and TINY_MODELS) and code in a
    fresh git repo, committed, never reproduced (each test module that needs one builds its own, so modules run on
    separate workers). ``store``: an empty, migrated MLflow store to start from (conftest's ``mlflow_template``)."""
    root = tmp_path_factory.mktemp("dvcproj") / "project"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / name, root / ".dvc" / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "conf", root / "conf")  # the project's own configs, searched before the package's
    (root / "conf" / "model").mkdir(exist_ok=True)
    for name, model in TINY_MODELS.items():
        (root / "conf" / "model" / f"{name}.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    (root / "conf" / "experiment").mkdir(exist_ok=True)
    (root / "conf" / "experiment" / f"{FAST_PARAMS['experiment']}.yaml").write_text(TINY_EXPERIMENT)
    if store is not None:
        copy_store(store, root)  # experiments/ is git-ignored: the store stays out of the commits
    text = (REPO / "params.yaml").read_text()
    comments = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    params = merge(yaml.safe_load(text), FAST_PARAMS)
    (root / "params.yaml").write_text(comments + yaml.safe_dump(params, sort_keys=False))
    git("init", "-q", "-b", "main", cwd=root)
    # Repository-level identity: DVC's experiment commits (pygit2/dulwich) read it even where no
    # global git config exists, as on a fresh CI machine.
    git("config", "user.name", "masklab tests", cwd=root)
    git("config", "user.email", "tests@masklab.invalid", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    return root


def reproduced_project(tmp_path_factory: pytest.TempPathFactory, store: Path | None = None) -> Path:
    """:func:`committed_project`, reproduced once and committed as v1."""
    root = committed_project(tmp_path_factory, store)
    done = dvc("repro", cwd=root)
    assert ran_stages(done.stdout) == ["prepare", "train", "evaluate", "report"]
    git("add", "-A", cwd=root)
    git("commit", "-qm", "v1: first pipeline run", cwd=root)
    return root


