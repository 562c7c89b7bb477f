"""Model factory: smp architectures or the user's own network, with normalisation inside the model."""

from masklab.models.factory import (
    NormalizedSegmentationModel,
    build_model,
    build_model_from_spec,
    load_weights_file,
    model_from_spec,
)

__all__ = ["NormalizedSegmentationModel", "build_model", "build_model_from_spec", "load_weights_file",
           "model_from_spec"]
