"""inference: the one way a trained model meets pixels.

:class:`InputRule` (the preprocessing stored with every checkpoint and package), :class:`Predictor`
(batches on a device, logits resized back to each image's own size) and ``predict_folder``
(prediction files for a folder of images). Evaluation, ``masklab predict``, the registry pyfunc,
curation and active learning all use it, so what is scored is what is deployed.

Names are imported on first use, so reading a stored input rule does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {"Predictor": "engine", "predict_image": "engine", "predict_logits": "engine", "resolve_device": "engine",
          "InputRule": "rule", "rule_from_meta": "rule"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"masklab.inference.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'masklab.inference' has no attribute {name!r}")
