"""Bring your own model: a project's ``conf/model/<name>.yaml`` naming its own module trains,
registers and predicts like a built-in, and a stored spec cannot name any other code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import DEBUG_FAST, fit_in, run_masklab

NAME = "tiny"

MY_MODELS = '''
"""The user's own network: normalised (N, 3, H, W) float -> (N, C, H, W) logits."""
import os  # noqa: F401  (lets a test name my_models.os.system)

from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, num_classes, 1))

    def forward(self, x):
        return self.body(x)


def flat(num_classes: int):
    """Breaks the contract: logits without the spatial dimensions."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(num_classes))
'''


def make_project(root: Path) -> Path:
    """A user project: ``my_models.py`` and ``conf/model/tiny.yaml`` naming it."""
    (root / "conf" / "model").mkdir(parents=True)
    (root / "my_models.py").write_text(MY_MODELS)
    (root / "conf" / "model" / "tiny.yaml").write_text("_target_: my_models.TinyNet\nwidth: 4\nmean: [0.5, 0.5, 0.5]\n")
    return root


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 36), (32, 32)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


PYFUNC_SCRIPT = textwrap.dedent("""
    import json, sys
    import mlflow, numpy as np
    mlflow.set_tracking_uri(sys.argv[1])
    model = mlflow.pyfunc.load_model("models:/{name}/1")
    mlflow.artifacts.download_artifacts(artifact_uri="models:/{name}/1", dst_path=sys.argv[2])
    out = model.predict(np.zeros((2, 24, 20, 3), np.uint8))
    print(json.dumps({{"shape": list(out.shape), "dtype": str(out.dtype),
                      "module": sys.modules["my_models"].__file__}}))
