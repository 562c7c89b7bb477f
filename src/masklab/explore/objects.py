"""Instance objects for the HTML explorer: outcome codes, outline polygons and RGBA overlay layers.

The explorer gets plain data per sample (:class:`ExplorerObjects`) and knows nothing about tasks or
metrics beyond the match list's documented keys. For each object it writes one inline entry (the page
draws thumbnails and hit-tests the pointer against its polygon) and paints the full-resolution
overlays (outline in the object's colour, filled lightly) that the detail view shows.

Outcome codes (``OBJECT_STATUS``): 1 TP (matched), 2 FP (prediction without a match), 3 FN (missed
ground truth), 4 crowd (a crowd region, or a prediction matched to one), 5 not counted (a prediction
the match list leaves out: below the evaluation's score threshold), 0 no match information (a dataset
browse: each object gets its own colour from :func:`masklab.report.overlay.distinct_colors` and is
filled with its class colour).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from masklab.report.overlay import distinct_colors, object_outlines

# code -> (name, meaning, RGB). FP and FN share the semantic error map's red and blue.
OBJECT_STATUS: dict[int, tuple[str, str, tuple[int, int, int]]] = {
    1: ("TP", "matched (IoU >= 0.5, same class)", (40, 190, 80)),
    2: ("FP", "predicted, matches no ground truth", (230, 30, 30)),
    3: ("FN", "ground truth no prediction matches", (30, 90, 255)),
    4: ("crowd", "crowd region, or a prediction on one (not scored)", (128, 128, 128)),
    5: ("not counted", "prediction below the score threshold", (200, 200, 200)),
}
STATUS_CODES = {name: code for code, (name, _, _) in OBJECT_STATUS.items()}
OBJECT_PALETTE = 64  # distinct outline colours of a browse, cycled by object index
FILL_ALPHA = 64  # of 255: objects are filled lightly so the image stays visible
POLYGON_TOLERANCE = 0.7  # px: outline polygons stay within this of the pixel outline


@dataclass
class ExplorerObjects:
    """The instance objects of one sample, as plain arrays.

    gt_masks (G, H, W) bool, gt_classes (G,) int, gt_crowd (G,) bool: ground truth in file order.
    pred_ids (H, W) int or None (no prediction): 0 background, k + 1 where prediction k is (predictions
    in descending score order, as the per-object matches index them). matches: the per-object match list
    (dicts with "gt", "pred" indices or None, "class_id", "status" TP/FP/FN/crowd, "iou", "score"), or
    None when unknown (a dataset browse): then every object gets its own colour.
    """

    gt_masks: np.ndarray
    gt_classes: np.ndarray
    gt_crowd: np.ndarray
    pred_ids: np.ndarray | None = None
    matches: list[dict[str, Any]] | None = None


@dataclass
class ObjectLayers:
    """What the explorer writes for one sample's objects.

    gt / pred: inline entries, one per object (see :func:`_entry` for the layout); pred is None without a
    prediction. images: RGBA (H, W, 4) uint8 overlays by kind ("gt", "pred", "error" = predictions by
    outcome plus missed and crowd ground truth). gt_classes / pred_classes: class ids present.
    """

    gt: list[list[Any]] = field(default_factory=list)
    pred: list[list[Any]] | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)
    gt_classes: list[int] = field(default_factory=list)
    pred_classes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class _Shape:
    """One object cut to its bounding box: ``crop`` (h, w) bool at (y, x) of the image."""

    y: int
    x: int
    crop: np.ndarray
    _rims: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    def padded(self, pad: int) -> np.ndarray:
        """(h + 2 pad, w + 2 pad) uint8 0/1: the crop with a zero border (np.pad is slow on small arrays)."""
        h, w = self.crop.shape
        out = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
        out[pad: pad + h, pad: pad + w] = self.crop
        return out

    def rim(self, width: int) -> np.ndarray:
        """(h, w) bool: the object's outline, ``width`` px inside it; the image border counts as an edge.
        Kept, since one object is painted into up to two layers."""
        if width not in self._rims:
            ring = object_outlines(self.padded(width)[None].astype(bool), width)[0]
            self._rims[width] = ring[width: ring.shape[0] - width, width: ring.shape[1] - width]
        return self._rims[width]


def object_layers(objects: ExplorerObjects, height: int, width: int, class_colors: np.ndarray,
                  sample_id: str) -> ObjectLayers:
    """Entries and RGBA overlays of ``objects`` on a (height, width) image; ``class_colors`` (C, 3) uint8
    indexed by class id (a browse fills objects with them). Objects that do not fit the image, and match
    entries that point at no object, become ``problems`` and are left out."""
    out = ObjectLayers()
    gt_masks = np.asarray(objects.gt_masks, bool)
    n_gt = len(gt_masks)
    gt_classes = np.asarray(objects.gt_classes, np.int64).reshape(-1)
    gt_crowd = np.asarray(objects.gt_crowd, bool).reshape(-1)
    if gt_masks.ndim != 3 or gt_masks.shape[1:] != (height, width) or len(gt_classes) != n_gt \
            or len(gt_crowd) != n_gt:
        out.problems.append(f"sample {sample_id}: ground-truth objects {gt_masks.shape} (classes "
                            f"{gt_classes.shape}, crowd {gt_crowd.shape}) do not fit the {width}x{height} image; "
                            f"they are not shown")
        gt_masks, gt_classes, gt_crowd, n_gt = np.zeros((0, height, width), bool), gt_classes[:0], gt_crowd[:0], 0
    gt_shapes = [_crop(m) for m in gt_masks]
    pred_shapes: list[_Shape | None] | None = None
    if objects.pred_ids is not None:
        ids = np.asarray(objects.pred_ids)
        if ids.shape != (height, width) or ids.dtype.kind not in "ui":
            out.problems.append(f"sample {sample_id}: the predicted id map is {ids.shape[1::-1]} {ids.dtype} but "
                                f"the image is {width}x{height}; expected a 16-bit id map of that size; the "
                                f"prediction is not shown")
        else:
            pred_shapes = _id_shapes(ids)
    n_pred = len(pred_shapes) if pred_shapes is not None else 0

    gt_info = [_Outcome(0 if objects.matches is None else (4 if gt_crowd[g] else 3), int(gt_classes[g]))
               for g in range(n_gt)]
    pred_info = [_Outcome(0 if objects.matches is None else 5, -1) for _ in range(n_pred)]
    if objects.matches is not None:
        _apply_matches(objects.matches, gt_info, pred_info, gt_crowd, out.problems, sample_id)

    object_colors = distinct_colors(OBJECT_PALETTE)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(class_colors)] = class_colors[:256]

    def colours(info: _Outcome, k: int) -> tuple[np.ndarray, np.ndarray]:
        if info.code:
            rgb = np.array(OBJECT_STATUS[info.code][2], np.uint8)
            return rgb, rgb
        line = object_colors[k % OBJECT_PALETTE]
        return line, (palette[info.class_id] if 0 <= info.class_id < 256 else line)

    outline = max(1, round(max(height, width) / 400))  # about one screen pixel when the panel fits the page
    gt_items = [(s, info, *colours(info, k)) for k, (s, info) in enumerate(zip(gt_shapes, gt_info))]
    out.gt = [_entry(info, s) for s, info in zip(gt_shapes, gt_info)]
    out.gt_classes = sorted(set(gt_classes.tolist()))
    out.images["gt"] = _paint(height, width, gt_items, outline)
    if pred_shapes is not None:
        pred_items = [(s, info, *colours(info, k)) for k, (s, info) in enumerate(zip(pred_shapes, pred_info))]
        out.pred = [_entry(info, s) for s, info in zip(pred_shapes, pred_info)]
        out.pred_classes = sorted({i.class_id for i in pred_info if i.class_id >= 0})
        out.images["pred"] = _paint(height, width, pred_items, outline)
        if objects.matches is not None:
            missed = [item for item in gt_items if item[1].code in (3, 4)]
            out.images["error"] = _paint(height, width, pred_items + missed, outline)
    return out


@dataclass
class _Outcome:
    """How one object fared: code (OBJECT_STATUS), class, IoU, score, the matched object's index."""

    code: int
    class_id: int
    iou: float | None = None
    score: float | None = None
    partner: int | None = None


