"""Model factory: smp architectures or the user's own network, with normalisation inside the model.

Names are imported on first use: ``masklab.models.spec`` (what a stored spec names) must not pull
torch and smp into commands that only register or list models.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["NormalizedSegmentationModel", "build_model", "build_model_from_spec", "load_weights_file",
           "model_from_spec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("masklab.models.factory"), name)
    raise AttributeError(f"module 'masklab.models' has no attribute {name!r}")
