"""Segmentation metrics computed on-device from confusion matrices (and boundary bands)."""

from masklab.metrics.boundary import boundary_band, boundary_counts, boundary_dilation, boundary_iou_from_counts
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
    "boundary_band",
    "boundary_counts",
    "boundary_dilation",
    "boundary_iou_from_counts",
    "confusion_matrix",
    "named_scalars",
    "per_image_confusion",
    "per_image_scores",
    "scores_from_confusion",
]
