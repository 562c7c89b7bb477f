"""inference: the one way a trained model meets pixels.

:class:`InputRule` (the preprocessing stored with every checkpoint and package), :class:`Predictor`
(batches on a device, logits resized back to each image's own size) and ``predict_folder``
(prediction files for a folder of images). Evaluation, ``masklab predict``, the registry pyfunc,
curation and active learning all use it, so what is scored is what is deployed.
"""

from masklab.inference.engine import Predictor, predict_image, predict_logits, resolve_device
from masklab.inference.rule import InputRule, rule_from_meta

__all__ = ["InputRule", "Predictor", "predict_image", "predict_logits", "resolve_device", "rule_from_meta"]
