"""Albumentations pipelines declared in YAML.

A pipeline config is a list of transform nodes, each with a ``_target_`` (any albumentations
transform, e.g. ``albumentations.HorizontalFlip``) and its arguments. Images stay uint8 here:
normalisation lives inside the model, so a saved model needs no side recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np

import masklab.config  # noqa: F401  (registers the ${masklab.height:...} resolvers that the presets use)


def build_pipeline(nodes: Sequence[Any] | None, seed: int | None = None, ignore_index: int | None = None) -> A.Compose:
    """Instantiate a list of transform configs (dicts or DictConfigs with ``_target_``) into a Compose.

    The same geometric transform is applied to ``image`` (H, W, 3) uint8, ``mask`` (H, W) and,
    when given, ``instances`` (H, W), because albumentations treats the extra target as a mask.
    With ``ignore_index``, every transform that fills mask pixels it invents (rotated-in corners,
    padding: ``fill_mask``, 0 by albumentations' default, which is a real class) fills them with
    ``ignore_index`` instead, unless its node sets ``fill_mask`` itself.
    """
    from hydra.utils import instantiate

    transforms = []
    for node in nodes or []:
        transform = instantiate(node, _convert_="all")
        if ignore_index is not None and "fill_mask" not in node:
            _fill_masks_with(transform, ignore_index)
        transforms.append(transform)
    return A.Compose(transforms, additional_targets={"instances": "mask"}, seed=seed)


def _fill_masks_with(transform: Any, value: int) -> None:
    """Set ``fill_mask`` on a transform and on those nested in it (OneOf, SomeOf, Sequential)."""
    if hasattr(transform, "fill_mask"):
        transform.fill_mask = value
    for inner in getattr(transform, "transforms", None) or []:
        _fill_masks_with(inner, value)


def apply_pipeline(pipeline: A.Compose, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a pipeline on one pair; returns the transformed (image, mask) with shapes kept aligned."""
    out = pipeline(image=image, mask=mask)
    return out["image"], out["mask"]
