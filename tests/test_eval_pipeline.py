"""The model's own preprocessing, whatever it is (#26): the eval pipeline is stored with the model, applied for
inference and undone for the logits (padding cropped off, resized back); a step that cannot be undone is refused
when training starts with evaluation.resolution=original."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from masklab.data.classes import ClassTable
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError
from masklab.inference import InputRule, Predictor

from conftest import FAST, fit_in

CLASSES = ClassTable.from_dict({"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "blob"}]})
# (height, width) of the samples: no two alike, so every step of a pipeline has work to do.
SIZES = [(40, 56), (56, 40), (48, 48), (36, 60), (60, 44), (44, 52), (52, 36), (32, 64), (64, 48), (40, 40)]
LONGEST_PAD = [{"_target_": "albumentations.LongestMaxSize", "max_size": 64},
               {"_target_": "albumentations.PadIfNeeded", "min_height": 64, "min_width": 64}]
SMALLEST_PAD = [{"_target_": "albumentations.SmallestMaxSize", "max_size": 32},
                {"_target_": "albumentations.PadIfNeeded", "min_height": 64, "min_width": 64, "position": "top_left"}]
RESIZE = [{"_target_": "albumentations.Resize", "height": 64, "width": 64}]


def blobs(root, sizes=SIZES):
    """A dataset of bright discs on dark noise (6 train, 4 val), each image of its own size."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, CLASSES) as w:
        for k, (h, w_) in enumerate(sizes):
            yy, xx = np.mgrid[:h, :w_]
            cy, cx, r = h * rng.uniform(0.3, 0.7), w_ * rng.uniform(0.3, 0.7), min(h, w_) / 4
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
            image = rng.integers(0, 90, (h, w_, 3)).astype(np.uint8)
            image[disc] = rng.integers(150, 255, (int(disc.sum()), 3))
            w.add(f"s{k}", image, disc.astype(np.uint8), "train" if k < 6 else "val")
        w.commit()
    return root


def hydra_list(nodes: list[dict]) -> str:
    return "[" + ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in n.items()) + "}" for n in nodes) + "]"


@pytest.mark.parametrize("pipeline", [RESIZE, LONGEST_PAD, SMALLEST_PAD], ids=["resize", "longest+pad", "smallest+pad"])
def test_scoring_at_model_resolution_equals_what_validation_logged(project, seed_store, pipeline):
    """The best checkpoint evaluated at model resolution (eval_model_res/val/mIoU) is the val/mIoU validation
    logged for it: the network got the same inputs and was scored on the same (padded: ignored) masks."""
    seed_store(project)
    root = blobs(project / "data" / "blobs")
    steps = hydra_list(pipeline)
    done = fit_in(project, [*FAST, f"data.root={root}", "data.name=blobs", "data.batch_size=4",
                            f"augment.train={steps}", f"augment.eval={steps}", "trainer.max_epochs=2",
                            "trainer.limit_val_batches=1.0", "evaluation.resolution=model",
                            "evaluation.boundary=false"])
    scored = done.evaluations["val"].metrics["eval_model_res/val/mIoU"]
    assert scored == pytest.approx(done.best_value, abs=1e-6), (scored, done.best_value)
    record = json.loads((done.output_dir / "evaluation" / "val_evaluation.json").read_text())
    assert InputRule.from_dict(record["input_rule"]).mode == ("resize" if pipeline is RESIZE else "pipeline")


class Colours(nn.Module):
    """Logits = the pixel's first two channels: class 1 where green beats red."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2].float()


@pytest.mark.parametrize("pipeline", [LONGEST_PAD, SMALLEST_PAD], ids=["longest+pad", "smallest+pad"])
def test_logits_come_back_to_the_image_where_it_lies(pipeline):
    """Red left of a vertical edge, green right of it: at the image's own size the prediction's edge is where the
    image's is (to a pixel of resampling), so the padding was cropped off before resizing back, whatever side it
    was added on."""
    rule = InputRule.from_eval_pipeline(pipeline, ignore_index=255)
    assert rule.mode == "pipeline" and rule.non_invertible == []
    predictor = Predictor(Colours(), rule, "cpu", batch_size=2)
    images, truths = [], []
    for h, w in [(40, 56), (60, 36)]:
        image = np.zeros((h, w, 3), np.uint8)
        image[:, : w // 3, 0] = 200
        image[:, w // 3:, 1] = 200
        images.append(image)
        truths.append((np.arange(w)[None, :] >= w // 3).repeat(h, 0).astype(np.uint8))
    for predicted, truth in zip(predictor.classes(images), truths):
        assert predicted.shape == truth.shape
        assert (predicted != truth).any(axis=0).sum() <= 2, np.nonzero((predicted != truth).any(axis=0))
    x, box = rule.forward(images[0])
    assert x.shape[:2] == (64, 64) and box != (0, 0, 64, 64)  # it was padded: there was something to undo
    again = InputRule.from_dict(rule.to_dict())  # stored with the model and read back
    assert again == rule and np.array_equal(again.forward(images[0])[0], x)


def test_a_step_that_cannot_be_undone_is_refused_before_training(project, seed_store):
    """A centre crop in augment.eval with evaluation.resolution=original: refused when training starts, naming
    the step and the setting to change; nothing is logged. At model resolution it trains, and predicting such a
    model at an image's own size is refused the same way."""
    from mlflow.tracking import MlflowClient

    seed_store(project)
    root = blobs(project / "data" / "blobs")
    crop = hydra_list([*RESIZE, {"_target_": "albumentations.CenterCrop", "height": 32, "width": 32}])
    base = [*FAST, f"data.root={root}", "data.name=blobs", f"augment.train={hydra_list(RESIZE)}",
            f"augment.eval={crop}"]
    with pytest.raises(UserError, match=r"augment.eval has \['CenterCrop'\]: .*cannot be undone.*"
                                        r"evaluation.resolution=model"):
        fit_in(project, base)
    client = MlflowClient(f"sqlite:///{project}/experiments/mlflow.db")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []

    rule = InputRule.from_eval_pipeline([*RESIZE, {"_target_": "albumentations.CenterCrop", "height": 32,
                                                   "width": 32}])
    assert rule.non_invertible == ["CenterCrop"]
    with pytest.raises(UserError, match=r"\['CenterCrop'\]"):
        Predictor(Colours(), rule, "cpu").classes([np.zeros((40, 56, 3), np.uint8)])
    assert Predictor(Colours(), rule, "cpu").logits([np.zeros((40, 56, 3), np.uint8)], "model")[0].shape == (2, 32, 32)
