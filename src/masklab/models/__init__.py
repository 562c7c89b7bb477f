"""Model factory over segmentation-models-pytorch, with normalisation inside the model."""

from masklab.models.factory import NormalizedSegmentationModel, build_model, load_weights_file

__all__ = ["NormalizedSegmentationModel", "build_model", "load_weights_file"]
