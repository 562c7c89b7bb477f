"""The instance task: objects through augmentation, training targets, object splitting, detections mapped back
to the image, predictions written and drawn, and the whole path from import to a registered model's predictions."""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DEBUG_FAST, fit_in, in_project

SQUARES = ((2, 2, 8, 8), (10, 4, 20, 14), (22, 22, 30, 30))  # (x0, y0, x1, y1), x1/y1 exclusive


def squares(size: int = 32) -> np.ndarray:
    masks = np.zeros((len(SQUARES), size, size), bool)
    for k, (x0, y0, x1, y1) in enumerate(SQUARES):
        masks[k, y0:y1, x0:x1] = True
    return masks


def object_set(masks: np.ndarray, classes=None, crowd=None):
    from masklab.data.objects import ObjectSet

    n = len(masks)
    return ObjectSet(np.asarray(classes if classes is not None else [1] * n, np.int64), masks,
                     np.asarray(crowd if crowd is not None else [0] * n, np.uint8), [{}] * n)


def test_crop_drops_objects_that_leave_and_reboxes_partial_ones():
    from masklab.tasks.instance_data import augment_objects, boxes_of

    image = np.zeros((32, 32, 3), np.uint8)
    crop = A.Compose([A.Crop(x_min=5, y_min=0, x_max=21, y_max=16)])  # keeps x 5..20, y 0..15
    out_image, masks, labels, crowd = augment_objects(crop, image, object_set(squares(), classes=[1, 2, 3]))
    assert out_image.shape == (16, 16, 3)
    # Square 0 (x 2..7) is cut to x 5..7 -> 0..2; square 1 is inside; square 2 (y >= 22) left the crop.
    assert labels.tolist() == [1, 2] and crowd.tolist() == [0, 0]
    np.testing.assert_array_equal(boxes_of(masks), [[0, 2, 3, 8], [5, 4, 15, 14]])
    assert masks[0].sum() == 3 * 6 and masks[1].sum() == 10 * 10


def test_flip_and_rotation_keep_objects_aligned_with_the_image_and_fill_is_not_an_object():
    from masklab.augment import build_pipeline
    from masklab.tasks.instance_data import augment_objects

    masks = squares()
    image = np.zeros((32, 32, 3), np.uint8)
    image[masks.any(axis=0)] = 255  # the objects are the bright pixels
    nodes = [{"_target_": "albumentations.HorizontalFlip", "p": 1.0},
             {"_target_": "albumentations.Affine", "rotate": [30, 30], "p": 1.0, "interpolation": 0}]
    out_image, out_masks, _, _ = augment_objects(build_pipeline(nodes, seed=0, ignore_index=255), image,
                                                 object_set(masks))
    assert set(np.unique(out_masks)) <= {0, 1}  # the ignore fill of rotated-in corners is not an object pixel
    bright = out_image[..., 0] > 127
    inside = out_masks.any(axis=0)
    assert (bright == inside).mean() > 0.97  # nearest interpolation: the same pixels moved, up to edge rounding
    assert len(out_masks) == 3


def test_dense_target_interiors_boundaries_overlaps_and_crowd():
    from masklab.tasks.instance_module import dense_target

    masks = np.zeros((3, 12, 12), bool)
    masks[0, 0:6, 0:6] = True   # touches the image border on two sides
    masks[1, 0:6, 5:11] = True  # overlaps object 0 in column 5
    masks[2, 8:12, 8:12] = True  # a crowd region
    target = {"masks": torch.from_numpy(masks.astype(np.uint8)), "labels": torch.tensor([1, 2, 1]),
              "iscrowd": torch.tensor([0, 0, 1], dtype=torch.uint8)}
    t = dense_target([target], num_classes=3, boundary_width=1, ignore_index=255)[0].numpy()
    boundary = 3
    assert t[0, 0] == 1 and t[2, 2] == 1          # interior of 0 (the image border does not erode)
    assert t[5, 2] == boundary and t[2, 5] == boundary  # rims inside the image, and the shared column
    assert t[2, 7] == 2 and t[2, 10] == boundary   # interior of 1; x 10 is its rim (x 11 is outside it)
    assert (t[8:12, 8:12] == 255).all()             # crowd: ignored
    assert t[7, 0] == 0                              # background


