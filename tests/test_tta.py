"""Test-time augmentation: each view's logits are brought back to the image's frame before they are averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from masklab.errors import UserError
from masklab.inference.engine import Predictor, tta_views
from masklab.inference.rule import InputRule


class Identity(nn.Module):
    """Logits = the input's channels as they are: a model whose output is a known function of each pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def ramps(h: int = 70, w: int = 90) -> np.ndarray:
    """Red grows left to right, green top to bottom, blue noise: no flip leaves it unchanged."""
    yy, xx = np.mgrid[0:h, 0:w]
    blue = np.random.default_rng(0).integers(0, 255, (h, w))
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), blue], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("rule", [InputRule("pad", multiple=32, tile=None), InputRule("pad", multiple=32, tile=48,
                                                                                          overlap=8)],
                         ids=["pad", "tiles"])
def test_flip_views_are_undone_exactly(rule):
    image = ramps()
    plain = Predictor(Identity(), rule, "cpu").logits([image])[0]
    flipped = Predictor(Identity(), rule, "cpu", tta="flip").logits([image])[0]
    # the function itself (tiles: blended sums divided by their weights, up to float rounding)
    assert torch.allclose(plain, torch.from_numpy(image).permute(2, 0, 1).float(), atol=1e-3)
    assert torch.allclose(flipped, plain, atol=1e-4)  # each of the 4 views undone (not undone: red's mean, 127.5)


def test_flips_under_a_resize_rule_and_scales_come_back_to_the_image_frame():
    image = ramps()
    rule = InputRule("resize", height=64, width=64)
    plain = Predictor(Identity(), rule, "cpu").logits([image])[0]
    flipped = Predictor(Identity(), rule, "cpu", tta="flip").logits([image])[0]
    assert torch.allclose(flipped, plain, atol=0.5)  # bilinear resizes commute with flips up to rounding
    scaled = Predictor(Identity(), InputRule("pad", multiple=32, tile=None), "cpu", tta="flip+scales")
    found = scaled.logits([image])[0]
    assert found.shape == (3, 70, 90)
    # the ramps, up to 3 of 255 (away from the borders, where bilinear interpolation clamps)
    assert float((found[:2, 3:-3, 3:-3] - plain[:2, 3:-3, 3:-3]).abs().max()) < 3.0
    assert len(scaled.tta) == 12


def test_tta_choices_and_detection_models_are_refused_in_one_line():
    with pytest.raises(UserError, match="tta='rotate': expected one of none, flip, flip\\+scales"):
        tta_views("rotate")

    class Detector(nn.Module):
        output_kind = "detections"

    with pytest.raises(UserError, match="tta=flip: test-time augmentation averages dense logits"):
        Predictor(Detector(), InputRule("pad", multiple=32), "cpu", tta="flip").detections([ramps()])


def test_an_evaluation_with_tta_records_it_is_keyed_apart_and_travels_with_the_package(project, seed_store):
    import json

    from masklab.evaluation.record import EvaluationRecord

    from conftest import FAST, fit_in

    seed_store(project)
    done = fit_in(project, [*FAST, "evaluation.tta=flip", "registry.register=true", "registry.name=flipped"])
    record = json.loads((done.output_dir / "evaluation" / "val_evaluation.json").read_text())
    assert record["tta"] == "flip"
    fields = {k: v for k, v in record.items() if k in EvaluationRecord.__dataclass_fields__}
    keyed = EvaluationRecord(**fields)
    plain = EvaluationRecord(**{**fields, "tta": "none"})
    assert keyed.key().endswith(".tta-flip") and not plain.key().endswith("flip")

    # The registered package records it: `masklab predict` deploys the model as it was evaluated unless told
    from masklab.tracking.model_ref import load_model_ref

    package = load_model_ref("models:/flipped/1", f"sqlite:///{project}/experiments/mlflow.db")
    assert package.spec["tta"] == "flip"