def _apply_matches(matches: Sequence[Any], gt: list[_Outcome], pred: list[_Outcome], gt_crowd: np.ndarray,
                   problems: list[str], sample_id: str) -> None:
    """Fill the outcomes from the match list; entries pointing at no object are reported once."""
    bad: list[str] = []

    def index(value: Any, n: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 <= value < n:
            return int(value)
        raise IndexError(value)

    for m in matches:
        try:
            if not isinstance(m, dict):
                raise IndexError(m)
            code = STATUS_CODES.get(str(m.get("status")))
            g, d = index(m.get("gt"), len(gt)), index(m.get("pred"), len(pred))
            if code is None or (code in (1, 4) and (g is None or d is None)) or (code == 2 and d is None) \
                    or (code == 3 and g is None):
                raise IndexError(m)
        except IndexError:
            bad.append(str(m)[:80])
            continue
        iou, score, class_id = _float(m.get("iou")), _float(m.get("score")), m.get("class_id")
        if d is not None:
            pred[d] = _Outcome(code, int(class_id) if isinstance(class_id, int) else -1, iou, score, g)
        if g is not None:
            if code == 4:  # a crowd region may hold several predictions: keep its best overlap
                if gt[g].iou is None or (iou is not None and iou > gt[g].iou):
                    gt[g] = _Outcome(4, gt[g].class_id, iou, score, d)
            else:
                gt[g] = _Outcome(code, gt[g].class_id, iou, score, d)
    if bad:
        problems.append(f"sample {sample_id}: {len(bad)} per-object match entr{'y' if len(bad) == 1 else 'ies'} "
                        f"point at no object of this image ({len(gt)} ground truth, {len(pred)} predicted) or lack "
                        f"a status TP/FP/FN/crowd, e.g. {bad[0]}; were the predictions and the table written by "
                        f"the same evaluation?")


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else None


def _crop(mask: np.ndarray) -> _Shape | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return _Shape(int(rows[0]), int(cols[0]), mask[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1])


def _id_shapes(ids: np.ndarray) -> list[_Shape | None]:
    """Prediction k is id k + 1; an id with no pixel left (hidden under a more confident object) is None."""
    from scipy import ndimage

    n = int(ids.max(initial=0))
    boxes = ndimage.find_objects(ids.astype(np.int64, copy=False), max_label=n) if n else []
    return [None if box is None else _Shape(box[0].start, box[1].start, ids[box] == k + 1)
            for k, box in enumerate(boxes)]


def _entry(info: _Outcome, shape: _Shape | None) -> list[Any]:
    """[code, class_id, iou, score, partner, area_px, x, y, w, h, path]: bounding box in image pixels and
    the outline as rings "x,y,x,y,...;..." of pixel centres (holes as their own rings, filled even-odd);
    area 0 and path "" for an object with no pixel on the image."""
    head = [info.code, info.class_id, _round(info.iou), _round(info.score), info.partner]
    if shape is None:
        return [*head, 0, 0, 0, 0, 0, ""]
    h, w = shape.crop.shape
    return [*head, shape.area, shape.x, shape.y, w, h, _rings(shape)]


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def _rings(shape: _Shape) -> str:
    # A zero border: a contour along the crop's edge still closes.
    contours, _ = cv2.findContours(shape.padded(1), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    rings = []
    for c in contours:
        poly = cv2.approxPolyDP(c, POLYGON_TOLERANCE, True).reshape(-1, 2) + (shape.x - 1, shape.y - 1)
        rings.append(",".join(str(int(v)) for v in poly.ravel()))
    return ";".join(rings)


def _paint(height: int, width: int, items: Sequence[tuple[_Shape | None, _Outcome, np.ndarray, np.ndarray]],
           outline: int) -> np.ndarray:
    """(H, W, 4) uint8: each object filled lightly (FILL_ALPHA) with its fill colour and outlined opaquely in its
    outline colour; larger objects first, so a small object on a large one stays visible."""
    rgba = np.zeros((height, width, 4), np.uint8)
    drawn = sorted((it for it in items if it[0] is not None), key=lambda it: -it[0].area)
    for shape, _, line, fill in drawn:
        h, w = shape.crop.shape
        region = rgba[shape.y: shape.y + h, shape.x: shape.x + w]
        region[shape.crop] = (*fill, FILL_ALPHA)
        region[shape.rim(outline)] = (*line, 255)
    return rgba


ObjectLoader = Callable[[], ExplorerObjects]
