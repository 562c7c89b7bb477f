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


def assert_same_classes(mask: np.ndarray, logits: torch.Tensor) -> None:
    """``mask`` is the argmax of reference ``logits`` (C, H, W), wherever the two best classes are not within float
    noise of each other (1e-4: the reference may sum in another order)."""
    top2 = logits.topk(2, dim=0).values
    decided = (top2[0] - top2[1] > 1e-4).numpy()
    expected = logits.argmax(dim=0).numpy()
    assert mask.shape == expected.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(logits.shape[0]))  # class ids of the model's classes only
    assert decided.mean() > 0.99 and np.array_equal(mask[decided], expected[decided])


@pytest.mark.parametrize("shape", [(32, 32), (33, 65), (7, 100)])
def test_pad_mode_predicts_the_padded_image_cropped_back(shape):
    """At the image's size, the classes of the network run on the image edge-padded to a multiple of 32 (numpy's
    pad, written out here), cropped back; zero padding would give other logits at the borders."""
    model = build_model(num_classes=3, arch="Unet", encoder="resnet18").eval()
    img = image(*shape)
    mask = predict_image(model, img, InputRule("pad", multiple=32))
    logits = predict_logits(model, img, InputRule("pad", multiple=32))
    h, w = shape
    pad = ((0, -h % 32), (0, -w % 32), (0, 0))
    with torch.no_grad():
        expected = {kind: model(torch.from_numpy(np.pad(img, pad, mode=kind).transpose(2, 0, 1)[None].copy()).float()
                                )[0, :, :h, :w] for kind in ("edge", "constant")}
    assert torch.allclose(logits, expected["edge"], atol=1e-4)
    assert_same_classes(mask, expected["edge"])
    if pad != ((0, 0), (0, 0), (0, 0)):  # (the comparison tells paddings apart)
        assert not torch.allclose(logits, expected["constant"], atol=1e-2)


def test_tiles_equal_whole_image_for_pixelwise_model():
    model = PixelwiseModel().eval()
    img = image(150, 230)
    whole = predict_logits(model, img, InputRule("pad", multiple=32, tile=None))
    tiled = predict_logits(model, img, InputRule("pad", multiple=32, tile=64, overlap=16))
    assert tiled.shape == whole.shape == (4, 150, 230)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_resize_mode_maps_back_to_original_size():
    """The classes of the network run on the image resized to 64 x 64 (bilinear, as albumentations' Resize), its
    logits resized back to 50 x 80 (bilinear) before the argmax."""
    import cv2
    import torch.nn.functional as F

    model = build_model(num_classes=2, arch="FPN", encoder="resnet18").eval()
    img = image(50, 80)
    mask = predict_image(model, img, InputRule("resize", height=64, width=64))
    small = cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        logits = model(torch.from_numpy(small.transpose(2, 0, 1)[None].copy())).float()
    assert logits.shape[-2:] == (64, 64)
    assert_same_classes(mask, F.interpolate(logits, size=(50, 80), mode="bilinear", align_corners=False)[0])


def test_rule_from_eval_pipeline():
    nodes = OmegaConf.create([{"_target_": "albumentations.Resize", "height": 96, "width": 128}])
    assert InputRule.from_eval_pipeline(nodes) == InputRule("resize", 96, 128)
    assert InputRule.from_eval_pipeline([]).mode == "pad"
