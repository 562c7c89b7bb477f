"""Segmentation metrics: semantic (on-device confusion matrices, boundary bands) and instance (COCO AP, PQ).

Names are imported on first use: ``masklab.metrics.labels`` (what the inference path needs) must not pull
torchmetrics and pycocotools into ``predict``.
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "boundary": ["DEFAULT_IGNORE_CONVENTION", "IGNORE_CONVENTIONS", "boundary_band", "boundary_counts",
                 "boundary_dilation", "boundary_iou_from_counts", "check_ignore_convention"],
    "instance": ["InstanceMetrics"],
    "labels": ["argmax_classes"],
    "semantic": ["SemanticMetrics", "confusion_matrix", "named_scalars", "per_image_confusion", "per_image_scores",
                 "scores_from_confusion"],
})
