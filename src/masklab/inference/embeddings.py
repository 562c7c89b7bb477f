"""Image embeddings: a network's deepest encoder features, average-pooled.

Two sources: a trained masklab model (its segmentation encoder; for Mask R-CNN the backbone body), or
a local weights file of a timm / smp encoder (e.g. torchvision's resnet18 ImageNet weights saved on
disk: nothing is downloaded). Every image reaches the encoder at one square size (bilinear resize),
so images of any size batch together and an embedding does not depend on the file's resolution.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch import nn

from masklab.errors import UserError
from masklab.inference.engine import resolve_device, to_tensor

if TYPE_CHECKING:
    from masklab.inference.package import Package

DEFAULT_SIZE = 224  # px, square: what ImageNet encoders were trained at
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (N, 3, S, S) float pixels 0..255 -> (N, C, h, w) deepest features
FeatureFn = Callable[[torch.Tensor], torch.Tensor]


class Embedder:
    """``embed(images)``: (N, D) float32 pooled features for N (H_i, W_i, 3) uint8 images (not normalised:
    comparisons centre them on their dataset first, see masklab.curation.embeddings).

    ``key``: a hex digest of the weights and the input size, so a cache of embeddings is keyed by what
    produced them, whichever name (run id, checkpoint path, registry version) the user gave."""

    def __init__(self, features: FeatureFn, module: nn.Module, size: int = DEFAULT_SIZE,
                 device: str | torch.device | None = "auto", batch_size: int = 16, name: str = "encoder"):
        if int(size) < 32:
            raise UserError(f"embedding size={size}: expected at least 32 px")
        self.features, self.size, self.batch_size, self.name = features, int(size), int(batch_size), name
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.key = weights_digest(module, extra=f"size={self.size}")

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = [cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
                     for im in images[start:start + self.batch_size]]
            feats = self.features(to_tensor(chunk, self.device).float())
            pooled = feats.float().mean(dim=(-2, -1)) if feats.dim() == 4 else feats.float()
            out.append(pooled.cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def weights_digest(module: nn.Module, extra: str = "") -> str:
    """sha256 hex (first 16 digits) of a module's parameter and buffer names, shapes and bytes."""
    h = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _normalised(fn: Callable[[torch.Tensor], object], mean: torch.Tensor, std: torch.Tensor) -> FeatureFn:
    def features(x: torch.Tensor) -> torch.Tensor:
        out = fn((x - mean.to(x.device)) / std.to(x.device))
        if isinstance(out, dict):  # torchvision backbones: an ordered dict of stages, deepest last
            out = list(out.values())
        deepest = out[-1] if isinstance(out, list | tuple) else out
        if not isinstance(deepest, torch.Tensor):
            raise TypeError(f"the encoder returned {type(deepest).__name__}, not a tensor of features")
        return deepest
    return features


def model_features(model: nn.Module) -> FeatureFn:
    """The deepest encoder features of a masklab model, from raw 0..255 pixels: smp networks (and bottom-up
    instance models) through ``net.encoder``, Mask R-CNN through its backbone body, a user's network through
    its ``encoder`` attribute when it has one."""
    net = getattr(model, "net", model)
    encoder, mean, std = getattr(net, "encoder", None), getattr(model, "mean", None), getattr(model, "std", None)
    if isinstance(encoder, nn.Module) and isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        return _normalised(encoder, mean, std)  # mean/std buffers are already x255
    backbone = getattr(getattr(net, "backbone", None), "body", None)
    transform = getattr(net, "transform", None)
    if isinstance(backbone, nn.Module) and transform is not None:
        mean = torch.tensor(transform.image_mean).view(1, -1, 1, 1) * 255.0
        std = torch.tensor(transform.image_std).view(1, -1, 1, 1) * 255.0
        return _normalised(backbone, mean, std)
    raise UserError(f"model {type(net).__name__}: masklab finds no encoder in it (expected an smp network's "
                    "`encoder`, a torchvision detection backbone, or an `encoder` attribute on your network); "
                    "use embedder.weights=<local encoder weights file> instead")


def package_embedder(package: Package, size: int | None = None, device: str = "auto",
                     batch_size: int = 16) -> Embedder:
    """An Embedder of a loaded model Package (masklab.inference.package): its own encoder at ``size`` px (default: the
    model's input height under a resize rule, else 224)."""
    model, rule = package.model, package.input_rule
    size = size or (rule.height if rule.mode == "resize" and rule.height else DEFAULT_SIZE)
    return Embedder(model_features(model), model, size, device, batch_size, name=type(getattr(model, "net", model))
                    .__name__)


def weights_embedder(weights: str | Path, encoder: str = "resnet18", size: int = DEFAULT_SIZE,
                     device: str = "auto", batch_size: int = 16) -> Embedder:
    """An Embedder of an smp / timm encoder (``encoder`` name, e.g. resnet18, resnet50, efficientnet-b0)
    with weights from a local file (a torchvision / timm state_dict, safetensors or torch), ImageNet
    normalisation."""
    import segmentation_models_pytorch as smp

    from masklab.models.factory import load_weights_file

    path = Path(weights)
    if not path.is_file():
        raise UserError(f"embedder.weights={path}: no such file (a local encoder weights file, e.g. torchvision's "
                        "resnet18 state_dict)")
    try:
        module = smp.encoders.get_encoder(encoder, in_channels=3, depth=5, weights=None)
    except KeyError as exc:
        raise UserError(f"embedder.encoder={encoder}: not an encoder segmentation-models-pytorch knows") from exc
    load_weights_file(module, path)
    mean = torch.tensor(IMAGENET_MEAN).view(1, -1, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(1, -1, 1, 1) * 255.0
    return Embedder(_normalised(module, mean, std), module, size, device, batch_size, name=encoder)


THUMBNAIL_SIDE = 16  # px: 16x16x3 = 768 values


class ThumbnailEmbedder:
    """A pixel-level embedding that needs no weights: each image area-averaged to 16x16 RGB (768 values).

    Not semantic (two photos of one scene from elsewhere are far apart), but robust to resizing,
    re-encoding and crops of a few per cent, which is what a near-duplicate search without a model
    needs; ``embed`` and ``key`` as :class:`Embedder`."""

    name = "thumbnail"
    key = f"thumbnail{THUMBNAIL_SIDE}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        side = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
        rows = [cv2.resize(im, side, interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1) for im in images]
        return np.stack(rows) if rows else np.zeros((0, 3 * THUMBNAIL_SIDE ** 2), np.float32)
