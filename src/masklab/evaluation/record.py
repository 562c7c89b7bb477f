"""What one evaluation scored: the provenance that travels with every evaluation's numbers.

Stored by ``masklab.tracking.evaluations`` on the MLflow entity the number belongs to (the run
that trained the model, or a registered model version), and read by the promotion gate, which
only compares numbers whose dataset version, split and resolution agree.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

# Evaluation resolutions: "original" scores against the original masks at each image's own size;
# "model" resizes masks to the network's input size (faster, not what is deployed).
RESOLUTIONS = ("original", "model")


@dataclass(frozen=True)
class EvaluationRecord:
    """``model``: "runs:/<run id>", "models:/<name>/<version>" or "checkpoint:<path>";
    ``metrics``: full names as logged ("eval/test/mIoU"); ``input_rule``: the preprocessing used
    and ``input_rule_source`` "model" (stored with the model) or "config" (the user overrode it);
    ``boundary_ignore``: Boundary IoU's convention for void pixels (masklab.metrics.boundary), None when no
    Boundary IoU was scored or the record predates the setting (those used "hide")."""

    model: str
    dataset: str
    manifest_sha256: str
    split: str
    resolution: str
    metrics: dict[str, float]
    input_rule: dict[str, Any]
    input_rule_source: str = "model"
    boundary_ignore: str | None = None
    masklab_version: str = "unknown"
    platform: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    # Test-time augmentation of the predictions scored (masklab.inference.engine.tta_views): none, flip, flip+scales.
    tta: str = "none"

    def key(self) -> str:
        """Which number this is, independent of who computed it: dataset version, split, resolution."""
        # (a TTA evaluation is another number than the plain one; the plain key is as before TTA existed)
        tta = f".tta-{self.tta}" if self.tta != "none" else ""
        return f"{self.dataset}.{self.manifest_sha256[:12]}.{self.split}.{self.resolution}{tta}"

    def metric(self, name: str) -> float | None:
        """The value of ``name``, given either fully ("eval/test/mIoU") or bare ("mIoU")."""
        if name in self.metrics:
            return self.metrics[name]
        for full, value in self.metrics.items():
            if full.rsplit("/", 1)[-1] == name:
                return value
        return None

    def describe(self) -> str:
        """One line: model, dataset@manifest, split, resolution (and Boundary IoU's void convention)."""
        void = f" boundary_ignore={self.boundary_ignore}" if self.boundary_ignore else ""
        return (f"{self.model} on {self.dataset}@{self.manifest_sha256[:12]} split={self.split} "
                f"resolution={self.resolution}{void}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvaluationRecord:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
