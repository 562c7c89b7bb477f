"""`masklab export`: ONNX and TorchScript packages of a trained model, their parity proof checked against a direct
onnxruntime run, `masklab predict` on the exported package, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST, command_in, exits_as_user_error, fit_in


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A debug=fast UNet (unet_tiny) trained on the synthetic shapes, its project and a folder of test images of
    mixed sizes (larger than the network's input and non-square)."""
    from PIL import Image

    project = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context():
        done = fit_in(project, [*FAST, "evaluate_after=false"])
    images = project / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(32, 32), (48, 80), (100, 60), (65, 97)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    return project, done.best_checkpoint, images


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_writes_a_package_whose_parity_report_matches_a_direct_comparison(trained, fmt):
    import torch.nn.functional as F

    from masklab.data.images import read_image
    from masklab.inference.package import load_package_dir
    from masklab.tracking.model_ref import package_from_checkpoint

    project, ckpt, images = trained
    out = project / f"exported-{fmt}"
    command_in(project, "export", [f"model_ref={ckpt}", f"format={fmt}", f"output={out}",
                                   f"parity_images={images}"])
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["images"] == 4 and report["max_abs_logit_diff"] <= 1e-3
    assert {tuple(s) for s in report["sizes"]} == {(32, 32), (48, 80), (100, 60), (65, 97)}
    # A direct comparison, not through masklab's Predictor: the exported file run by onnxruntime (or torch.jit) on
    # the (1, H, W, 3) uint8 image the input rule makes, logits cropped and resized back by hand.
    torch_model = package_from_checkpoint(ckpt)
    rule = torch_model.input_rule
    worst, differing, pixels = 0.0, 0, 0
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        run = lambda x: torch.from_numpy(session.run(["logits"], {"images": x})[0])  # noqa: E731
    else:
        script = torch.jit.load(str(out / "model.ts"))
        run = lambda x: script(torch.from_numpy(x))  # noqa: E731
    for path in sorted(images.iterdir()):
        image = read_image(path)
        x, (top, left, bottom, right) = rule.forward(image)
        with torch.no_grad():
            ref = torch_model.model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]).float()
            got = run(np.ascontiguousarray(x)[None]).float()
        back = [F.interpolate(t[..., top:bottom, left:right], size=image.shape[:2], mode="bilinear",
                              align_corners=False)[0] for t in (ref, got)]
        worst = max(worst, float((back[0] - back[1]).abs().max()))
        differing += int((back[0].argmax(0) != back[1].argmax(0)).sum())
        pixels += image.shape[0] * image.shape[1]
    assert report["max_abs_logit_diff"] == pytest.approx(worst, abs=1e-6)
    assert report["pixels"] == pixels and report["pixels_differing"] == differing
    # The package serves without the training code's weights: its spec names the file, the rule and the classes.
    package = load_package_dir(out)
    assert type(package.model).__name__ == "ExportedNetwork" and package.input_rule == rule
    assert package.class_table.names == torch_model.class_table.names


def test_predict_on_the_exported_package_gives_the_torch_models_masks(trained, capsys):
    from PIL import Image

    project, ckpt, images = trained
    out = project / "exported-for-predict"
    command_in(project, "export", [f"model_ref={ckpt}", f"output={out}", f"parity_images={images}"])
    command_in(project, "predict", [f"model_ref={out}", f"input={images}", f"output={project / 'by-onnx'}"])
    command_in(project, "predict", [f"model_ref={ckpt}", f"input={images}", f"output={project / 'by-torch'}"])
    masks = sorted((project / "by-onnx").glob("*.png"))
    assert len(masks) == 4
    for mask in masks:
        a = np.asarray(Image.open(mask))
        b = np.asarray(Image.open(project / "by-torch" / mask.name))
        assert a.shape == b.shape and (a == b).mean() >= 0.9999