""").format(name=NAME)


def test_own_model_trains_registers_and_predicts_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          seed_store):
    monkeypatch.delenv("MASKLAB_ROOT", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    project = make_project(tmp_path / "project")
    seed_store(project)
    # Trained in this process; predicted in fresh ones below, where my_models was never imported.
    done = fit_in(project, [*DEBUG_FAST, "model=tiny", "trainer.max_epochs=1", "evaluate_after=false",
                            "registry.register=true", f"registry.name={NAME}"])
    assert done.registered == (NAME, "1")

    # Somewhere without my_models.py: the code must come from the registered package itself.
    elsewhere = tmp_path / "elsewhere"
    write_images(elsewhere / "images")
    uri = f"sqlite:///{project}/experiments/mlflow.db"
    res = run_masklab(["predict", f"model=models:/{NAME}/1", "input=images", "output=masks"], elsewhere,
                      env={"MLFLOW_TRACKING_URI": uri})
    assert res.returncode == 0, res.stderr[-3000:]
    masks = {p.name: np.asarray(Image.open(p)) for p in (elsewhere / "masks").glob("*.png")}
    assert {k: v.shape for k, v in masks.items()} == {"img0.png": (40, 36), "img1.png": (32, 32)}
    assert all(v.max() < 4 for v in masks.values())  # the synthetic data's 4 class ids

    # MLflow's own loader in a fresh process, also without my_models.py: it comes with the model.
    env = {k: v for k, v in os.environ.items() if k not in ("MASKLAB_ROOT", "PYTHONPATH")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    local = tmp_path / "download"
    out = subprocess.run([sys.executable, "-c", PYFUNC_SCRIPT, uri, str(local)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["shape"] == [2, 24, 20] and found["dtype"] == "uint8"
    assert found["module"] != str(project / "my_models.py") and found["module"].endswith("code/my_models.py")

    # What the registry holds: the package names its code, the weights are safetensors, the
    # normalisation came from the model config.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    version = client.get_model_version(NAME, "1")
    assert version.tags["masklab.arch"] == "my_models.TinyNet"
    spec = yaml.safe_load((local / "artifacts" / "package" / "masklab_model.yaml").read_text())
    assert spec["code"] == {"module": "my_models", "path": "code/my_models.py"}
    assert spec["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert (local / "code" / "my_models.py").is_file()  # MLflow's code_paths copy
    assert sorted(p.name for p in (local / "artifacts" / "package").iterdir()) == \
        ["code", "masklab_model.yaml", "weights.safetensors"]


def forged_checkpoint(path: Path, model_spec: dict, state: dict | None = None) -> Path:
    """A checkpoint whose stored model spec is ``model_spec`` (as a file from elsewhere could be)."""
    classes = {"ignore_index": 255, "classes": [{"id": 0, "name": "bg", "color": [0, 0, 0]},
                                                {"id": 1, "name": "fg", "color": [255, 0, 0]}]}
    state_dict = {f"model.{k}": v for k, v in (state or {}).items()}
    torch.save({"state_dict": state_dict, "masklab": {"model": model_spec, "classes": classes}}, path)
    return path


@pytest.mark.parametrize(("spec", "message"), [
    ({"_target_": "os.system", "command": "touch {marker}"}, "module 'os' is not user code"),
    ({"_target_": "subprocess.run", "args": ["touch", "{marker}"]}, "module 'subprocess' is not user code"),
    ({"_target_": "my_models.os.system", "command": "touch {marker}"}, "names system from module"),
    ({"_target_": "not_installed_anywhere.Net"}, "module 'not_installed_anywhere' not found in the project"),
    ({"_target_": "torch.nn.Conv2d", "in_channels": 3}, "module 'torch' not found in the project"),
    ({"_target_": "my_models.TinyNet", "width": {"_target_": "os.system", "command": "touch {marker}"}},
     "key 'model.width._target_' is not supported"),
])
def test_checkpoint_naming_other_code_is_refused(project: Path, spec: dict, message: str):
    from masklab.errors import UserError
    from masklab.evaluation.checkpoint import load_checkpoint_model

    make_project(project)
    marker = project / "called"
    spec = json.loads(json.dumps(spec).replace("{marker}", str(marker)))
    ckpt = forged_checkpoint(project / "forged.ckpt", spec)
    with pytest.raises(UserError, match=message) as err:
        load_checkpoint_model(ckpt)
    assert spec["_target_"] in str(err.value)
    assert not marker.exists()  # refused before anything was called


def test_checkpoint_and_weights_path_of_own_model(project: Path):
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.models import build_model_from_spec

    make_project(project)
    spec = {"_target_": "my_models.TinyNet", "width": 2, "mean": [0.5, 0.5, 0.5]}
    model = build_model_from_spec(spec, 2).eval()
    images = torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8)
    expected = model(images)
    assert expected.shape == (2, 2, 8, 8) and float(model.mean.flatten()[0]) == 127.5

    loaded = load_checkpoint_model(forged_checkpoint(project / "own.ckpt", spec, model.state_dict())).model
    assert torch.equal(loaded(images), expected)
    # weights_path: the same state_dict file starts a new model from these weights.
    torch.save(model.net.state_dict(), project / "net.pt")
    started = build_model_from_spec({**spec, "weights_path": str(project / "net.pt")}, 2).eval()
    assert torch.equal(started(images), expected)


def test_broken_contract_is_named_at_build_time(project: Path):
    from masklab.errors import UserError
    from masklab.models import build_model_from_spec

    make_project(project)
    with pytest.raises(UserError, match=r"gave \(1, 3\); expected logits \(1, 3, 64, 64\)"):
        build_model_from_spec({"_target_": "my_models.flat"}, 3)
    with pytest.raises(UserError, match="my_models.TinyNet' with \\['depth'\\]"):
        build_model_from_spec({"_target_": "my_models.TinyNet", "depth": 3}, 3)


@pytest.mark.parametrize("target", ["os.system", "my_models.TinyNet"])
def test_package_imports_only_its_own_code(project: Path, target: str):
    """A package's spec may name only code shipped in its code/ folder, even where the project
    (the current directory) has a module of that name."""
    from masklab.errors import UserError
    from masklab.inference.package import SPEC_FILE, load_package_dir

    make_project(project)
    package = project / "package"
    package.mkdir()
    classes = {"ignore_index": 255, "classes": [{"id": 0, "name": "bg", "color": [0, 0, 0]}]}
    (package / SPEC_FILE).write_text(yaml.safe_dump({"model": {"_target_": target}, "classes": classes}))
    with pytest.raises(UserError, match=f"'{target}'.*package {package}"):
        load_package_dir(package)
