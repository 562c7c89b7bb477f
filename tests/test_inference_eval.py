"""One inference path: evaluation scores, at each image's original size, exactly what predict deploys.

Models with known outputs on images of mixed sizes are scored by masklab and by a numpy reference
at full resolution (the boundary reference is Cheng et al.'s erosion code from
test_metrics_boundary); the saved prediction PNGs must equal ``predict``'s files pixel for pixel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_metrics_boundary import ref_dataset
from torch import nn

from masklab.data.classes import ClassInfo, ClassTable
from masklab.data.images import read_mask
from masklab.data.manifest import load_dataset
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError
from masklab.inference import InputRule, Predictor, resolve_device
from masklab.inference.folder import predict_folder
from masklab.inference.package import Package
from masklab.tasks import get_task
from masklab.workflows.evaluation import evaluate_checkpoint, evaluate_model

SIZES = [(40, 60), (77, 50), (96, 96), (31, 45), (64, 33)]
TABLE = ClassTable((ClassInfo(0, "red", (255, 0, 0)), ClassInfo(1, "green", (0, 255, 0)),
                    ClassInfo(2, "blue", (0, 0, 255))), ignore_index=255)


class ChannelArgmax(nn.Module):
    """Logits = the pixel's RGB values: the prediction is its brightest channel, pixel by pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


