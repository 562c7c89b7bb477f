"""Batched prediction on a device, with logits brought back to each image's original size.

Every place a trained network meets pixels (evaluation, ``masklab predict``, the registry pyfunc,
later curation and active learning) goes through :class:`Predictor`, so what is scored is what is
deployed: the same preprocessing rule, the same resizing of the logits, the same argmax.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masklab.errors import UserError
from masklab.inference.rule import InputRule
from masklab.metrics.labels import argmax_classes


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): the first CUDA GPU when there is one, else the CPU; else ``name`` as torch
    reads it ("cpu", "cuda", "cuda:1"). A GPU that is not there is the user's error."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError as exc:
        raise UserError(f"device={name}: not a device name; expected auto, cpu, cuda or cuda:<index>") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name}: this machine has no CUDA GPU that torch can use; use device=cpu or auto")
    return device


def to_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """(N, 3, H, W) uint8 on ``device`` from N (H, W, 3) uint8 arrays of one size."""
    batch = np.stack([np.ascontiguousarray(im) for im in images]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch)).to(device)


def image_view(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) uint8 of one (H, W, 3) image: a view, not a copy, on the CPU (a large image is tiled from it)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)


class Predictor:
    """A model, the rule it was trained with, a device and a batch size.

    ``logits(images)`` returns (C, H_i, W_i) float32 per image (H_i, W_i, 3) uint8, at the image's
    own size; ``classes(images)`` the argmax as (H_i, W_i) uint8. Normalisation lives in the model.
    """

    def __init__(self, model: nn.Module, rule: InputRule, device: str | torch.device | None = "auto",
                 batch_size: int = 8, tta: str = "none"):
        if int(batch_size) < 1:
            raise UserError(f"batch_size={batch_size}: expected a positive number of images")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.rule = rule
        self.batch_size = int(batch_size)
        self.tta = tta_views(tta)
        self.tta_name = tta

    @torch.no_grad()
    def logits(self, images: Sequence[np.ndarray], resolution: str = "original") -> list[torch.Tensor]:
        """Logits (C, H_i, W_i) float32 on the predictor's device, one per image, in order; with test-time
        augmentation (``tta``) the mean over the views, each view's logits brought back to the image's frame
        first (a flip undone, a scale resized back)."""
        if len(self.tta) == 1:
            return self._plain_logits(images, resolution)
        total: list[torch.Tensor] | None = None
        for view in self.tta:
            # (a "pad" rule predicts at the image's own size either way: a scaled view comes back to it too)
            found = [view.undo(lg, im.shape[:2] if resolution == "original" or self.rule.mode == "pad" else None)
                     for im, lg in zip(images, self._plain_logits([view.apply(im) for im in images], resolution))]
            total = found if total is None else [t + f for t, f in zip(total, found)]
        assert total is not None
        return [t / len(self.tta) for t in total]

    def _plain_logits(self, images: Sequence[np.ndarray], resolution: str = "original") -> list[torch.Tensor]:
        """Logits (C, H_i, W_i) float32 on the predictor's device, one per image, in order.

        ``resolution="model"``: at the network's input size under a "resize" or "pipeline" rule (the rule's
        ``to_network`` brings a label there), as the network sees it; "pad" rules predict at the image's own
        size either way. A "pipeline" rule whose steps cannot be undone predicts only at the model's size."""
        if resolution not in ("original", "model"):
            raise ValueError(f"resolution={resolution!r}; expected 'original' or 'model'")
        if self.rule.mode == "pipeline" and resolution == "original":
            self.rule.check_invertible("evaluation.resolution=model (predict: none can)")
        if self.rule.mode in ("resize", "pipeline"):
            return self._resized(images, back_to_original=resolution == "original")
        return self._padded(images)

    @property
    def output_kind(self) -> str:
        """What the model returns: ``"logits"`` (dense, (N, C, H, W)) or ``"detections"`` (per image a dict of
        boxes, labels, scores and soft masks, as torchvision's detection models)."""
        return getattr(self.model, "output_kind", "logits")

    @torch.no_grad()
    def detections(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """For a detection model: per (H_i, W_i, 3) uint8 image its output dict on the CPU at the image's own
        size (soft ``masks`` (K, 1, H_i, W_i) bilinear-resized back, ``boxes`` xyxy scaled back).

        Under a "resize" rule the image is first brought to the network's size like for a dense
        model; under "pad" the model gets the image as it is (detection models resize internally and
        take any size, so no padding or tiling is needed)."""
        if self.rule.mode == "pipeline":
            self.rule.check_invertible("evaluation.resolution=model (predict: none can)")
        if len(self.tta) > 1:
            raise UserError(f"tta={self.tta_name}: test-time augmentation averages dense logits; a detection model "
                            "(Mask R-CNN) has none to average (use tta=none)")
        out: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            prepared = [self.rule.forward(im) for im in chunk]
            inputs = [to_tensor([x], self.device)[0] for x, _ in prepared]
            for image, x, (_, box), found in zip(chunk, inputs, prepared, self.model(inputs)):
                found = {key: value.cpu() for key, value in found.items()}
                (h, w), (xh, xw) = image.shape[:2], x.shape[-2:]
                top, left, bottom, right = box
                if (top, left, bottom, right) != (0, 0, xh, xw) or (xh, xw) != (h, w):
                    masks = found["masks"][..., top:bottom, left:right]
                    found["masks"] = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False) \
                        if len(masks) else masks.new_zeros((0, 1, h, w))
                    sx, sy = w / (right - left), h / (bottom - top)
                    found["boxes"] = (found["boxes"] - torch.tensor([left, top, left, top])) * torch.tensor(
                        [sx, sy, sx, sy])
                out.append(found)
        return out

    @torch.no_grad()
    def classes(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class ids (H_i, W_i) uint8 per image (H_i, W_i, 3) uint8. An image predicted in tiles is taken band by
        band (:meth:`tiled_bands`): its full-resolution logits never exist at once, so memory follows the tile
        (with test-time augmentation the views' logits are averaged whole)."""
        out: dict[int, np.ndarray] = {}
        rest = []
        for i, im in enumerate(images):
            if self.rule.mode == "pad" and self.tiled(im) and len(self.tta) == 1:
                bands = [argmax_classes(band, dim=0).to(torch.uint8).cpu().numpy()
                         for _, band in self.tiled_bands(image_view(im, self.device))]
                out[i] = np.concatenate(bands, axis=0)
            else:
                rest.append(i)
        for i, lg in zip(rest, self.logits([images[i] for i in rest]) if rest else []):
            out[i] = argmax_classes(lg, dim=0).to(torch.uint8).cpu().numpy()
        return [out[i] for i in range(len(images))]

    def _resized(self, images: Sequence[np.ndarray], back_to_original: bool = True) -> list[torch.Tensor]:
        # Each image goes through the rule as validation's did (nothing more: the network gets what it was
        # validated on); those that arrive at one size batch together. Back at the original size, the logits of
        # the image's content (padding cropped off) are resized to it.
        prepared = [self.rule.forward(im) for im in images]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, (x, _) in enumerate(prepared):
            by_size.setdefault(x.shape[:2], []).append(i)
        out: dict[int, torch.Tensor] = {}
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                y = self.model(to_tensor([prepared[i][0] for i in chunk], self.device)).float()
                for j, i in enumerate(chunk):
                    one = y[j:j + 1]
                    if back_to_original:
                        top, left, bottom, right = prepared[i][1]
                        h, w = images[i].shape[:2]
                        one = one[..., top:bottom, left:right]
                        if one.shape[-2:] != (h, w):
                            one = F.interpolate(one, size=(h, w), mode="bilinear", align_corners=False)
                    out[i] = one[0]
        return [out[i] for i in range(len(images))]

    def _padded(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        # Images of one size batch together; larger than a tile, an image is predicted tile by tile.
        out: dict[int, torch.Tensor] = {}  # image index -> its logits
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            if self.tiled(im):
                out[i] = self._tiled(image_view(im, self.device))[0]
            else:
                by_size.setdefault(im.shape[:2], []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                y = self._pad_predict(to_tensor([images[i] for i in chunk], self.device))
                for j, i in enumerate(chunk):
                    out[i] = y[j]
        return [out[i] for i in range(len(images))]

    def tiled(self, image: np.ndarray) -> bool:
        """Whether a "pad" rule predicts ``image`` (H, W, 3) in tiles: a side longer than the rule's tile."""
        return self.rule.tile is not None and max(image.shape[:2]) > self.rule.tile

    def _pad_predict(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) logits for (N, 3, H, W) pixels padded (edge-replicated) to the rule's multiple."""
        h, w = x.shape[-2:]
        m = self.rule.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x.float(), (0, pw, 0, ph), mode="replicate")
        return self.model(x).float()[..., :h, :w]

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, H, W): the blended tiles of :meth:`tiled_bands`, put together."""
        return torch.cat([band.clone() for _, band in self.tiled_bands(x)], dim=1)[None]

    @torch.no_grad()
    def tiled_bands(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, (C, rows, W) logits) of a (1, 3, H, W) image predicted in overlapping tiles of ``rule.tile``
        px, top to bottom. Tiles are blended with a Gaussian weight (sigma an eighth of the tile, as nnU-Net does)
        so that a tile's border, where the network sees least context, counts least and no seam shows; a band of
        rows is handed out as soon as no later tile reaches it, so at most a tile's height of full-width logits is
        held at once. A band is a view of the running sums, valid until the next one is asked for."""
        h, w = x.shape[-2:]
        tile = self.rule.tile
        if tile is None:
            raise ValueError(f"input rule {self.rule.to_dict()}: tiled prediction needs a tile size")
        step = tile - self.rule.overlap
        tops = sorted({*range(0, max(h - tile, 0) + 1, step), max(h - tile, 0)})
        lefts = sorted({*range(0, max(w - tile, 0) + 1, step), max(w - tile, 0)})
        total: torch.Tensor | None = None  # rows [start, start + tile) of the running sums
        weight = torch.zeros(min(tile, h), w, device=x.device)
        start = 0
        for top in tops:
            if total is not None and top > start:  # rows above this tile are final: hand them out
                done = top - start
                yield start, total[:, :done].div_(weight[:done])
                shift_up(total, done, dim=1)
                shift_up(weight, done, dim=0)
                start = top
            for left in lefts:
                y = self._pad_predict(x[..., top:top + tile, left:left + tile])[0]
                if total is None:
                    total = torch.zeros(y.shape[0], min(tile, h), w, device=x.device)
                window = blend_window(y.shape[-2], y.shape[-1], tile, x.device)
                rows, cols = slice(top - start, top - start + y.shape[-2]), slice(left, left + y.shape[-1])
                total[:, rows, cols] += y * window
                weight[rows, cols] += window
        assert total is not None  # (the loops visit at least the tile at (0, 0))
        yield start, total[:, : h - start].div_(weight[: h - start])


def shift_up(t: torch.Tensor, rows: int, dim: int) -> None:
    """Move ``t``'s slices along ``dim`` up by ``rows`` in place and zero the freed end: in chunks of ``rows``,
    whose source and destination never overlap (no second buffer of ``t``'s size)."""
    size = t.shape[dim]
    for r in range(0, size - rows, rows):
        n = min(rows, size - rows - r)
        t.narrow(dim, r, n).copy_(t.narrow(dim, r + rows, n))
    t.narrow(dim, max(size - rows, 0), min(rows, size)).zero_()


def blend_window(height: int, width: int, tile: int, device: torch.device) -> torch.Tensor:
    """(height, width) tile weights: a separable Gaussian with sigma tile / 8, 1 at the centre, at least 1e-3 (a
    pixel that only one tile's border covers still gets that tile's logits)."""
    def axis(n: int) -> torch.Tensor:
        centre = (n - 1) / 2
        return torch.exp(-0.5 * ((torch.arange(n, device=device) - centre) / (tile / 8)) ** 2)

    return (axis(height)[:, None] * axis(width)[None, :]).clamp_min(1e-3)


TTA_CHOICES = ("none", "flip", "flip+scales")
TTA_SCALES = (0.75, 1.25)


class View:
    """One test-time augmentation view: an image flipped (``"h"``, ``"v"``, ``"hv"``) and/or scaled, and the way
    its logits go back to the image's frame."""

    def __init__(self, flip: str = "", scale: float = 1.0):
        self.flip, self.scale = flip, scale

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The (H, W, 3) uint8 image as this view sees it."""
        out = image[:, ::-1] if "h" in self.flip else image
        out = out[::-1] if "v" in self.flip else out
        if self.scale != 1.0:
            import cv2

            h, w = out.shape[:2]
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            out = cv2.resize(np.ascontiguousarray(out), size, interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(out)

    def undo(self, logits: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """(C, h, w) logits of this view back in the image's frame: resized to ``size`` (the image's own; None at
        the model's resolution, where a scale changes nothing), then the flip undone."""
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        dims = [d for d, axis in ((-1, "h"), (-2, "v")) if axis in self.flip]
        return logits.flip(dims) if dims else logits


def tta_views(name: str) -> list[View]:
    """The views of a test-time augmentation: ``none`` (the image), ``flip`` (and its horizontal, vertical and both
    flips), ``flip+scales`` (those four at scales 1, 0.75 and 1.25: twelve views)."""
    if name not in TTA_CHOICES:
        raise UserError(f"tta={name!r}: expected one of {', '.join(TTA_CHOICES)}")
    flips = [""] if name == "none" else ["", "h", "v", "hv"]
    scales = (1.0, *TTA_SCALES) if name == "flip+scales" else (1.0,)
    return [View(flip, scale) for scale in scales for flip in flips]


def predict_logits(model: nn.Module, image: np.ndarray, rule: InputRule, device: str = "cpu") -> torch.Tensor:
    """Logits (C, H, W) float32 for one image (H, W, 3) uint8 at its own size."""
    return Predictor(model, rule, device, 1).logits([image])[0].cpu()


def predict_image(model: nn.Module, image: np.ndarray, rule: InputRule, device: str = "cpu") -> np.ndarray:
    """Class ids (H, W) uint8 for one image (H, W, 3) uint8 at its own size."""
    return Predictor(model, rule, device, 1).classes([image])[0]
