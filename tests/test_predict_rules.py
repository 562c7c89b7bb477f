"""Input rules of packaged models: resize, pad to a multiple of 32, overlapping tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from masklab.inference import InputRule, predict_image, predict_logits
from masklab.models import build_model


class PixelwiseModel(nn.Module):
    """A 1x1 convolution: no receptive field, so tiling must not change a single logit."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255.0)


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(32, 32), (33, 65), (7, 100)])
def test_pad_mode_returns_the_image_size(shape):
    model = build_model(num_classes=3, arch="Unet", encoder="resnet18").eval()
    mask = predict_image(model, image(*shape), InputRule("pad", multiple=32))
    assert mask.shape == shape and mask.dtype == np.uint8


def test_tiles_equal_whole_image_for_pixelwise_model():
    model = PixelwiseModel().eval()
    img = image(150, 230)
    whole = predict_logits(model, img, InputRule("pad", multiple=32, tile=None))
    tiled = predict_logits(model, img, InputRule("pad", multiple=32, tile=64, overlap=16))
    assert tiled.shape == whole.shape == (4, 150, 230)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_resize_mode_maps_back_to_original_size():
    model = build_model(num_classes=2, arch="FPN", encoder="resnet18").eval()
    mask = predict_image(model, image(50, 80), InputRule("resize", height=64, width=64))
    assert mask.shape == (50, 80)


def test_rule_from_eval_pipeline():
    nodes = OmegaConf.create([{"_target_": "albumentations.Resize", "height": 96, "width": 128}])
    assert InputRule.from_eval_pipeline(nodes) == InputRule("resize", 96, 128)
    assert InputRule.from_eval_pipeline([]).mode == "pad"
