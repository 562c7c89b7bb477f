"""inference: the one way a trained model meets pixels.

:class:`InputRule` (the preprocessing stored with every checkpoint and package), :class:`Predictor`
(batches on a device, logits resized back to each image's own size) and ``predict_folder``
(prediction files for a folder of images). Evaluation, ``masklab predict``, the registry pyfunc,
curation and active learning all use it, so what is scored is what is deployed.

Names are imported on first use, so reading a stored input rule does not import torch.
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "engine": ["Predictor", "predict_image", "predict_logits", "resolve_device"],
    "rule": ["InputRule", "rule_from_meta"],
})
