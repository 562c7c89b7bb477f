"""Segmentation metrics: semantic (on-device confusion matrices, boundary bands) and instance (COCO AP, PQ).

Names are imported on first use: ``masklab.metrics.labels`` (what the inference path needs) must not pull
torchmetrics and pycocotools into ``predict``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "boundary_band": "boundary", "boundary_counts": "boundary", "boundary_dilation": "boundary",
    "boundary_iou_from_counts": "boundary",
    "InstanceMetrics": "instance",
    "argmax_classes": "labels",
    "SemanticMetrics": "semantic", "confusion_matrix": "semantic", "named_scalars": "semantic",
    "per_image_confusion": "semantic", "per_image_scores": "semantic", "scores_from_confusion": "semantic",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"masklab.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'masklab.metrics' has no attribute {name!r}")
