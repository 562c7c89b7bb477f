"""The preprocessing rule stored with a model: how an image of any size reaches the network."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

INPUT_RULE_META_KEY = "input_rule"


@dataclass(frozen=True)
class InputRule:
    """How an image of any size reaches the network.

    mode "resize": resize to (height, width) (bilinear, as albumentations' ``Resize``), then resize
    the logits back to the image's own size. mode "pad": pad to a multiple of ``multiple``
    (edge-replicated), predict, crop; images larger than ``tile`` px on a side are predicted in
    overlapping tiles (``overlap`` px) whose logits are averaged.
    """

    mode: str = "resize"
    height: int | None = None
    width: int | None = None
    multiple: int = 32
    tile: int | None = None
    overlap: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """"resize to 160x160" / "pad to a multiple of 32 (tiles of 512 px)"."""
        if self.mode == "resize":
            return f"resize to {self.height}x{self.width}"
        return f"pad to a multiple of {self.multiple}" + (f" (tiles of {self.tile} px)" if self.tile else "")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputRule:
        return cls(**{k: v for k, v in dict(data).items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_eval_pipeline(cls, nodes: Any, multiple: int = 32) -> InputRule:
        """Derive the rule from an eval pipeline config: a leading Resize means "resize"."""
        for node in nodes or []:
            target = str(node.get("_target_", ""))
            if target.endswith(".Resize"):
                return cls("resize", int(node["height"]), int(node["width"]), multiple)
        return cls("pad", multiple=multiple, tile=512)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) px a "resize" rule brings images to (OpenCV's order)."""
        if self.height is None or self.width is None:
            raise ValueError(f"input rule {self.to_dict()}: no size (only a 'resize' rule has one)")
        return self.width, self.height

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 at the network's input size (unchanged in pad mode or when already there)."""
        if self.mode != "resize" or image.shape[:2] == (self.height, self.width):
            return image
        return cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """(h, w) class ids at the network's input size, nearest neighbour (what scoring at model
        resolution compares against)."""
        if self.mode != "resize" or mask.shape[:2] == (self.height, self.width):
            return mask
        return cv2.resize(mask, self.size, interpolation=cv2.INTER_NEAREST)


def rule_from_meta(meta: dict[str, Any]) -> InputRule:
    """The rule a checkpoint was trained with: stored under ``input_rule`` since v2 of the metadata,
    derived from the training config's ``augment.eval`` for older checkpoints."""
    if meta.get(INPUT_RULE_META_KEY):
        return InputRule.from_dict(meta[INPUT_RULE_META_KEY])
    config = meta.get("config") or {}
    return InputRule.from_eval_pipeline((config.get("augment") or {}).get("eval"))
