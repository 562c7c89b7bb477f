"""What a stored model spec names, without importing torch (registering and packaging need only this)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BUILDER = "masklab.models.build_model"
BUILDER_NAMES = (BUILDER, "masklab.models.factory.build_model")
# masklab's instance-segmentation builders (masklab.models.instance): built in like the smp builder.
INSTANCE_BUILDERS = ("masklab.models.instance.build_maskrcnn", "masklab.models.instance.build_bottom_up")
# Keys of a model config that masklab consumes itself; every other key goes to the builder.
WRAPPER_KEYS = ("mean", "std", "weights_path", "weights_strict")


def is_builtin(spec: Mapping[str, Any]) -> bool:
    """Whether ``spec`` names masklab's smp builder (a spec without ``_target_`` does)."""
    return spec.get("_target_", BUILDER) in BUILDER_NAMES


def is_masklab_model(spec: Mapping[str, Any]) -> bool:
    """Whether ``spec`` names one of masklab's own builders (no user code to ship with it)."""
    return is_builtin(spec) or spec.get("_target_") in INSTANCE_BUILDERS
