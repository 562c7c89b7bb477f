"""Model factory: smp architectures or the user's own network, with normalisation inside the model.

Names are imported on first use: ``masklab.models.spec`` (what a stored spec names) must not pull
torch and smp into commands that only register or list models.
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "factory": ["NormalizedSegmentationModel", "build_model", "build_model_from_spec", "load_weights_file",
                "model_from_spec"],
})
