"""Build any segmentation-models-pytorch architecture and encoder from plain values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizedSegmentationModel(nn.Module):
    """Wraps a network so it takes raw pixels: input (N, 3, H, W) uint8 or float in 0..255.

    Mean and std (fractions of 255) are buffers, so they travel inside every checkpoint.
    Output: logits (N, num_classes, H, W) float32.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images.float() - self.mean) / self.std)


def load_weights_file(module: nn.Module, path: str | Path) -> None:
    """Load a local state_dict file into ``module`` (safetensors or torch, never unpickling objects).

    Accepts a full-model state_dict, an encoder-only one, or a Lightning checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    if state and all(k.startswith("model.") for k in state):  # a masklab Lightning checkpoint
        state = {k[len("model."):]: v for k, v in state.items()}
    # The file may hold the wrapped model, the bare smp network, or only its encoder.
    net = module.net if isinstance(module, NormalizedSegmentationModel) else module
    candidates = [module, net, net.encoder]
    target = max(candidates, key=lambda m: len(set(state) & set(m.state_dict())))
    own = target.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"weights file {path}: none of its {len(state)} tensors match the model's parameter names")
    target.load_state_dict(matched, strict=False)


def build_model(
    num_classes: int,
    arch: str = "Unet",
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    weights_path: str | None = None,
    in_channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **kwargs,
) -> NormalizedSegmentationModel:
    """Create ``smp.create_model(arch, encoder, ...)`` wrapped with normalisation.

    ``encoder_weights`` is a hub name (needs internet, e.g. "imagenet") or None (default,
    random init); ``weights_path`` is a local file loaded after construction.
    """
    import segmentation_models_pytorch as smp

    try:
        net = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=num_classes,
            **kwargs,
        )
    except KeyError as exc:
        raise ValueError(f"model arch='{arch}' encoder='{encoder}': {exc.args[0] if exc.args else exc}") from exc
    model = NormalizedSegmentationModel(net, mean, std)
    if weights_path:
        load_weights_file(model, weights_path)
    return model


BUILDER = "masklab.models.build_model"


def model_from_spec(spec: dict, num_classes: int) -> NormalizedSegmentationModel:
    """Rebuild a model from a stored spec (a model config) without downloading or reading weights.

    Only masklab's own builder is accepted: a spec from a checkpoint or registry must not be able
    to name an arbitrary callable.
    """
    spec = dict(spec)
    target = spec.pop("_target_", BUILDER)
    if target not in (BUILDER, "masklab.models.factory.build_model"):
        raise ValueError(f"model spec names builder '{target}'; expected '{BUILDER}'")
    spec.update(num_classes=num_classes, encoder_weights=None, weights_path=None)
    return build_model(**spec)
