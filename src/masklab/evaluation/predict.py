"""Predict class masks for images of any size with the input rule a model was packaged with.

One function serves `masklab predict`, the MLflow pyfunc and the tests, so a registered model
and its checkpoint give pixel-identical masks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from masklab.files import atomic_write


@dataclass(frozen=True)
class InputRule:
    """How an image of any size reaches the network.

    mode "resize": resize to (height, width) as in evaluation, upsample the logits back.
    mode "pad": pad to a multiple of ``multiple`` (edge-replicated), predict, crop; images larger
    than ``tile`` px on a side are predicted in overlapping tiles (``overlap`` px) whose logits
    are averaged.
    """

    mode: str = "resize"
    height: int | None = None
    width: int | None = None
    multiple: int = 32
    tile: int | None = None
    overlap: int = 32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_eval_pipeline(cls, nodes, multiple: int = 32) -> InputRule:
        """Derive the rule from an eval pipeline config: a leading Resize means "resize"."""
        for node in nodes or []:
            target = str(node.get("_target_", ""))
            if target.endswith(".Resize"):
                return cls("resize", int(node["height"]), int(node["width"]), multiple)
        return cls("pad", multiple=multiple, tile=512)


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x.float(), (0, pw, 0, ph), mode="replicate")
    return x, h, w


@torch.no_grad()
def _logits_padded(model: nn.Module, x: torch.Tensor, multiple: int) -> torch.Tensor:
    padded, h, w = _pad_to(x, multiple)
    return model(padded)[..., :h, :w]


@torch.no_grad()
def predict_logits(model: nn.Module, image: np.ndarray, rule: InputRule) -> torch.Tensor:
    """Logits (C, H, W) float32 at the image's own size for ``image`` (H, W, 3) uint8."""
    h, w = image.shape[:2]
    if rule.mode == "resize":
        resized = cv2.resize(image, (rule.width, rule.height), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None]
        logits = model(x)
        if (rule.height, rule.width) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits[0]
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    if rule.tile is None or max(h, w) <= rule.tile:
        return _logits_padded(model, x, rule.multiple)[0]
    # Overlapping tiles; their logits are averaged where they overlap.
    step = rule.tile - rule.overlap
    total, count = None, torch.zeros(1, h, w)
    for top in sorted({*range(0, max(h - rule.tile, 0) + 1, step), max(h - rule.tile, 0)}):
        for left in sorted({*range(0, max(w - rule.tile, 0) + 1, step), max(w - rule.tile, 0)}):
            tile = x[..., top : top + rule.tile, left : left + rule.tile]
            out = _logits_padded(model, tile, rule.multiple)[0]
            if total is None:
                total = torch.zeros(out.shape[0], h, w)
            total[:, top : top + out.shape[1], left : left + out.shape[2]] += out
            count[:, top : top + out.shape[1], left : left + out.shape[2]] += 1
    return total / count


def predict_image(model: nn.Module, image: np.ndarray, rule: InputRule) -> np.ndarray:
    """Class ids (H, W) uint8 for ``image`` (H, W, 3) uint8, at the image's own size."""
    return predict_logits(model, image, rule).argmax(dim=0).to(torch.uint8).numpy()


def predict_folder(package, inputs: list, input_root, output, overlay: bool = False, alpha: float = 0.45) -> list:
    """Write ``<output>/<relative path>.png`` predictions (and ``_overlay.png``) of ``package`` (a loaded
    model package: model, class table, input rule, spec naming its task) for ``inputs``.

    Paths keep their place relative to ``input_root`` (a folder) so equal stems in different
    subfolders do not collide. The package's task predicts, writes (atomically) and draws.
    """
    from pathlib import Path

    from masklab.data.format import read_image
    from masklab.tasks import task_for

    task = task_for(package.spec)
    root = Path(input_root) if Path(input_root).is_dir() else Path(input_root).parent
    written = []
    for path in inputs:
        image = read_image(path)
        prediction = task.predict_image(package.model, image, package.input_rule)
        rel = Path(path).relative_to(root).with_suffix("")
        target = Path(output) / f"{rel}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        task.write_prediction(prediction, target)
        if overlay:
            blended = task.overlay(image, prediction, package.class_table, alpha)
            _save_png(Image.fromarray(blended), target.with_name(f"{target.stem}_overlay.png"))
        written.append(target)
    return written


def _save_png(image, path) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
