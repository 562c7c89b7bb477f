"""The preprocessing rule stored with a model: how an image of any size reaches the network, and how the
network's output goes back to the image's own size."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from masklab.errors import UserError

INPUT_RULE_META_KEY = "input_rule"
# Geometric eval steps an input rule can undo: they scale and pad, never cut or move content (its logits are
# cropped to the content and resized back). Pixel-only steps (albumentations' ImageOnlyTransform: CLAHE, ToGray,
# ...) need no undoing. Any other geometric step (a crop, a flip, a rotation) cannot be undone.
INVERTIBLE_STEPS = ("Resize", "LongestMaxSize", "SmallestMaxSize", "PadIfNeeded")


@dataclass(frozen=True)
class InputRule:
    """How an image of any size reaches the network.

    mode "resize": resize to (height, width) (bilinear, as albumentations' ``Resize``), then resize
    the logits back to the image's own size. mode "pad": pad to a multiple of ``multiple``
    (edge-replicated), predict, crop; images larger than ``tile`` px on a side are predicted in
    overlapping tiles (``overlap`` px) whose logits are averaged. mode "pipeline": the model's own eval
    pipeline (``pipeline``: albumentations' serialisation of it, with the mask fill it trained with), nothing
    more, as validation fed the network; the logits are cropped to the image's content and resized back
    (:data:`INVERTIBLE_STEPS`; a pipeline with another geometric step predicts only at the network's size).
    """

    mode: str = "resize"
    height: int | None = None
    width: int | None = None
    multiple: int = 32
    tile: int | None = None
    overlap: int = 32
    pipeline: dict[str, Any] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.pipeline is None:
            data.pop("pipeline")  # a resize or pad rule is stored as before
        return data

    def describe(self) -> str:
        """"resize to 160x160" / "pad to a multiple of 32 (tiles of 512 px)" / "LongestMaxSize(64) ->
        PadIfNeeded(64x64), undone after"."""
        if self.mode == "resize":
            return f"resize to {self.height}x{self.width}"
        if self.mode == "pipeline":
            steps = " -> ".join(t["__class_fullname__"].rsplit(".", 1)[-1] for t in self.steps)
            return f"eval pipeline {steps}" + (", undone after" if not self.non_invertible else "")
        return f"pad to a multiple of {self.multiple}" + (f" (tiles of {self.tile} px)" if self.tile else "")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputRule:
        return cls(**{k: v for k, v in dict(data).items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_eval_pipeline(cls, nodes: Any, multiple: int = 32, ignore_index: int | None = None) -> InputRule:
        """The rule of an eval pipeline config (``augment.eval``): none -> "pad"; one ``Resize`` -> "resize";
        anything else -> "pipeline", the pipeline itself as masklab.augment builds it for validation
        (``ignore_index`` fills padded mask pixels), serialised by albumentations."""
        nodes = list(nodes or [])
        if not nodes:
            return cls("pad", multiple=multiple, tile=512)
        if len(nodes) == 1 and str(nodes[0].get("_target_", "")).endswith(".Resize"):
            return cls("resize", int(nodes[0]["height"]), int(nodes[0]["width"]), multiple)
        import albumentations as A

        from masklab.augment import build_pipeline

        return cls("pipeline", multiple=multiple, pipeline=A.to_dict(build_pipeline(nodes, ignore_index=ignore_index)))

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The serialised transforms of a "pipeline" rule (empty for the other modes)."""
        return list((self.pipeline or {}).get("transform", {}).get("transforms", []))

    @cached_property
    def non_invertible(self) -> list[str]:
        """The names of the pipeline's geometric steps that cannot be undone (empty: the rule predicts at any
        image's own size)."""
        import albumentations as A

        return [type(t).__name__ for t in self._compose.transforms
                if not isinstance(t, A.ImageOnlyTransform) and type(t).__name__ not in INVERTIBLE_STEPS]

    def check_invertible(self, setting: str) -> None:
        """UserError naming the steps of a "pipeline" rule that cannot be undone, and ``setting`` to change."""
        if self.mode == "pipeline" and self.non_invertible:
            raise UserError(f"augment.eval has {self.non_invertible}: a step that cuts or moves the image cannot be "
                            f"undone, so predictions cannot go back to an image's own size; use only "
                            f"{list(INVERTIBLE_STEPS)} and pixel-only steps in augment.eval, or {setting}")

    @cached_property
    def _content_mark(self) -> int:
        """A mask value no step pads with (fill_mask is ignore_index, 255 by default, or 0), to find the content."""
        fills = {int(v) for t in self.steps for v in np.atleast_1d(t.get("fill_mask") or 0)}
        return min(set(range(1, 256)) - fills)

    @cached_property
    def _compose(self) -> Any:
        import albumentations as A

        with warnings.catch_warnings():  # ("Argument(s) 'padding' are not valid": albumentations' own round trip)
            warnings.simplefilter("ignore", UserWarning)
            return A.from_dict(self.pipeline)

    def forward(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The network's input (h', w', 3) uint8 for an image (h, w, 3) uint8, and where the image's content lies
        in it: (top, left, bottom, right) px, bottom/right exclusive (all of it but under a "pipeline" rule that
        pads). "pad" rules bring nothing to a size: the image and its full box."""
        if self.mode == "pipeline":
            mark = self._content_mark
            out = self._compose(image=image, mask=np.full(image.shape[:2], mark, np.uint8))
            rows, cols = np.nonzero(out["mask"] == mark)  # padded pixels hold a step's fill_mask instead
            return out["image"], (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        x = self.resize_image(image)
        return x, (0, 0, x.shape[0], x.shape[1])

    def to_network(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) as validation gave them to the network: resized (bilinear image, nearest mask) under
        "resize", through the eval pipeline under "pipeline" (padded mask pixels ignore_index), unchanged
        under "pad"."""
        if self.mode == "pipeline":
            out = self._compose(image=image, mask=mask)
            return out["image"], out["mask"]
        return self.resize_image(image), self.resize_mask(mask)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) px a "resize" rule brings images to (OpenCV's order)."""
        if self.height is None or self.width is None:
            raise ValueError(f"input rule {self.to_dict()}: no size (only a 'resize' rule has one)")
        return self.width, self.height

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 at the network's input size (unchanged in pad mode or when already there)."""
        if self.mode == "pipeline":
            return self.forward(image)[0]
        if self.mode != "resize" or image.shape[:2] == (self.height, self.width):
            return image
        return cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """(h, w) class ids at the network's input size, nearest neighbour (what scoring at model
        resolution compares against)."""
        if self.mode == "pipeline":
            return self.to_network(np.zeros((*mask.shape[:2], 3), np.uint8), mask)[1]
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