def test_split_objects_recovers_touching_objects_from_their_target():
    from masklab.tasks.instance_module import dense_target
    from masklab.tasks.instance_predictions import split_objects

    masks = np.zeros((2, 24, 24), bool)
    masks[0, 4:14, 2:12] = True
    masks[1, 4:14, 12:22] = True  # touches object 0 along a whole side
    target = dense_target([{"masks": torch.from_numpy(masks.astype(np.uint8)), "labels": torch.tensor([1, 2]),
                            "iscrowd": torch.zeros(2, dtype=torch.uint8)}], 3, 1, 255)[0]
    logits = torch.nn.functional.one_hot(target, 4).permute(2, 0, 1).float() * 8
    found = split_objects(logits, {"min_area": 1, "min_score": 0.0})
    assert len(found) == 2 and sorted(found.class_ids.tolist()) == [1, 2]
    for k in range(2):
        ious = [(found.masks[k] & m).sum() / (found.masks[k] | m).sum() for m in masks]
        assert max(ious) == 1.0  # the shared rim is split back exactly at the line where they touch
    assert np.all((found.scores > 0.99) & (found.scores <= 1.0))


def test_split_objects_keeps_objects_thinner_than_the_boundary_rim():
    from masklab.tasks.instance_module import dense_target
    from masklab.tasks.instance_predictions import split_objects

    masks = np.zeros((2, 24, 24), bool)
    masks[0, 4:16, 4:16] = True
    masks[1, 18:21, 18:21] = True  # 3x3: a 2 px rim leaves it no interior, only boundary
    target = dense_target([{"masks": torch.from_numpy(masks.astype(np.uint8)), "labels": torch.tensor([1, 1]),
                            "iscrowd": torch.zeros(2, dtype=torch.uint8)}], 2, 2, 255)[0]
    assert not (target[18:21, 18:21] == 1).any()
    found = split_objects(torch.nn.functional.one_hot(target, 3).permute(2, 0, 1).float() * 8,
                          {"min_area": 1, "min_score": 0.0})
    assert sorted(int(m.sum()) for m in found.masks) == [9, 144]


def test_interior_ids_equal_a_per_object_erosion_that_keeps_the_border():
    from scipy import ndimage

    from masklab.tasks.instance_module import interior_ids, window_max

    rng = np.random.default_rng(0)
    for width in (1, 2, 3):
        ids = ndimage.label(rng.random((40, 33)) > 0.35)[0]  # non-overlapping objects, many at the border
        things = np.stack([ids == k for k in range(1, ids.max() + 1)])
        expected = np.zeros(ids.shape, np.int64)
        for k, m in enumerate(things, 1):
            expected[ndimage.binary_erosion(m, np.ones((2 * width + 1,) * 2), border_value=1)] = k
        got = interior_ids(torch.from_numpy(things).float(), width).numpy()
        assert np.array_equal(got, expected)
        overlapping = torch.from_numpy(np.concatenate([things, things[:1]])).float()  # the general path
        assert np.array_equal(interior_ids(overlapping, width).numpy() > 0, expected > 0)
        values = torch.from_numpy(rng.random((9, 7)))
        assert torch.equal(window_max(values, width),
                           torch.nn.functional.max_pool2d(values[None], 2 * width + 1, 1, width)[0])


def test_prediction_id_map_draws_the_most_confident_object_on_top():
    from masklab.tasks.instance_predictions import InstancePrediction

    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True
    masks[1, :3, :3] = True
    pred = InstancePrediction.of(masks, np.array([1, 2]), np.array([0.2, 0.9]))
    assert pred.scores.tolist() == pytest.approx([0.9, 0.2]) and pred.class_ids.tolist() == [2, 1]
    ids = pred.id_map()
    assert ids.dtype == np.uint16 and ids[0, 0] == 1 and ids[2, 2] == 1 and ids[3, 3] == 0
    assert pred.class_map()[0, 0] == 2