def test_export_refusals_are_one_line_errors(trained, capsys):
    from masklab.inference.exported import export_network
    from masklab.models import build_model

    project, ckpt, images = trained
    line = exits_as_user_error("export", lambda: command_in(
        project, "export", [f"model_ref={ckpt}", "format=tflite", f"output={project / 'x'}"]), capsys)
    assert "format='tflite': expected one of onnx, torchscript" in line
    (project / "full").mkdir()
    (project / "full" / "keep.txt").write_text("mine")
    line = exits_as_user_error("export", lambda: command_in(
        project, "export", [f"model_ref={ckpt}", f"output={project / 'full'}", f"parity_images={images}"]), capsys)
    assert "is not empty; pass overwrite=true" in line and (project / "full" / "keep.txt").read_text() == "mine"
    # Outside the tolerance: the numbers, and nothing written.
    line = exits_as_user_error("export", lambda: command_in(
        project, "export", [f"model_ref={ckpt}", f"output={project / 'strict'}", f"parity_images={images}",
                            "logit_tolerance=0", "pixel_agreement=1.0"]), capsys)
    assert "outside the tolerance, nothing written" in line and "largest logit difference" in line, line
    assert not (project / "strict").exists()
    # An operator the legacy ONNX exporter cannot express with dynamic sizes is named.
    with pytest.raises(Exception, match="adaptive_avg_pool2d"):
        export_network(build_model(2, arch="UPerNet", encoder="resnet18").eval(), project / "u.onnx", "onnx")


def test_exported_network_rounds_padded_float_pixels_back_to_uint8(trained, tmp_path: Path):
    """Padding makes float pixels (edge-replicated whole values): the exported network gets them as uint8 again."""
    from masklab.inference.exported import ExportedNetwork, export_network
    from masklab.tracking.model_ref import package_from_checkpoint

    _, ckpt, _ = trained
    model = package_from_checkpoint(ckpt).model
    net = ExportedNetwork(export_network(model, tmp_path / "m.onnx", "onnx"))
    x = torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(net(x.float()), model(x), atol=1e-4)


def test_a_registered_version_gets_its_export_attached_and_serves_it_by_engine(tmp_path, seed_store, capsys):
    """`masklab export model=models:/N/1` logs the package to the version's run and tags the version; `masklab
    predict model=models:/N/1 engine=onnx` then serves the ONNX file (read into memory from the registry's
    download) and gives the torch model's masks; a version without that export names the command that makes one."""
    from mlflow.tracking import MlflowClient
    from PIL import Image

    project = tmp_path
    seed_store(project)
    fit_in(project, [*FAST, "evaluate_after=false", "registry.register=true", "registry.name=shapes"])
    images = project / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate([(40, 56), (72, 40)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    line = exits_as_user_error("predict", lambda: command_in(
        project, "predict", ["model_ref=models:/shapes/1", "engine=onnx", f"input={images}",
                             f"output={project / 'none'}"]), capsys)
    assert "has no onnx export; attach one with: masklab export model=models:/shapes/1 format=onnx" in line
    command_in(project, "export", ["model_ref=models:/shapes/1", f"output={project / 'deploy'}",
                                   f"parity_images={images}"])
    client = MlflowClient(f"sqlite:///{project}/experiments/mlflow.db")
    tags = client.get_model_version("shapes", "1").tags
    assert tags["masklab.export.onnx"].startswith("runs:/") and "onnx parity on 2 images" in \
        tags["masklab.export.onnx.parity"]
    for engine in ("onnx", "torch"):
        command_in(project, "predict", ["model_ref=models:/shapes/1", f"engine={engine}", f"input={images}",
                                        f"output={project / engine}"])
    for mask in sorted((project / "onnx").glob("*.png")):
        a, b = (np.asarray(Image.open(project / engine / mask.name)) for engine in ("onnx", "torch"))
        assert a.shape == b.shape and (a == b).mean() >= 0.9999
