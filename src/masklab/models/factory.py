"""Build masklab models from plain values: any smp architecture and encoder, or the user's own network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from masklab.console import logger
from masklab.errors import UserError
from masklab.models.spec import BUILDER, BUILDER_NAMES, WRAPPER_KEYS, is_builtin  # noqa: F401  (re-exported)

log = logger(__name__)
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
        logits = self.net((images.float() - self.mean) / self.std)
        # A loss or metric would fail later, far from the cause. (Other shapes: build_model_from_spec's check.)
        if logits.dim() == 4 and logits.shape[-2:] != images.shape[-2:]:
            hint = (" (smp's FPN with encoder_depth below 5 upsamples too far: model.upsampling=1 for depth 3, 2 "
                    "for depth 4)" if type(self.net).__name__ == "FPN" else "")
            raise UserError(
                f"the model returns logits of {logits.shape[-2]}x{logits.shape[-1]} px for an input of "
                f"{images.shape[-2]}x{images.shape[-1]} px; masklab needs them at the input's size{hint}")
        return logits


# A weights file may leave this share of the target's tensors (or of its own) unused: a new head for another
# number of classes (2 of ~150 tensors of a UNet, 6 of ~300 of a Mask R-CNN) or the classifier of an ImageNet file
# (2 of ~100 of a resnet encoder). More is the wrong file (another encoder depth or architecture): refused unless
# model.weights_strict=false.
WEIGHTS_UNUSED_SHARE = 0.05


@dataclass
class WeightsLoad:
    """What :func:`load_weights_file` loaded: into ``part`` (model, network or encoder) ``loaded`` of ``total``
    tensors; ``missing``: the part's tensors the file left untouched; ``unused``: the file's tensors that found
    no place (absent from the part, or of another shape: those listed in ``reshaped``)."""

    path: Path
    part: str
    loaded: int
    total: int
    missing: list[str]
    unused: list[str]
    reshaped: list[str]
    file_total: int

    @property
    def partial(self) -> bool:
        return bool(self.missing or self.unused)

    @property
    def too_partial(self) -> bool:
        return (len(self.missing) > WEIGHTS_UNUSED_SHARE * self.total
                or len(self.unused) > WEIGHTS_UNUSED_SHARE * self.file_total)

    def describe(self) -> str:
        """One line: what was loaded, what the file left untouched and what it had no place for (names cut)."""
        def names(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f", ... {len(keys) - 4} more" if len(keys) > 4 else "")

        text = f"weights file {self.path}: loaded {self.loaded} of the {self.part}'s {self.total} tensors"
        if self.missing:
            text += f"; {len(self.missing)} left as initialised ({names(self.missing)})"
        if self.unused:
            shape = f", {len(self.reshaped)} of another shape" if self.reshaped else ""
            text += f"; {len(self.unused)} of the file's {self.file_total} unused{shape} ({names(self.unused)})"
        return text


def _counted(keys) -> list[str]:
    # BatchNorm's step counter is no weight; files saved before torch 0.4.1 (torchvision's) do not have it.
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def load_weights_file(module: nn.Module, path: str | Path, strict: bool = True) -> WeightsLoad:
    """Load a local state_dict file into ``module`` (safetensors or torch, never unpickling objects).

    Accepts a full-model state_dict, a bare-network one, an encoder-only one (smp networks), or a
    Lightning checkpoint: the tensors are loaded into whichever of the model, its network and its encoder
    shares the most names with the file. What was loaded, left untouched and unused is logged; with
    ``strict`` (``model.weights_strict``, the default) a load that leaves more than
    :data:`WEIGHTS_UNUSED_SHARE` of the part's or of the file's tensors unused is refused (UserError).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    if state and all(k.startswith("model.") for k in state):  # a masklab Lightning checkpoint
        state = {k[len("model."):]: v for k, v in state.items()}
    # The file may hold the wrapped model, the bare network (an smp or torchvision one), or only its encoder.
    net = module.net if isinstance(getattr(module, "net", None), nn.Module) else module  # wrapped models: .net
    candidates = [("model", module), ("network", net)]
    if isinstance(getattr(net, "encoder", None), nn.Module):
        candidates.append(("encoder", net.encoder))
    part, target = max(candidates, key=lambda c: len(set(state) & set(c[1].state_dict())))
    own = target.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise UserError(f"weights file {path}: none of its {len(state)} tensors match the model's parameter names")
    counted_own, counted_file = _counted(own), _counted(state)
    report = WeightsLoad(
        path, part, len(_counted(matched)), len(counted_own), [k for k in counted_own if k not in matched],
        [k for k in counted_file if k not in matched], [k for k in counted_file if k in own and k not in matched],
        len(counted_file))
    if strict and report.too_partial:
        raise UserError(f"{report.describe()}: more than {WEIGHTS_UNUSED_SHARE:.0%} unused, so the file is not for "
                        "this model (another encoder or architecture?); model.weights_strict=false loads the "
                        "matching tensors anyway")
    target.load_state_dict(matched, strict=False)
    (log.warning if report.partial else log.info)(report.describe())
    return report


def wrap_network(
    net: nn.Module, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
    weights_path: str | None = None, weights_strict: bool = True,
) -> NormalizedSegmentationModel:
    """``net`` behind the normalisation every masklab model has, then ``weights_path`` loaded if given
    (:func:`load_weights_file`, ``weights_strict`` its ``strict``)."""
    model = NormalizedSegmentationModel(net, mean, std)
    if weights_path:
        load_weights_file(model, weights_path, weights_strict)
    return model


