"""Instance-segmentation metrics, fed one image at a time: COCO mask AP, Boundary AP, Panoptic Quality.

Plain numpy in and out; nothing here knows about models or datasets. For each image
:meth:`InstanceMetrics.update` takes the ground-truth objects (masks ``(G, H, W)`` bool, classes,
``iscrowd``) and the predicted objects (masks ``(D, H, W)`` bool, classes, scores) and returns that
image's per-sample row; :meth:`InstanceMetrics.compute` reduces over all images seen.

**Mask AP** is pycocotools' ``COCOeval`` (``iouType='segm'``) on compressed RLEs. ``COCOeval`` works
in two steps: ``evaluateImg`` matches detections to ground truth per (image, class, area range),
independently of every other image, then ``accumulate`` pools those records into precision/recall.
So each :meth:`update` runs ``evaluateImg`` on its own image and keeps only the (trimmed) records;
:meth:`compute` hands all of them to ``COCOeval.accumulate`` once. This is exactly what
``COCOeval.evaluate(); accumulate()`` computes over the whole set (tested), without keeping any
mask or RLE and without a second matching pass. Image ids are the update order (1, 2, ...), which
is the order ``COCOeval`` would sort them in, so ties in score across images break the same way.

**Boundary AP** (Cheng et al., CVPR 2021) is the same evaluation with the match IoU replaced by
``min(mask IoU, boundary IoU)`` (``COCOeval.computeIoU`` overridden, as in the reference
bowenc0221/boundary-iou-api). An object's boundary is the mask minus its erosion by
``d = boundary_dilation(H, W, dilation_ratio)`` pixels (:mod:`masklab.metrics.boundary`; image
border counts as contour). Crowd ground truth keeps its plain (crowd) mask IoU, as the reference does.

**Panoptic Quality** (Kirillov et al., CVPR 2019) over thing classes: predictions with
``score >= score_threshold`` are painted into one non-overlapping map (:func:`resolve_overlaps`),
ground-truth pixels claimed by two or more objects become void, then segments of one class match
when IoU > 0.5 (unique by construction). ``IoU = |P & G| / (|P| + |G| - |P & G| - |P & void|)``;
an unmatched prediction is not a false positive when more than half of it lies on void or on crowd
regions of its class (panopticapi's rule); unmatched crowd regions are not false negatives. Per
class ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP`` (0 when TP = 0),
``RQ = TP / (TP + FP/2 + FN/2)``; means over classes with ``TP + FP + FN > 0`` (torchmetrics and
panopticapi alike). Without crowd regions this equals torchmetrics' ``PanopticQuality`` (tested).

Undefined values are NaN (COCO's -1 becomes NaN): a class without ground truth has no AP, a class
with ``TP + FP + FN = 0`` has no PQ, and a mean over no class is NaN.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from masklab.metrics.boundary import boundary_band, boundary_dilation

__all__ = [
    "InstanceMetrics",
    "coco_summary",
    "match_objects",
    "object_boundaries",
    "panoptic_counts",
    "resolve_overlaps",
]

AREA_LABELS = ("all", "small", "medium", "large")  # COCO's area ranges, in pycocotools' order
MATCH_IOU = 0.5  # IoU for the per-image counts and matches (COCO's AP50 rule)
NAN = float("nan")


# ---------------------------------------------------------------------------------------------
# Masks: boundaries, RLEs
# ---------------------------------------------------------------------------------------------


def object_boundaries(masks: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Boundary region of each object: the mask minus its erosion by ``d`` pixels.

    masks: (K, H, W) bool. Returns (K, H, W) bool with ``d = boundary_dilation(H, W, dilation_ratio)``
    (chessboard distance; pixels on the image border count as contour, as in Cheng et al.'s code).

    Each mask is cut to its bounding box and all boxes go through one :func:`boundary_band` call on
    a zero canvas of the largest box. Exact: for a binary mask a pixel is in the band iff a non-mask
    pixel or the image border lies within ``d``, and everything outside the box is non-mask (or
    beyond the border), as is the canvas padding.
    """
    k, h, w = masks.shape
    out = np.zeros((k, h, w), dtype=bool)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    boxes = []
    for i in np.flatnonzero(rows.any(axis=1)):  # empty masks have an empty boundary
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        boxes.append((i, ys[0], ys[-1] + 1, xs[0], xs[-1] + 1))
    if not boxes:
        return out
    canvas = np.zeros((len(boxes), max(b[2] - b[1] for b in boxes), max(b[4] - b[3] for b in boxes)), np.uint8)
    for j, (i, y0, y1, x0, x1) in enumerate(boxes):
        canvas[j, : y1 - y0, : x1 - x0] = masks[i, y0:y1, x0:x1]
    d = boundary_dilation(h, w, dilation_ratio)
    band = (boundary_band(torch.from_numpy(canvas), d) & torch.from_numpy(canvas).bool()).numpy()
    for j, (i, y0, y1, x0, x1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = band[j, : y1 - y0, : x1 - x0]
    return out


def _encode(masks: np.ndarray) -> list[dict]:
    """(K, H, W) bool -> K compressed COCO RLEs (pycocotools' own dicts, counts as bytes)."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# COCOeval, one image at a time
# ---------------------------------------------------------------------------------------------


@functools.cache
def _coco_eval_classes() -> tuple[type, type]:
    """The two COCOeval subclasses (built on first use: pycocotools is imported only when needed)."""
    from pycocotools import mask as mask_utils
    from pycocotools.cocoeval import COCOeval

    class ImageCOCOeval(COCOeval):
        """COCOeval whose ground truth and detections are set per image (no COCO index, no prints)."""

        def evaluate_image(self, img_id: int, gts: list[dict], dts: list[dict]) -> list[dict | None]:
            """``evaluateImg`` records of one image, ordered [class][area range] like ``evalImgs``."""
            p = self.params
            self._gts, self._dts = defaultdict(list), defaultdict(list)
            for g in gts:
                self._gts[img_id, g["category_id"]].append(g)
            for d in dts:
                self._dts[img_id, d["category_id"]].append(d)
            self.ious = {(img_id, c): self.computeIoU(img_id, c) for c in p.catIds}
            return [_trim(self.evaluateImg(img_id, c, a, p.maxDets[-1])) for c in p.catIds for a in p.areaRng]

    class BoundaryCOCOeval(ImageCOCOeval):
        """Match IoU = min(mask IoU, boundary IoU) for regular ground truth; crowd keeps mask IoU."""

        def computeIoU(self, imgId: int, catId: int) -> np.ndarray | list:  # noqa: N802, N803 (COCOeval's names)
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
            if not gt or not dt:
                return []
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: self.params.maxDets[-1]]
            dt = [dt[i] for i in order]  # same order and cut as COCOeval.computeIoU
            crowd = np.array([int(g["iscrowd"]) for g in gt])
            mask_iou = np.asarray(mask_utils.iou([d["segmentation"] for d in dt],
                                                 [g["segmentation"] for g in gt], crowd.tolist()))
            boundary_iou = np.asarray(mask_utils.iou([d["boundary"] for d in dt],
                                                     [g["boundary"] for g in gt], crowd.tolist()))
            return np.where(crowd[None, :] == 1, mask_iou, np.minimum(mask_iou, boundary_iou))

    return ImageCOCOeval, BoundaryCOCOeval


def _trim(record: dict | None) -> dict | None:
    """Keep only what ``COCOeval.accumulate`` reads, in compact dtypes.

    accumulate uses dtMatches only as a truth value (matched or not) and the ignore flags as
    booleans, so bool arrays give the same result at 1/8 of the memory.
    """
    if record is None:
        return None
    return {
        "dtScores": np.asarray(record["dtScores"], dtype=np.float64),
        "dtMatches": np.asarray(record["dtMatches"]) != 0,
        "dtIgnore": np.asarray(record["dtIgnore"], dtype=bool),
        "gtIgnore": np.asarray(record["gtIgnore"], dtype=bool),
    }


def _new_eval(kind: str, cat_ids: Sequence[int], max_dets: int) -> Any:
    """A COCOeval ('mask' or 'boundary') with default COCO parameters except classes and maxDets."""
    mask_cls, boundary_cls = _coco_eval_classes()
    ev = (boundary_cls if kind == "boundary" else mask_cls)(iouType="segm")
    ev.params.catIds = sorted(cat_ids)
    ev.params.maxDets = [1, 10, max_dets]
    return ev


def _accumulate(ev: Any, records: Sequence[list[dict | None]], summary_only: bool = False) -> dict:
    """Run ``COCOeval.accumulate`` on per-image records (each ordered [class][area]); returns ``ev.eval``.

    summary_only: accumulate area 'all' at the largest maxDets only (what the image AP needs).
    """
    p = ev.params
    n_img, n_area = len(records), len(p.areaRng)
    p.imgIds = list(range(1, n_img + 1))
    # evalImgs is indexed [class][area][image] (COCOeval.evaluate's loop order).
    ev.evalImgs = [records[i][k * n_area + a] for k in range(len(p.catIds)) for a in range(n_area)
                   for i in range(n_img)]
    ev._paramsEval = copy.deepcopy(p)
    run = copy.deepcopy(p)
    if summary_only:
        # 'all' is first in both lists, so accumulate's index arithmetic still finds its records.
        run.areaRng, run.areaRngLbl, run.maxDets = p.areaRng[:1], p.areaRngLbl[:1], p.maxDets[-1:]
    # accumulate prints progress lines; the redirect swaps sys.stdout process-wide for this call.
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate(run)
    return ev.eval


def _mean_defined(values: np.ndarray) -> float:
    """Mean over entries > -1 (COCO's 'defined' marker); NaN when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else NAN


def coco_summary(coco_eval: dict, prefix: str) -> dict[str, float]:
    """The 12 numbers of ``COCOeval.summarize`` from an ``eval`` dict, named, NaN where COCO says -1.

    Keys: ``{prefix}AP``, ``AP50``, ``AP75``, ``AP_small``, ``AP_medium``, ``AP_large`` (at the largest
    maxDets), ``AR{m}`` for each maxDets m, ``AR_small``, ``AR_medium``, ``AR_large``.
    """
    p = coco_eval["params"]
    precision, recall = coco_eval["precision"], coco_eval["recall"]  # (T, R, K, A, M), (T, K, A, M)
    m_last = len(p.maxDets) - 1

    def pick(ap: bool, iou: float | None, area: str, m: int) -> float:
        a = list(p.areaRngLbl).index(area)
        s = precision[..., a, m] if ap else recall[..., a, m]
        if iou is not None:
            s = s[np.where(iou == p.iouThrs)[0]]  # exact float match, as summarize does
        return _mean_defined(s)

    out = {
        f"{prefix}AP": pick(True, None, "all", m_last),
        f"{prefix}AP50": pick(True, 0.5, "all", m_last),
        f"{prefix}AP75": pick(True, 0.75, "all", m_last),
    }
    out.update({f"{prefix}AP_{area}": pick(True, None, area, m_last) for area in AREA_LABELS[1:]})
    out.update({f"{prefix}AR{m}": pick(False, None, "all", i) for i, m in enumerate(p.maxDets)})
    out.update({f"{prefix}AR_{area}": pick(False, None, area, m_last) for area in AREA_LABELS[1:]})
    return out


# ---------------------------------------------------------------------------------------------
# Per-image matching (counts, TP/FP/FN list)
# ---------------------------------------------------------------------------------------------


def match_objects(iou: np.ndarray, same_class: np.ndarray, gt_crowd: np.ndarray, pred_order: np.ndarray,
                  threshold: float = MATCH_IOU) -> np.ndarray:
    """COCO's greedy matching at one IoU threshold: the ground-truth index each prediction takes, or -1.

    iou: (D, G) float mask IoU (crowd columns: intersection over prediction area, as COCO).
    same_class: (D, G) bool. gt_crowd: (G,) bool. pred_order: indices of the predictions to match,
    highest score first. As ``COCOeval.evaluateImg``: each prediction takes the regular ground truth
    with the highest IoU >= threshold not taken yet (the last one among equals), else a crowd region
    (which any number of predictions may share).
    """
    pred_to_gt = np.full(iou.shape[0], -1, dtype=np.int64)
    taken = np.zeros(iou.shape[1], dtype=bool)
    t = min(threshold, 1 - 1e-10)
    for d in pred_order:
        ok = same_class[d] & (iou[d] >= t)
        for pool in (ok & ~gt_crowd & ~taken, ok & gt_crowd):
            if pool.any():
                best = iou[d][pool].max()
                g = int(np.flatnonzero(pool & (iou[d] == best))[-1])
                pred_to_gt[d] = g
                taken[g] |= not gt_crowd[g]
                break
    return pred_to_gt


# ---------------------------------------------------------------------------------------------
# Panoptic Quality
# ---------------------------------------------------------------------------------------------


def resolve_overlaps(pred_masks: np.ndarray, pred_scores: np.ndarray, score_threshold: float = 0.5,
                     overlap_threshold: float = 0.5) -> np.ndarray:
    """Paint predictions into one non-overlapping map: (H, W) int64, 0 = none, k + 1 = prediction k.

    Predictions with ``score >= score_threshold`` are painted highest score first (stable for ties);
    each keeps only pixels no earlier one took, and is dropped entirely (its pixels stay free) when
    more than ``overlap_threshold`` of its area was already taken, or when it is empty. This is
    detectron2's instance-to-panoptic rule (``combine_semantic_and_instance_outputs``).
    """
    h, w = pred_masks.shape[-2:]
    out = np.zeros((h, w), dtype=np.int64)
    for k in np.argsort(-pred_scores, kind="mergesort"):
        if not pred_scores[k] >= score_threshold:
            break
        mask = pred_masks[k]
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & (out == 0)
        if area - int(free.sum()) > overlap_threshold * area:
            continue
        out[free] = k + 1
    return out


def panoptic_counts(gt_masks: np.ndarray, gt_classes: np.ndarray, gt_iscrowd: np.ndarray, pred_map: np.ndarray,
                    pred_classes: np.ndarray, class_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """PQ counts of one image per class: ``iou_sum`` (C,) float64, ``tp``, ``fp``, ``fn`` (C,) int64.

    gt_masks: (G, H, W) bool (overlaps allowed: pixels of two or more objects become void).
    pred_map: (H, W) from :func:`resolve_overlaps`. class_ids: the C classes, in output order.
    Also returns ``pred_to_gt`` (D,) int64: the ground truth each prediction matched, -1 otherwise.
    """
    n_gt = gt_masks.shape[0]
    cls_index = {c: i for i, c in enumerate(class_ids)}
    # Ground-truth label per pixel: 0 background, g + 1 object g, n_gt + 1 void (claimed twice or more).
    gt_map = np.zeros(gt_masks.shape[1:], np.int64)
    for g in range(n_gt):  # K masked writes: cheaper than an argmax across the object axis
        gt_map[gt_masks[g]] = g + 1
    gt_map[gt_masks.sum(axis=0) > 1] = n_gt + 1
    n_pred = len(pred_classes)
    # inter[p, g]: pixels of prediction p - 1 (row 0: no prediction) on label g (as in gt_map).
    inter = np.bincount((pred_map * (n_gt + 2) + gt_map).ravel(), minlength=(n_pred + 1) * (n_gt + 2))
    inter = inter.reshape(n_pred + 1, n_gt + 2)
    gt_area = inter.sum(axis=0)[1 : n_gt + 1]  # row 0 included: ground truth no prediction covers
    inter = inter[1:]
    pred_area, pred_void = inter.sum(axis=1), inter[:, n_gt + 1]
    inter = inter[:, 1 : n_gt + 1]

    crowd = gt_iscrowd.astype(bool)
    same = pred_classes[:, None] == gt_classes[None, :]
    union = pred_area[:, None] + gt_area[None, :] - inter - pred_void[:, None]
    iou = np.where(same & ~crowd[None, :] & (inter > 0), inter / np.maximum(union, 1), 0.0)
    matched = iou > 0.5  # at most one per row and column: segments on both sides are disjoint

    n_cls = len(class_ids)
    iou_sum, tp, fp, fn = np.zeros(n_cls), np.zeros(n_cls, np.int64), np.zeros(n_cls, np.int64), np.zeros(
        n_cls, np.int64)
    pred_to_gt = np.full(n_pred, -1, dtype=np.int64)
    for p, g in zip(*np.nonzero(matched)):
        k = cls_index[int(pred_classes[p])]
        iou_sum[k] += iou[p, g]
        tp[k] += 1
        pred_to_gt[p] = g
    crowd_inter = np.where(same & crowd[None, :], inter, 0).sum(axis=1)
    for p in np.flatnonzero((pred_area > 0) & (pred_to_gt < 0)):
        if (pred_void[p] + crowd_inter[p]) / pred_area[p] <= 0.5:
            fp[cls_index[int(pred_classes[p])]] += 1
    for g in np.flatnonzero((gt_area > 0) & ~crowd & ~matched.any(axis=0)):
        fn[cls_index[int(gt_classes[g])]] += 1
    return {"iou_sum": iou_sum, "tp": tp, "fp": fp, "fn": fn, "pred_to_gt": pred_to_gt}


def _pq_scores(iou_sum: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class PQ, SQ, RQ (C,) float64: NaN where TP + FP + FN = 0; SQ = 0 where TP = 0 otherwise."""
    denom = tp + 0.5 * fp + 0.5 * fn
    scored = denom > 0
    sq = np.where(tp > 0, iou_sum / np.maximum(tp, 1), 0.0)
    rq = np.where(scored, tp / np.where(scored, denom, 1), NAN)
    return {"PQ": np.where(scored, sq * rq, NAN), "SQ": np.where(scored, sq, NAN), "RQ": rq}


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else NAN


# ---------------------------------------------------------------------------------------------
# The accumulator
# ---------------------------------------------------------------------------------------------


class InstanceMetrics:
    """Streaming COCO mask AP, Boundary AP and Panoptic Quality over images fed one at a time.

    class_ids: the thing classes scored (ground truth or predictions of any other class are an error).
    dilation_ratio: boundary width as a fraction of the image diagonal (Boundary AP).
    boundary: compute Boundary AP (the costliest part). max_dets: COCO's largest maxDets (> 10).
    score_threshold: predictions with ``score >= score_threshold`` are the ones counted, matched in
    the per-sample row and painted for PQ; AP always uses every prediction (top ``max_dets``).

    :meth:`compute` keys (prefix them with the stage, e.g. ``test/mask_AP``): ``mask_AP``,
    ``mask_AP50``, ``mask_AP75``, ``mask_AP_small/medium/large``, ``mask_AR1``, ``mask_AR10``,
    ``mask_AR{max_dets}``, ``mask_AR_small/medium/large``; the same with ``boundary_`` when boundary
    is on; ``PQ``, ``SQ``, ``RQ`` (mean over thing classes); ``count_MAE`` (mean |count_error|).
    """

    def __init__(self, class_ids: Sequence[int], dilation_ratio: float = 0.02, boundary: bool = True,
                 max_dets: int = 100, score_threshold: float = 0.5):
        if len(class_ids) == 0 or len(set(class_ids)) != len(class_ids):
            raise ValueError(f"class_ids must be distinct and non-empty, got {list(class_ids)}")
        if max_dets <= 10:
            raise ValueError(f"max_dets must be > 10 (COCO's maxDets are 1, 10, max_dets), got {max_dets}")
        boundary_dilation(1, 1, dilation_ratio)  # validates the ratio
        self.class_ids = sorted(int(c) for c in class_ids)  # COCOeval's order (sorted category ids)
        self.dilation_ratio = dilation_ratio
        self.boundary = boundary
        self.max_dets = max_dets
        self.score_threshold = score_threshold
        self.reset()

    def reset(self) -> None:
        """Forget every image seen."""
        self._mask_records: list[list[dict | None]] = []
        self._boundary_records: list[list[dict | None]] = []
        n = len(self.class_ids)
        self._pq = {"iou_sum": np.zeros(n), "tp": np.zeros(n, np.int64), "fp": np.zeros(n, np.int64),
                    "fn": np.zeros(n, np.int64)}
        self._rows: dict[str, dict] = {}
        self._evals: dict[str, Any] = {}

    def _eval(self, kind: str) -> Any:
        if kind not in self._evals:
            self._evals[kind] = _new_eval(kind, self.class_ids, self.max_dets)
        return self._evals[kind]

    def _check(self, sample_id: str, gt_masks: np.ndarray, gt_classes: np.ndarray, gt_iscrowd: np.ndarray,
               pred_masks: np.ndarray, pred_classes: np.ndarray, pred_scores: np.ndarray) -> None:
        if sample_id in self._rows:
            raise ValueError(f"sample {sample_id!r} was already given to update()")
        if gt_masks.ndim != 3 or pred_masks.ndim != 3 or gt_masks.shape[1:] != pred_masks.shape[1:]:
            raise ValueError(f"sample {sample_id!r}: masks must be (K, H, W) of one size, got gt "
                             f"{gt_masks.shape} and pred {pred_masks.shape}")
        for name, values, n in (("gt_classes", gt_classes, len(gt_masks)), ("gt_iscrowd", gt_iscrowd, len(gt_masks)),
                                ("pred_classes", pred_classes, len(pred_masks)),
                                ("pred_scores", pred_scores, len(pred_masks))):
            if values.shape != (n,):
                raise ValueError(f"sample {sample_id!r}: {name} has shape {values.shape}; expected ({n},)")
        unknown = sorted(set(gt_classes.tolist() + pred_classes.tolist()) - set(self.class_ids))
        if unknown:
            raise ValueError(f"sample {sample_id!r}: class ids {unknown} are not among {self.class_ids}")
        if not np.all(np.isfinite(pred_scores)):
            raise ValueError(f"sample {sample_id!r}: pred_scores hold NaN or infinite values")

    def update(self, sample_id: str, gt_masks: np.ndarray, gt_classes: np.ndarray, gt_iscrowd: np.ndarray,
               pred_masks: np.ndarray, pred_classes: np.ndarray, pred_scores: np.ndarray) -> dict:
        """Score one image and return its per-sample row.

        gt_masks (G, H, W) bool, gt_classes (G,) int, gt_iscrowd (G,) 0/1; pred_masks (D, H, W) bool,
        pred_classes (D,) int, pred_scores (D,) float. Row keys: ``sample_id``; ``n_gt`` (regular
        ground truth, crowd excluded), ``n_crowd``; ``n_pred`` (predictions with score >=
        score_threshold, less those matched to a crowd region), ``n_pred_crowd``; ``n_matched``
        (COCO greedy matching at mask IoU >= 0.5, class-aware); ``count_error = n_pred - n_gt``;
        ``mask_AP`` and ``boundary_AP`` (COCO AP@[.5:.95] of this image alone: 0 when it has no regular
        ground truth but predictions, NaN with neither); ``PQ``, ``SQ``, ``RQ`` (this image, mean over
        its scored classes); ``matches``: one dict per object, see :meth:`_matches`.
        """
        gt_masks, pred_masks = np.asarray(gt_masks, dtype=bool), np.asarray(pred_masks, dtype=bool)
        gt_classes, pred_classes = np.asarray(gt_classes, np.int64).reshape(-1), np.asarray(pred_classes,
                                                                                             np.int64).reshape(-1)
        gt_iscrowd = np.asarray(gt_iscrowd).reshape(-1).astype(bool)
        pred_scores = np.asarray(pred_scores, np.float64).reshape(-1)
        self._check(sample_id, gt_masks, gt_classes, gt_iscrowd, pred_masks, pred_classes, pred_scores)
        img_id = len(self._rows) + 1

        gt_rles, pred_rles = _encode(gt_masks), _encode(pred_masks)
        gts = [{"id": g + 1, "image_id": img_id, "category_id": int(gt_classes[g]), "segmentation": gt_rles[g],
                "area": float(gt_masks[g].sum()), "iscrowd": int(gt_iscrowd[g]), "ignore": int(gt_iscrowd[g])}
               for g in range(len(gt_rles))]
        dts = [{"id": d + 1, "image_id": img_id, "category_id": int(pred_classes[d]), "segmentation": pred_rles[d],
                "area": float(pred_masks[d].sum()), "score": float(pred_scores[d])} for d in range(len(pred_rles))]
        mask_records = self._eval("mask").evaluate_image(img_id, gts, dts)
        has_gt = bool((~gt_iscrowd).any())
        row: dict[str, Any] = {"sample_id": sample_id}
        row.update(self._counts(gt_rles, gt_classes, gt_iscrowd, pred_rles, pred_classes, pred_scores))
        row["mask_AP"] = self._image_ap("mask", mask_records, has_gt, len(dts))
        if self.boundary:
            for objs, masks in ((gts, gt_masks), (dts, pred_masks)):
                for obj, rle in zip(objs, _encode(object_boundaries(masks, self.dilation_ratio))):
                    obj["boundary"] = rle
            boundary_records = self._eval("boundary").evaluate_image(img_id, gts, dts)
            row["boundary_AP"] = self._image_ap("boundary", boundary_records, has_gt, len(dts))
        pred_map = resolve_overlaps(pred_masks, pred_scores, self.score_threshold)
        pq = panoptic_counts(gt_masks, gt_classes, gt_iscrowd, pred_map, pred_classes, self.class_ids)
        scores = _pq_scores(pq["iou_sum"], pq["tp"], pq["fp"], pq["fn"])
        row.update({name: _nanmean(values) for name, values in scores.items()})
        row["matches"] = row.pop("matches")  # last: the one column that is not a scalar

        # Only now change state: a failure above leaves the accumulator as it was.
        self._mask_records.append(mask_records)
        if self.boundary:
            self._boundary_records.append(boundary_records)
        for key in self._pq:
            self._pq[key] += pq[key]
        self._rows[sample_id] = row
        return row

    def _image_ap(self, kind: str, records: list[dict | None], has_gt: bool, n_pred: int) -> float:
        if not has_gt:
            return 0.0 if n_pred else NAN
        precision = _accumulate(self._eval(kind), [records], summary_only=True)["precision"]
        return _mean_defined(precision)

    def _counts(self, gt_rles: list, gt_classes: np.ndarray, gt_crowd: np.ndarray, pred_rles: list,
                pred_classes: np.ndarray, pred_scores: np.ndarray) -> dict[str, Any]:
        """Counts and the per-object match list at mask IoU >= 0.5 over predictions >= score_threshold."""
        from pycocotools import mask as mask_utils

        n_pred, n_gt = len(pred_rles), len(gt_rles)
        iou = np.zeros((n_pred, n_gt))
        if n_pred and n_gt:
            iou = np.asarray(mask_utils.iou(pred_rles, gt_rles, gt_crowd.astype(int).tolist()))
        same = pred_classes[:, None] == gt_classes[None, :]
        order = np.argsort(-pred_scores, kind="mergesort")
        order = order[pred_scores[order] >= self.score_threshold]
        pred_to_gt = match_objects(iou, same, gt_crowd, order)
        on_crowd = (pred_to_gt >= 0) & gt_crowd[np.maximum(pred_to_gt, 0)] if n_gt else np.zeros(n_pred, bool)
        matched = (pred_to_gt >= 0) & ~on_crowd
        counted = np.zeros(n_pred, bool)
        counted[order] = True
        regular = same & ~gt_crowd[None, :]
        matches = []
        for d in order:
            if matched[d]:
                g = int(pred_to_gt[d])
                matches.append(_match(g, d, gt_classes[g], "TP", iou[d, g], pred_scores[d]))
            elif on_crowd[d]:
                g = int(pred_to_gt[d])
                matches.append(_match(g, d, gt_classes[g], "crowd", iou[d, g], pred_scores[d]))
            else:
                best = iou[d][regular[d]].max(initial=0.0)
                matches.append(_match(None, d, pred_classes[d], "FP", best, pred_scores[d]))
        taken = set(pred_to_gt[matched].tolist())
        for g in np.flatnonzero(~gt_crowd):
            if g not in taken:
                best = iou[counted & regular[:, g], g].max(initial=0.0)
                matches.append(_match(int(g), None, gt_classes[g], "FN", best, None))
        row = {
            "n_gt": int((~gt_crowd).sum()),
            "n_crowd": int(gt_crowd.sum()),
            "n_pred": int(counted.sum() - on_crowd.sum()),
            "n_pred_crowd": int(on_crowd.sum()),
            "n_matched": int(matched.sum()),
        }
        row["count_error"] = row["n_pred"] - row["n_gt"]
        row["matches"] = matches
        return row

    def compute(self) -> dict[str, float]:
        """Dataset-level metrics over every image given so far (see the class docstring for keys)."""
        result: dict[str, float] = {}
        kinds = ["mask"] + (["boundary"] if self.boundary else [])
        for kind in kinds:
            result.update(coco_summary(self.coco_eval(kind), f"{kind}_"))
        scores = _pq_scores(self._pq["iou_sum"], self._pq["tp"], self._pq["fp"], self._pq["fn"])
        result.update({name: _nanmean(values) for name, values in scores.items()})
        errors = [abs(r["count_error"]) for r in self._rows.values()]
        result["count_MAE"] = float(np.mean(errors)) if errors else NAN
        return result

    def coco_eval(self, kind: str = "mask") -> dict:
        """COCOeval's ``eval`` dict over every image so far, kind 'mask' or 'boundary': ``params``,
        ``precision`` (T, R, K, A, M) and ``recall`` (T, K, A, M), -1 where undefined."""
        records = self._mask_records if kind == "mask" else self._boundary_records
        ev = self._eval(kind)
        if not records:  # no image: every entry undefined (-1), like COCOeval on an empty set
            p = ev.params
            shape = (len(p.iouThrs), len(p.recThrs), len(p.catIds), len(p.areaRng), len(p.maxDets))
            return {"params": p, "precision": -np.ones(shape), "recall": -np.ones(shape[:1] + shape[2:])}
        return _accumulate(ev, records)

    def per_class(self) -> list[dict]:
        """One row per class: ``class_id``, ``mask_AP``, ``mask_AP50``, ``mask_AP75``, [``boundary_AP``,
        ``boundary_AP50``, ``boundary_AP75``], ``PQ``, ``SQ``, ``RQ``, ``TP``, ``FP``, ``FN`` (PQ counts).
        NaN where undefined (no ground truth for AP; TP + FP + FN = 0 for PQ)."""
        rows = [{"class_id": c} for c in self.class_ids]
        kinds = ["mask"] + (["boundary"] if self.boundary else [])
        for kind in kinds:
            ev = self.coco_eval(kind)
            precision, iou_thrs = ev["precision"][..., 0, -1], ev["params"].iouThrs  # area 'all', top maxDets
            for k, row in enumerate(rows):
                row[f"{kind}_AP"] = _mean_defined(precision[:, :, k])
                for name, thr in (("AP50", 0.5), ("AP75", 0.75)):
                    row[f"{kind}_{name}"] = _mean_defined(precision[np.where(thr == iou_thrs)[0], :, k])
        scores = _pq_scores(self._pq["iou_sum"], self._pq["tp"], self._pq["fp"], self._pq["fn"])
        for k, row in enumerate(rows):
            row.update({name: float(values[k]) for name, values in scores.items()})
            row.update({"TP": int(self._pq["tp"][k]), "FP": int(self._pq["fp"][k]), "FN": int(self._pq["fn"][k])})
        return rows

    def per_sample(self) -> list[dict]:
        """Every row :meth:`update` returned, in update order (keyed by ``sample_id``)."""
        return list(self._rows.values())


def _match(gt: int | None, pred: int | None, class_id: Any, status: str, iou: float,
           score: float | None) -> dict[str, Any]:
    """One entry of a row's ``matches``: indices into the image's gt/pred arrays, status, mask IoU, score.

    status: TP (matched), FP (unmatched prediction; iou = its best IoU with a same-class object),
    FN (unmatched ground truth; iou = its best IoU with a counted same-class prediction), crowd
    (prediction matched to a crowd region: neither TP nor FP).
    """
    return {"gt": gt, "pred": None if pred is None else int(pred), "class_id": int(class_id), "status": status,
            "iou": float(iou), "score": None if score is None else float(score)}