class FixedDetector(torch.nn.Module):
    """A 'detection model' that finds one object: the left half of whatever image it gets."""

    output_kind = "detections"

    def forward(self, images):
        out = []
        for im in images:
            h, w = im.shape[-2:]
            masks = torch.zeros(1, 1, h, w)
            masks[..., : w // 2] = 1.0
            out.append({"boxes": torch.tensor([[0.0, 0.0, w / 2, h]]), "labels": torch.tensor([1]),
                        "scores": torch.tensor([0.8]), "masks": masks})
        return out


def test_detections_are_mapped_back_to_each_image_size():
    from masklab.inference.engine import Predictor
    from masklab.inference.rule import InputRule
    from masklab.tasks import get_task

    images = [np.zeros((40, 60, 3), np.uint8), np.zeros((30, 30, 3), np.uint8)]
    for rule in (InputRule("resize", 32, 32), InputRule("pad")):
        found = get_task("instance").predict(Predictor(FixedDetector(), rule, "cpu", 2), images)
        for pred, image in zip(found, images):
            h, w = image.shape[:2]
            assert pred.masks.shape == (1, h, w) and pred.masks[0, :, : w // 2].all()
            assert not pred.masks[0, :, w // 2 + 1:].any()


@pytest.fixture
def instance_pngs(tmp_path):
    """A folder of synthetic images and their 16-bit instance-id PNGs (the synthetic generator's objects)."""
    from masklab.data.synth import synth_sample

    images, ids = tmp_path / "src" / "images", tmp_path / "src" / "instances"
    images.mkdir(parents=True)
    ids.mkdir()
    for i in range(16):
        image, _, instances, classes = synth_sample(i, 0, 1, 48, max_objects=4)
        Image.fromarray(image).save(images / f"s{i:02d}.png")
        Image.fromarray(instances.astype(np.uint16)).save(ids / f"s{i:02d}.png")
    return images, ids


def test_import_train_evaluate_register_predict(project, seed_store, instance_pngs, tmp_path, cli):
    """The CLI path on instance data: instance-id PNGs imported, a bottom-up model trained and registered,
    predicting from the registry 16-bit id maps plus COCO results identical to its checkpoint's."""
    from pycocotools import mask as coco_mask

    from masklab.data.images import read_image
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference import Predictor
    from masklab.inference.rule import rule_from_meta
    from masklab.tasks import get_task

    images, ids = instance_pngs
    seed_store(project)
    res = cli("data", "import", "format=instance_png", f"images={images}", f"masks={ids}", "name=shapes",
              "class_name=shape", "fractions={train: 0.5, val: 0.5, test: 0.0}")
    assert res.returncode == 0, res.stderr[-3000:]
    done = fit_in(project, ["task=instance", "model=bottom_up", *DEBUG_FAST, "data=shapes", "data.image_size=48",
                            "registry.register=true", "registry.name=shapes"])
    assert done.monitor == "val/mask_AP" and done.registered == ("shapes", "1")
    metrics = done.evaluations["val"].metrics
    assert {"eval/val/mask_AP", "eval/val/boundary_AP", "eval/val/PQ", "eval/val/mIoU"} <= set(metrics)
    from masklab.tasks.instance import InstanceTask  # the names a gate may take (checked at promote) are these

    assert [m for m in metrics if not InstanceTask.logs_metric(m.split("/", 2)[-1])] == []
    table = done.evaluations["val"].per_sample
    assert {"id", "n_gt", "n_pred", "count_error", "mask_AP", "matches"} <= set(table.columns)

    from masklab.tasks import gate_metric
    from masklab.tracking.registry import Gate, Registry

    row = Registry(str(done.tracking_uri)).list_versions("shapes", Gate(), gate_metric)[0]
    assert row["gate metric"] == "mask_AP"  # the promotion gate compares mask AP for instance models

    out = tmp_path / "pred"
    res = cli("predict", "model=models:/shapes/1", f"input={images}", f"output={out}", "overlay=true")
    assert res.returncode == 0, res.stderr[-3000:]
    written = Image.open(out / "s00.png")
    assert written.mode.startswith("I;16") and written.size == (48, 48)
    results = json.loads((out / "predictions_coco.json").read_text())
    with pytest.MonkeyPatch.context() as patch:  # the checkpoint the version was packaged from, read in-process
        in_project(patch, project)
        loaded = load_checkpoint_model(done.best_checkpoint)
        expected = get_task("instance").predict(Predictor(loaded.model, rule_from_meta(loaded.meta), "cpu", 4),
                                                [read_image(images / "s00.png")])[0]
    assert np.array_equal(np.asarray(written), expected.id_map())
    mine = [r for r in results if r["image_id"] == "s00"]
    assert len(mine) == len(expected)
    for r, mask, score in zip(mine, expected.masks, expected.scores):
        decoded = coco_mask.decode({"size": r["segmentation"]["size"],
                                    "counts": r["segmentation"]["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, mask) and r["score"] == pytest.approx(float(score))
    # The overlay: the input image, tinted and outlined only where the predicted objects are.
    with Image.open(out / "s00_overlay.png") as written_overlay:
        overlay = np.asarray(written_overlay.convert("RGB"))
    source = read_image(images / "s00.png")
    assert overlay.shape == source.shape == (48, 48, 3)
    covered = np.asarray(expected.masks, bool).reshape(-1, 48, 48).any(axis=0)
    assert np.array_equal(overlay[~covered], source[~covered])
    if covered.any():  # (a model trained this briefly may find nothing in s00: then the overlay is the image)
        assert (overlay[covered] != source[covered]).any(axis=-1).mean() >= 0.9


def test_maskrcnn_trains_evaluates_and_packages(project, seed_store, tmp_path):
    """A MobileNetV3 Mask R-CNN for a few steps on 64 px synthetic objects: its checkpoint is evaluated with the
    instance metrics, and its package (no mean/std buffers: torchvision normalises) rebuilds the same detections."""
    from masklab.data.images import read_image
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference import Predictor
    from masklab.inference.package import load_package_dir
    from masklab.inference.rule import rule_from_meta
    from masklab.tasks import get_task
    from masklab.tracking.packaging import write_package

    seed_store(project)
    done = fit_in(project, ["task=instance", "model=maskrcnn_mobilenet", *DEBUG_FAST, "data.image_size=64",
                            "data.synth.count=12", "model.box_score_thresh=0.0"])
    assert done.monitor == "val/mask_AP" and {"eval/val/mask_AP", "eval/val/PQ"} <= set(done.evaluations["val"].metrics)
    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        loaded = load_checkpoint_model(done.best_checkpoint)
        spec = write_package(done.best_checkpoint, tmp_path / "package")
        package = load_package_dir(tmp_path / "package")
    assert spec["task"] == "instance" and "code" not in spec and "mean" not in spec["normalization"]
    image = read_image(next((project / "data" / "synthetic" / "images").glob("*.png")))
    task = get_task("instance")
    a = task.predict(Predictor(loaded.model, rule_from_meta(loaded.meta), "cpu", 1), [image])[0]
    b = task.predict(Predictor(package.model, package.input_rule, "cpu", 1), [image])[0]
    assert len(a) == len(b) and np.array_equal(a.masks, b.masks) and np.allclose(a.scores, b.scores)

    # Active learning on an instance model: the same selection path, its class probabilities from the detections
    # and, for hybrid, Mask R-CNN's backbone features.
    from masklab.active.selection import make_strategy
    from masklab.data.manifest import load_dataset
    from masklab.workflows.active_learning import select
    from masklab.workflows.simulation import simulation_view

    dataset = load_dataset(project / "data" / "synthetic")
    train = sorted(s.id for s in dataset.labeled("train"))
    view = simulation_view(dataset, set(train[:2]))
    for name in ("entropy", "hybrid"):
        found = select(view, package, make_strategy(name, seed=0), 2, cache_dir=tmp_path / "cache", device="cpu",
                       batch_size=2)
        assert len(found.picked) == 2 and set(found.picked) <= set(train[2:]), name
        assert len(found.table) == len(train) - 2 and found.table["score"].between(0, 1).all(), name


@pytest.mark.parametrize("variant", ["resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_fpn"])
def test_every_maskrcnn_variant_builds_from_scratch_and_detects(variant, tmp_path):
    """Each Mask R-CNN config: no weights read or downloaded, BatchNorm that trains (not frozen), image size limits
    from the config, a local weights file loaded back exactly, and detections at the input's size."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from masklab.models.instance import build_maskrcnn

    torch.manual_seed(0)
    model = build_maskrcnn(3, variant, min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 64, 128))
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.net.transform.min_size == (64,) and model.net.transform.max_size == 64
    sizes = model.net.rpn.anchor_generator.sizes  # the configured anchors, one tuple per feature level
    per_level = ((8, 16, 32, 64, 128),) * 3 if variant == "mobilenet_v3_fpn" else ((8,), (16,), (32,), (64,), (128,))
    assert sizes == per_level
    weights = tmp_path / "weights.pth"
    torch.save(model.net.state_dict(), weights)  # a bare torchvision state_dict, as torchvision ships them
    again = build_maskrcnn(3, variant, min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 64, 128),
                           weights_path=str(weights))
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        found = model(torch.zeros(1, 3, 40, 56, dtype=torch.uint8))[0]
    assert found["masks"].shape[-2:] == (40, 56) and set(found) >= {"boxes", "labels", "scores", "masks"}
