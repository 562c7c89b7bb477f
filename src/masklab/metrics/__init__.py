"""Segmentation metrics computed on-device from confusion matrices."""

from masklab.metrics.semantic import (
    SemanticMetrics,
    confusion_matrix,
    named_scalars,
    per_image_confusion,
    per_image_scores,
    scores_from_confusion,
)

__all__ = [
    "SemanticMetrics",
    "confusion_matrix",
    "named_scalars",
    "per_image_confusion",
    "per_image_scores",
    "scores_from_confusion",
]