class MeanColour(nn.Module):
    """Logits constant over the image: its mean RGB; the prediction is one class per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:]).contiguous()


def make_dataset(root: Path, ignore: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Val images of mixed sizes whose brightest channel mostly (not always) matches the mask."""
    rng = np.random.default_rng(7)
    images, masks = [], []
    with DatasetWriter(root, TABLE) as writer:
        for i, (h, w) in enumerate(SIZES):
            mask = np.kron(rng.integers(0, 3, (-(-h // 8), -(-w // 8))), np.ones((8, 8), np.int64))[:h, :w]
            image = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
            agree = rng.random((h, w)) < 0.8
            label = np.where(agree, mask, rng.integers(0, 3, (h, w)))
            np.put_along_axis(image, label[..., None], 200 + rng.integers(0, 50, (h, w, 1)), axis=2)
            mask = mask.astype(np.uint8)
            if ignore:
                mask[: h // 5, : w // 4] = 255
            writer.add(f"img{i}", image, mask, "val")
            images.append(image)
            masks.append(mask)
        writer.add("train0", images[0], masks[0], "train")
        writer.commit()
    return images, masks


def reference(preds: list[np.ndarray], masks: list[np.ndarray], c: int = 3) -> dict[str, float | np.ndarray]:
    """Pooled IoU/Dice/accuracy and per-image mIoU at full resolution, ignoring 255."""
    cm = np.zeros((c, c), np.int64)
    per_image = []
    for p, t in zip(preds, masks):
        valid = t != 255
        m = np.bincount(t[valid].astype(np.int64) * c + p[valid], minlength=c * c).reshape(c, c)
        cm += m
        tp, fp, fn = np.diag(m), m.sum(0) - np.diag(m), m.sum(1) - np.diag(m)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_image.append(np.nanmean(np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)))
    tp, fp, fn = np.diag(cm), cm.sum(0) - np.diag(cm), cm.sum(1) - np.diag(cm)
    iou = tp / (tp + fp + fn)
    return {"iou": iou, "mIoU": float(np.mean(iou)), "mDice": float(np.mean(2 * tp / (2 * tp + fp + fn))),
            "pixel_acc": float(tp.sum() / cm.sum()), "per_image_miou": np.array(per_image)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "mixed"
    images, masks = make_dataset(root)
    return load_dataset(root), images, masks


def test_pixelwise_model_scores_equal_the_full_resolution_reference(data, tmp_path):
    dataset, images, masks = data
    result = evaluate_model(ChannelArgmax(), TABLE, "channel argmax", dataset, "val", tmp_path,
                            InputRule("pad", multiple=32), options={"device": "cpu", "batch_size": 2})
    preds = [im.argmax(axis=2) for im in images]
    ref = reference(preds, masks)
    assert result.metrics["eval/val/mIoU"] == pytest.approx(ref["mIoU"], rel=1e-12)
    assert result.metrics["eval/val/mDice"] == pytest.approx(ref["mDice"], rel=1e-12)
    assert result.metrics["eval/val/pixel_acc"] == pytest.approx(ref["pixel_acc"], rel=1e-12)
    np.testing.assert_allclose(result.per_class["IoU"], ref["iou"], rtol=1e-12)
    # Boundary IoU with each image's own band width (2% of its own diagonal), pooled over images.
    boundary = ref_dataset(list(zip(preds, masks)), 3, 255, 0.02)
    assert result.metrics["eval/val/mBoundaryIoU"] == pytest.approx(boundary["mBoundaryIoU"], rel=1e-12)
    # The per-sample table: one row per image in dataset order, each at its own size.
    table = result.per_sample
    assert list(table["id"]) == [f"img{i}" for i in range(len(SIZES))]
    np.testing.assert_allclose(table["mIoU"], ref["per_image_miou"], rtol=1e-12)
    np.testing.assert_allclose(table["boundary_mIoU"], boundary["per_image_miou"], rtol=1e-12)
    assert set(table["resolution"]) == {"original"}
    assert [int(a) for a in table["true_area/red"]] == [int((m == 0).sum()) for m in masks]
    # The saved predictions are the original-size argmax.
    for i, pred in enumerate(preds):
        saved = read_mask(tmp_path / "evaluation" / "val_pred" / f"img{i}.png")
        assert np.array_equal(saved, pred)


def test_ignored_pixels_are_not_scored_at_any_size(tmp_path):
    root = tmp_path / "ignored"
    images, masks = make_dataset(root, ignore=True)
    result = evaluate_model(ChannelArgmax(), TABLE, "channel argmax", load_dataset(root), "val", tmp_path,
                            InputRule("pad", multiple=32), options={"device": "cpu", "boundary": False})
    ref = reference([im.argmax(axis=2) for im in images], masks)
    assert result.metrics["eval/val/mIoU"] == pytest.approx(ref["mIoU"], rel=1e-12)
    assert result.metrics["eval/val/pixel_acc"] == pytest.approx(ref["pixel_acc"], rel=1e-12)


@pytest.mark.parametrize("convention", ["exclude", "raw", "hide"])
def test_boundary_iou_next_to_void_follows_the_convention_and_says_which(convention, tmp_path, capsys):
    """An evaluation on masks with void scores Boundary IoU as the reference does under the chosen convention;
    the printed title and the evaluation record name it."""
    root = tmp_path / "void"
    images, masks = make_dataset(root, ignore=True)
    options = {"device": "cpu", "boundary_ignore": convention}
    result = evaluate_model(ChannelArgmax(), TABLE, "channel argmax", load_dataset(root), "val", tmp_path,
                            InputRule("pad", multiple=32), options=options)
    preds = [im.argmax(axis=2) for im in images]
    boundary = ref_dataset(list(zip(preds, masks)), 3, 255, 0.02, convention)
    assert result.metrics["eval/val/mBoundaryIoU"] == pytest.approx(boundary["mBoundaryIoU"], rel=1e-12)
    np.testing.assert_allclose(result.per_sample["boundary_mIoU"], boundary["per_image_miou"], rtol=1e-12)
    assert f"Boundary IoU next to void: {convention}" in " ".join(capsys.readouterr().out.split())
    record = json.loads((tmp_path / "evaluation" / "val_evaluation.json").read_text())
    assert record["boundary_ignore"] == convention


def test_resize_rule_scores_each_image_at_its_own_size(data, tmp_path):
    """Resized in, logits resized back: a per-image constant stays constant at the original size."""
    dataset, images, masks = data
    rule = InputRule("resize", height=32, width=32)
    result = evaluate_model(MeanColour(), TABLE, "mean colour", dataset, "val", tmp_path, rule,
                            options={"device": "cpu", "batch_size": 3})
    preds = [np.full(m.shape, int(rule.resize_image(im).reshape(-1, 3).mean(0).argmax())) for im, m in
             zip(images, masks)]
    ref = reference(preds, masks)
    assert result.metrics["eval/val/mIoU"] == pytest.approx(ref["mIoU"], rel=1e-12)
    np.testing.assert_allclose(result.per_sample["mIoU"], ref["per_image_miou"], rtol=1e-12)


def test_model_resolution_is_opt_in_and_labelled(data, tmp_path):
    dataset, images, masks = data
    rule = InputRule("resize", height=24, width=24)
    result = evaluate_model(ChannelArgmax(), TABLE, "channel argmax", dataset, "val", tmp_path, rule,
                            options={"device": "cpu", "resolution": "model"})
    assert set(result.metrics) and all(k.startswith("eval_model_res/val/") for k in result.metrics)
    assert set(result.per_sample["resolution"]) == {"model"}
    small_masks = [rule.resize_mask(m) for m in masks]
    ref = reference([rule.resize_image(im).argmax(axis=2) for im in images], small_masks)
    assert result.metrics["eval_model_res/val/mIoU"] == pytest.approx(ref["mIoU"], rel=1e-12)
    record = json.loads((tmp_path / "evaluation" / "val_evaluation.json").read_text())
    assert record["resolution"] == "model" and record["input_rule"]["height"] == 24
    original = evaluate_model(ChannelArgmax(), TABLE, "channel argmax", dataset, "val", tmp_path / "o", rule,
                              options={"device": "cpu"})
    assert original.metrics["eval/val/mIoU"] != pytest.approx(result.metrics["eval_model_res/val/mIoU"], abs=1e-3)
    with pytest.raises(UserError, match=r"evaluation.resolution=network: expected one of \['original', 'model'\]"):
        evaluate_model(ChannelArgmax(), TABLE, "x", dataset, "val", tmp_path, rule, options={"resolution": "network"})


def test_saved_predictions_equal_predict_pixel_for_pixel(data, tmp_path):
    """A real (random) smp network under a resize rule: evaluation's PNGs are predict's PNGs."""
    from masklab.models import build_model

    dataset, _, _ = data
    torch.manual_seed(0)
    model = build_model(num_classes=3, arch="Unet", encoder="resnet18").eval()
    rule = InputRule("resize", height=64, width=64)
    evaluate_model(model, TABLE, "unet", dataset, "val", tmp_path, rule, options={"device": "cpu", "batch_size": 4})
    package = Package(model, TABLE, rule, {"task": "semantic"})
    files = sorted((dataset.root / "images").glob("img*.png"))
    written, index = predict_folder(get_task("semantic"), package, files, dataset.root / "images",
                                    tmp_path / "predicted", device="cpu", batch_size=3)
    assert len(written) == len(SIZES) and index is None  # a class map needs no index
    for path in written:
        predicted = np.asarray(Image.open(path))
        scored = np.asarray(Image.open(tmp_path / "evaluation" / "val_pred" / path.name))
        assert predicted.shape == scored.shape == read_mask(dataset.root / "masks" / path.name).shape
        assert np.array_equal(predicted, scored), path.name


def checkpoint(path: Path, rule: InputRule) -> Path:
    """A masklab checkpoint of a random smp network whose metadata stores ``rule``."""
    from masklab.models.factory import build_model_from_spec

    spec = {"_target_": "masklab.models.build_model", "arch": "FPN", "encoder": "resnet18"}
    torch.manual_seed(1)
    model = build_model_from_spec(dict(spec), 3)
    meta = {"task": "semantic", "model": spec, "classes": TABLE.to_dict(), "input_rule": rule.to_dict(),
            "dataset": {"name": "mixed"}}
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "masklab": meta}, path)
    return path


def test_checkpoint_is_scored_with_its_own_preprocessing_unless_overridden(data, tmp_path):
    dataset, _, _ = data
    ckpt = checkpoint(tmp_path / "model.ckpt", InputRule("resize", height=64, width=96))
    evaluate_checkpoint(ckpt, dataset, "val", tmp_path / "own", options={"device": "cpu"})
    record = json.loads((tmp_path / "own" / "evaluation" / "val_evaluation.json").read_text())
    assert record["input_rule"] == InputRule("resize", height=64, width=96).to_dict()
    assert record["input_rule_source"] == "model" and record["resolution"] == "original"
    assert record["dataset"] == "mixed" and record["manifest_sha256"] == dataset.manifest_hash
    assert record["model"] == f"checkpoint:{ckpt}" and record["platform"]["torch"] == torch.__version__
    override = InputRule("resize", height=32, width=32)
    evaluate_checkpoint(ckpt, dataset, "val", tmp_path / "over", options={"device": "cpu"}, rule=override)
    record = json.loads((tmp_path / "over" / "evaluation" / "val_evaluation.json").read_text())
    assert record["input_rule"]["height"] == 32 and record["input_rule_source"] == "config"


def test_device_choice():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="device=gpu0: not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="device=cuda: this machine has no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="batch_size=0: expected a positive number"):
        Predictor(ChannelArgmax(), InputRule("pad"), "cpu", 0)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("dilation_ratio", -0.1, r"evaluation.dilation_ratio=-0.1: expected a number from 0.0 to 1.0"),
    ("low_confidence", "high", r"evaluation.low_confidence=high: expected a number from 0.0 to 1.0"),
    ("batch_size", 0, r"evaluation.batch_size=0: expected a positive number of images"),
    ("preprocess", "training", r"evaluation.preprocess=training: expected one of \['model', 'config'\]"),
    ("boundary_ignore", "none", r"evaluation.boundary_ignore=none: expected one of \['exclude', 'raw', 'hide'\]"),
])
def test_bad_evaluation_options_are_user_errors(key, value, message):
    from masklab.workflows.evaluation import evaluation_options

    with pytest.raises(UserError, match=message):
        evaluation_options({key: value})


def test_batches_of_mixed_sizes_equal_one_image_at_a_time(data):
    _, images, _ = data
    for rule in (InputRule("resize", height=32, width=32), InputRule("pad", multiple=16, tile=64, overlap=8)):
        batched = Predictor(MeanColour(), rule, "cpu", 4).logits(images)
        single = [Predictor(MeanColour(), rule, "cpu", 1).logits([im])[0] for im in images]
        for a, b, im in zip(batched, single, images):
            assert a.shape[-2:] == im.shape[:2]
            assert torch.allclose(a, b, atol=1e-4) and not math.isnan(float(a.sum()))
