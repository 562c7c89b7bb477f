"""Rebuild the network a stored spec (a checkpoint's or a package's) describes, whatever its task.

The spec's ``_target_`` names its builder: one of masklab's instance builders, or masklab's smp builder or a
callable of the user's code (``factory.model_from_spec``, which refuses anything outside ``code_root``). So
loading a model needs no task: the task decides what the network's output means, not how it is rebuilt.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import nn

from masklab.models.spec import INSTANCE_BUILDERS


def rebuild_model(spec: Mapping[str, object], num_classes: int, code_root: str | Path | None = None,
                  where: str | None = None) -> nn.Module:
    """The network of ``spec`` for ``num_classes`` classes, without downloading or reading weights (the stored
    weights follow); user code may come from ``code_root`` only (named ``where`` in errors)."""
    if spec.get("_target_") in INSTANCE_BUILDERS:
        from masklab.models.instance import instance_model_from_spec

        return instance_model_from_spec(dict(spec), num_classes, rebuild=True)
    from masklab.models.factory import model_from_spec

    return model_from_spec(spec, num_classes, code_root, where=where)