def smp_network(
    num_classes: int, arch: str = "Unet", encoder: str = "resnet18", encoder_weights: str | None = None,
    in_channels: int = 3, **kwargs,
) -> nn.Module:
    """The bare ``smp.create_model(arch, encoder, ...)`` network: normalised (N, 3, H, W) -> logits."""
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(
            arch, encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=num_classes,
            **kwargs,
        )
    except KeyError as exc:
        raise UserError(f"model arch='{arch}' encoder='{encoder}': {exc.args[0] if exc.args else exc}") from exc


def build_model(
    num_classes: int,
    arch: str = "Unet",
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    weights_path: str | None = None,
    in_channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    weights_strict: bool = True,
    **kwargs,
) -> NormalizedSegmentationModel:
    """Create ``smp.create_model(arch, encoder, ...)`` wrapped with normalisation.

    ``encoder_weights`` is a hub name (needs internet, e.g. "imagenet") or None (default,
    random init); ``weights_path`` is a local file loaded after construction (refused when it fits only part of
    the model, unless ``weights_strict=False``: :func:`load_weights_file`).
    """
    net = smp_network(num_classes, arch, encoder, encoder_weights, in_channels, **kwargs)
    return wrap_network(net, mean, std, weights_path, weights_strict)


def build_model_from_spec(
    spec: Mapping[str, Any], num_classes: int, code_root: str | Path | None = None, *, rebuild: bool = False,
    where: str | None = None,
) -> NormalizedSegmentationModel:
    """The model a model config describes, for built-in and user models alike.

    ``spec``: a model config (``_target_`` plus keyword arguments). masklab's builder
    (``masklab.models.build_model``) makes an smp network. Any other ``_target_`` names a class or
    function of the user's code in ``code_root`` (default: the project folder; rules in
    :mod:`masklab.models.user_code`); it is called as ``target(num_classes=<n>, **kwargs)`` and must
    return an ``nn.Module`` that maps normalised float images (N, 3, H, W) to logits
    (N, num_classes, H, W), with no other output. Either way the network
    is wrapped in :class:`NormalizedSegmentationModel` with the config's ``mean``/``std``
    (fractions of 255, ImageNet's by default), so it takes uint8 pixels and its checkpoints and
    packages look the same. ``weights_path`` (optional) is loaded after construction.

    ``rebuild=True`` (a spec read back from a checkpoint or package): nothing is downloaded or read
    (``encoder_weights``/``weights_path`` dropped: the stored weights follow), and the network is
    not test-run. ``where`` names ``code_root`` in errors.
    """
    spec = _plain(spec)
    target = spec.pop("_target_", BUILDER)
    _check_plain_kwargs(spec, target)
    if rebuild:
        spec.update(weights_path=None, **({"encoder_weights": None} if target in BUILDER_NAMES else {}))
    if target in BUILDER_NAMES:
        return build_model(num_classes=num_classes, **spec)
    from masklab.models.user_code import import_code_target
    from masklab.project import project_root

    code_root = Path(code_root) if code_root is not None else project_root()
    build_net = import_code_target(target, code_root, where or "the project")
    wrapper = {k: spec.pop(k) for k in WRAPPER_KEYS if k in spec}
    try:
        net = build_net(num_classes=num_classes, **spec)
    except TypeError as exc:
        raise UserError(f"model _target_ '{target}' with {sorted(spec)} + num_classes: {exc}; a model callable "
                        f"takes num_classes and the model config's other keys") from exc
    if not isinstance(net, nn.Module):
        raise UserError(f"model _target_ '{target}' returned {type(net).__name__}; expected a torch.nn.Module")
    model = wrap_network(net, **{k: v for k, v in wrapper.items() if v is not None})
    if not rebuild:
        _check_output(model, num_classes, target)
    return model


def model_from_spec(
    spec: Mapping[str, Any], num_classes: int, code_root: str | Path | None = None, where: str | None = None,
) -> NormalizedSegmentationModel:
    """Rebuild a model from a stored spec (a checkpoint's or package's) without downloading or reading weights.

    A stored spec is data that may come from elsewhere, so it must not be able to name an
    arbitrary callable: it may name masklab's builder, or a callable defined in a module that lies
    in ``code_root`` -- the project folder for a checkpoint (the default), the ``code/`` folder
    shipped inside the package for a package. Anything else (``os.system``, a module not there)
    is refused with a UserError before any import or call.
    """
    return build_model_from_spec(spec, num_classes, code_root, rebuild=True, where=where)


def _plain(spec: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, dict):
        return dict(spec)
    from omegaconf import DictConfig, OmegaConf

    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)
    return dict(spec)


def _check_plain_kwargs(spec: dict[str, Any], target: str) -> None:
    """Refuse Hydra's special keys and nested ``_target_``s: one callable builds the model, so a
    stored spec can name nothing else (Hydra's recursive instantiation would call them)."""

    def walk(value: Any, at: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if str(key).startswith("_") and str(key).endswith("_"):
                    raise UserError(f"model config ({target}): key '{at}{key}' is not supported; a model is built "
                                    f"by one callable with plain keyword arguments (build parts inside it)")
                walk(item, f"{at}{key}.")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{at}{i}.")

    walk(spec, "model.")


def _check_output(model: NormalizedSegmentationModel, num_classes: int, target: str) -> None:
    """Run the new network once on a small blank batch so a broken contract fails at build time,
    with the shapes named, not deep inside training."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        try:
            out = model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
        except Exception as exc:
            raise UserError(f"model _target_ '{target}': forward of a (1, 3, 64, 64) image failed: "
                            f"{type(exc).__name__}: {exc}") from exc
    model.train(was_training)
    expected = (1, num_classes, 64, 64)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model _target_ '{target}': a (1, 3, 64, 64) image gave {found}; expected logits {expected}")
