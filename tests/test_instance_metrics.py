"""Instance metrics against known answers and independent references.

References: pycocotools' COCOeval run directly on a COCO dataset built from the same objects (mask AP),
a plain implementation of the published Boundary AP rule (scipy erosion, greedy matching, 101-point
interpolated precision), torchmetrics' PanopticQuality on the same non-overlapping maps (PQ).
Randomised cases use seeded numpy (hypothesis is not a dependency).
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.ndimage import binary_erosion

from masklab.metrics.instance import InstanceMetrics, object_boundaries, resolve_overlaps

COCO_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
             "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")  # COCOeval.stats order
TOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The boundary bands are tiny torch ops: extra intra-op threads only wait on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Building images
# ---------------------------------------------------------------------------------------------


class Image:
    """One image's objects: gt (masks, classes, crowd) and predictions (masks, classes, scores)."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.gt: list[tuple[np.ndarray, int, int]] = []
        self.pred: list[tuple[np.ndarray, int, float]] = []

    def add_gt(self, mask: np.ndarray, cls: int = 1, crowd: int = 0) -> Image:
        self.gt.append((mask, cls, crowd))
        return self

    def add_pred(self, mask: np.ndarray, cls: int = 1, score: float = 0.9) -> Image:
        self.pred.append((mask, cls, score))
        return self

    def arrays(self) -> tuple[np.ndarray, ...]:
        def stack(items: list) -> np.ndarray:
            return np.stack([m for m, _, _ in items]) if items else np.zeros((0, self.h, self.w), bool)

        return (stack(self.gt), np.array([c for _, c, _ in self.gt], np.int64),
                np.array([z for _, _, z in self.gt], np.uint8), stack(self.pred),
                np.array([c for _, c, _ in self.pred], np.int64), np.array([s for _, _, s in self.pred], float))


def box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def run(images: list[Image], class_ids=(1,), **kwargs) -> tuple[InstanceMetrics, list[dict]]:
    metric = InstanceMetrics(list(class_ids), **kwargs)
    rows = [metric.update(f"s{i}", *img.arrays()) for i, img in enumerate(images)]
    return metric, rows


def random_blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An ellipse or a rectangle of random size and place (never empty)."""
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(2, h / 3), rng.uniform(2, w / 3)
    yy, xx = np.mgrid[:h, :w]
    if rng.random() < 0.5:
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    else:
        m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    if not m.any():
        m[min(int(cy), h - 1), min(int(cx), w - 1)] = True
    return m


def random_image(rng: np.random.Generator, h: int, w: int, n_obj: int, classes=(1, 2, 3),
                 crowd: bool = False) -> Image:
    """Random objects; predictions are shifted / grown / shrunk copies, some with the wrong class,
    plus spurious ones. Scores are rounded to 0.05 so ties happen (also across images)."""
    img = Image(h, w)
    for k in range(n_obj):
        m = random_blob(rng, h, w)
        cls = int(rng.choice(classes))
        img.add_gt(m, cls, int(crowd and k == 0))
        if rng.random() < 0.8:
            shift = (0, 0) if rng.random() < 0.4 else tuple(int(v) for v in rng.integers(-2, 3, 2))
            p = np.roll(m, shift, axis=(0, 1))
            if rng.random() < 0.3:
                p = binary_erosion(p) if p.sum() > 20 else p | np.roll(p, 1, axis=1)
            pcls = cls if rng.random() < 0.85 else int(rng.choice(classes))
            img.add_pred(p, pcls, round(float(rng.uniform(0.05, 1.0)) * 20) / 20)
    for _ in range(int(rng.integers(0, 3))):
        img.add_pred(random_blob(rng, h, w), int(rng.choice(classes)), round(float(rng.uniform(0.05, 1.0)) * 20) / 20)
    return img


def random_images(seed: int, n: int, n_obj=(0, 8), crowd_every: int = 0, sizes=((48, 64), (64, 64), (40, 56))):
    rng = np.random.default_rng(seed)
    return [random_image(rng, *sizes[i % len(sizes)], int(rng.integers(*n_obj)),
                         crowd=bool(crowd_every and i % crowd_every == 0)) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def coco_dicts(images: list[Image], class_ids=(1,), text_counts: bool = False) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dataset and results list of ``images`` (ids from 1); ``text_counts``: RLE counts as str
    and a placeholder bbox, as faster-coco-eval's loader wants them."""
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in class_ids]}
    results = []

    def rle_of(mask: np.ndarray) -> dict:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode()} if text_counts else rle

    for i, img in enumerate(images, start=1):
        gt["images"].append({"id": i, "height": img.h, "width": img.w})
        for mask, cls, crowd in img.gt:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": cls,
                                      "segmentation": rle_of(mask), "area": float(mask.sum()), "iscrowd": crowd,
                                      **({"bbox": [0, 0, 1, 1]} if text_counts else {})})
        for mask, cls, score in img.pred:
            results.append({"image_id": i, "category_id": cls, "segmentation": rle_of(mask), "score": score})
    return gt, results


def coco_direct(images: list[Image], class_ids=(1,), max_dets=100) -> COCOeval:
    """pycocotools as a user runs it: a COCO ground-truth dataset, loadRes, evaluate, accumulate, summarize."""
    gt, results = coco_dicts(images, class_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="segm")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_boundary_direct(images: list[Image], class_ids=(1,)) -> COCOeval:
    """Boundary AP as bowenc0221/boundary-iou-api computes it, on pycocotools' own COCOeval run as a user runs it
    over the whole dataset: ``computeIoU`` overridden to min(mask IoU, boundary IoU), a crowd region keeping its
    (crowd) mask IoU, each boundary from :func:`plain_boundary` (scipy's erosion, not masklab's band)."""
    gt, results = coco_dicts(images, class_ids)
    for obj in [*gt["annotations"], *results]:
        h, w = obj["segmentation"]["size"]
        mask = mask_utils.decode(obj["segmentation"]).astype(bool)
        obj["boundary"] = mask_utils.encode(np.asfortranarray(plain_boundary(mask).astype(np.uint8)))
        assert (h, w) == mask.shape

    class BoundaryEval(COCOeval):
        def computeIoU(self, imgId, catId):  # noqa: N802, N803 (COCOeval's names)
            gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
            if not gts or not dts:
                return []
            order = np.argsort([-d["score"] for d in dts], kind="mergesort")[: self.params.maxDets[-1]]
            dts = [dts[i] for i in order]
            crowd = [int(g["iscrowd"]) for g in gts]
            mask_iou = np.asarray(mask_utils.iou([d["segmentation"] for d in dts], [g["segmentation"] for g in gts],
                                                 crowd))
            band_iou = np.asarray(mask_utils.iou([d["boundary"] for d in dts], [g["boundary"] for g in gts], crowd))
            return np.where(np.array(crowd)[None, :] == 1, mask_iou, np.minimum(mask_iou, band_iou))

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = BoundaryEval(coco_gt, coco_gt.loadRes(results), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def plain_boundary(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """Mask minus its erosion by d = max(1, round(ratio * diagonal)) with a 3x3 square (outside = 0)."""
    h, w = mask.shape
    d = max(1, int(round(ratio * math.sqrt(h * h + w * w))))
    return mask & ~binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=d, border_value=0)


def plain_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def plain_boundary_iou(p: np.ndarray, g: np.ndarray) -> float:
    return min(plain_iou(p, g), plain_iou(plain_boundary(p), plain_boundary(g)))


def plain_ap(images: list[Image], class_ids, iou_fn) -> float:
    """COCO-style AP@[.5:.95] from the published rule (no crowd, no area ranges, <= 100 predictions):
    per class and threshold, predictions highest score first take the unmatched ground truth of
    highest IoU >= threshold; precision made monotone; sampled at recall 0, 0.01, ..., 1."""
    aps = []
    for c in class_ids:
        n_gt = sum(1 for img in images for _, cls, _ in img.gt if cls == c)
        if n_gt == 0:
            continue
        ious = []  # per image: (preds sorted by score, iou matrix)
        for img in images:
            preds = sorted([p for p in img.pred if p[1] == c], key=lambda p: -p[2])
            gts = [g for g in img.gt if g[1] == c]
            ious.append((preds, np.array([[iou_fn(p[0], g[0]) for g in gts] for p in preds]).reshape(len(preds),
                                                                                                     len(gts))))
        for t in np.linspace(0.5, 0.95, 10):
            dets = []
            for preds, iou in ious:
                taken: set[int] = set()
                for d, p in enumerate(preds):
                    best, m = t, None
                    for g in range(iou.shape[1]):
                        if g not in taken and iou[d, g] >= best:
                            best, m = iou[d, g], g
                    if m is not None:
                        taken.add(m)
                    dets.append((p[2], m is not None))
            dets.sort(key=lambda x: -x[0])  # stable: image order, then score order, among ties
            tp = np.cumsum([hit for _, hit in dets])
            fp = np.cumsum([not hit for _, hit in dets])
            recall = tp / n_gt
            precision = tp / np.maximum(tp + fp, 1)
            for i in range(len(precision) - 1, 0, -1):
                precision[i - 1] = max(precision[i - 1], precision[i])
            q = [precision[np.argmax(recall >= r)] if len(recall) and recall[-1] >= r else 0.0
                 for r in np.linspace(0, 1, 101)]
            aps.append(np.mean(q))
    return float(np.mean(aps))


def paint(img: Image, score_threshold: float = 0.5) -> np.ndarray:
    """Plain painter: highest score first, a prediction losing more than half its pixels is dropped."""
    out = np.zeros((img.h, img.w), np.int64)
    for k in sorted(range(len(img.pred)), key=lambda k: -img.pred[k][2]):
        mask, _, score = img.pred[k]
        if score < score_threshold or not mask.any():
            continue
        free = mask & (out == 0)
        if free.sum() >= 0.5 * mask.sum():
            out[free] = k + 1
    return out


def panoptic_tensors(img: Image, background: int, void: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, H, W, 2) preds and target for torchmetrics: background a stuff class, overlaps void."""
    target = np.zeros((img.h, img.w, 2), np.int64)
    target[..., 0] = background
    cover = np.zeros((img.h, img.w), int)
    for g, (mask, cls, _) in enumerate(img.gt):
        target[mask] = (cls, g + 1)
        cover += mask
    target[cover > 1] = (void, 0)
    pred = np.zeros((img.h, img.w, 2), np.int64)
    pred[..., 0] = background
    painted = paint(img)
    for k, (_, cls, _) in enumerate(img.pred):
        pred[painted == k + 1] = (cls, k + 1)
    return torch.from_numpy(pred)[None], torch.from_numpy(target)[None]


def assert_same(ours: float, theirs: float) -> None:
    if theirs == -1 or (isinstance(theirs, float) and math.isnan(theirs)):
        assert math.isnan(ours), (ours, theirs)
    else:
        assert abs(ours - theirs) <= TOL, (ours, theirs)


# ---------------------------------------------------------------------------------------------
# Hand-made cases with known answers
# ---------------------------------------------------------------------------------------------

H = W = 64


def test_perfect_prediction_scores_one():
    img = Image(H, W).add_gt(box(H, W, 5, 5, 20, 25)).add_gt(box(H, W, 30, 30, 60, 50), 2)
    img.add_pred(box(H, W, 5, 5, 20, 25), 1, 0.9).add_pred(box(H, W, 30, 30, 60, 50), 2, 0.6)
    metric, (row,) = run([img], class_ids=(1, 2))
    result = metric.compute()
    for key in ("mask_AP", "mask_AP50", "mask_AP75", "mask_AR100", "boundary_AP", "PQ", "SQ", "RQ"):
        assert result[key] == pytest.approx(1.0, abs=1e-12), key
    assert math.isnan(result["mask_AP_large"])  # no large object: undefined, not 0
    assert row["n_gt"] == row["n_pred"] == row["n_matched"] == 2 and row["count_error"] == 0
    assert row["mask_AP"] == pytest.approx(1.0) and row["PQ"] == 1.0
    assert [(m["gt"], m["pred"], m["status"], m["iou"]) for m in row["matches"]] == [(0, 0, "TP", 1.0),
                                                                                     (1, 1, "TP", 1.0)]
    assert [r["PQ"] for r in metric.per_class()] == [1.0, 1.0]


def test_one_missing_object():
    img = Image(H, W).add_gt(box(H, W, 5, 5, 20, 25)).add_gt(box(H, W, 30, 30, 60, 50))
    img.add_pred(box(H, W, 5, 5, 20, 25))
    metric, (row,) = run([img])
    result = metric.compute()
    # precision 1 up to recall 0.5, nothing beyond: 51 of the 101 recall points.
    assert result["mask_AP"] == pytest.approx(51 / 101, abs=1e-12)
    assert result["mask_AR100"] == pytest.approx(0.5)
    assert (result["PQ"], result["SQ"], result["RQ"]) == pytest.approx((2 / 3, 1.0, 2 / 3))
    assert row["count_error"] == -1 and row["n_matched"] == 1
    assert [(m["gt"], m["pred"], m["status"]) for m in row["matches"]] == [(0, 0, "TP"), (1, None, "FN")]


@pytest.mark.parametrize("spurious_score, expected_ap", [(0.8, 1.0), (0.95, 0.5)])
def test_one_spurious_prediction(spurious_score, expected_ap):
    img = Image(H, W).add_gt(box(H, W, 5, 5, 20, 25))
    img.add_pred(box(H, W, 5, 5, 20, 25), 1, 0.9).add_pred(box(H, W, 40, 40, 60, 60), 1, spurious_score)
    metric, (row,) = run([img])
    result = metric.compute()
    # Ranked below the true one it costs nothing in AP; ranked above, precision is 1/2 at every recall.
    assert result["mask_AP"] == pytest.approx(expected_ap, abs=1e-12)
    assert (result["PQ"], result["RQ"]) == pytest.approx((2 / 3, 2 / 3))  # PQ ignores the ranking
    assert row["count_error"] == 1 and row["n_matched"] == 1
    assert sorted(m["status"] for m in row["matches"]) == ["FP", "TP"]


@pytest.mark.parametrize("pred, mask_iou, expected", [
    (box(H, W, 20, 23, 40, 43), 340 / 460, (0.5, 0.0)),  # 3 px to the right: boundary IoU 0.31
    (box(H, W, 20, 20, 41, 40), 400 / 420, (1.0, 0.6)),  # one row too tall: boundary IoU 0.78
])
def test_shifted_object_boundary_iou_below_mask_iou(pred, mask_iou, expected):
    gt = box(H, W, 20, 20, 40, 40)
    both = plain_boundary_iou(pred, gt)
    assert plain_iou(pred, gt) == pytest.approx(mask_iou)
    assert both < mask_iou - 0.15  # the band (d = 2 px here) punishes a misplaced edge much more
    metric, (row,) = run([Image(H, W).add_gt(gt).add_pred(pred)])
    result = metric.compute()
    thresholds = np.linspace(0.5, 0.95, 10)
    # One object: AP at a threshold is 1 if the match IoU reaches it, else 0.
    assert result["mask_AP"] == pytest.approx(np.mean(thresholds <= mask_iou))
    assert result["boundary_AP"] == pytest.approx(np.mean(thresholds <= both))
    assert (result["mask_AP"], result["boundary_AP"]) == pytest.approx(expected)
    assert row["boundary_AP"] == result["boundary_AP"] < row["mask_AP"] == result["mask_AP"]
    assert row["matches"][0]["iou"] == pytest.approx(mask_iou)
    assert result["SQ"] == pytest.approx(mask_iou)


def test_crowd_region_is_ignored_in_ap_and_pq():
    img = Image(H, W).add_gt(box(H, W, 5, 5, 20, 20)).add_gt(box(H, W, 30, 10, 60, 60), crowd=1)
    img.add_pred(box(H, W, 5, 5, 20, 20), 1, 0.9).add_pred(box(H, W, 35, 15, 45, 30), 1, 0.95)  # inside the crowd
    metric, (row,) = run([img])
    result = metric.compute()
    direct = coco_direct([img])
    for key, theirs in zip(COCO_KEYS, direct.stats):
        assert_same(result[f"mask_{key}"], theirs)
    assert result["mask_AP"] == pytest.approx(1.0)  # the prediction on the crowd is not a false positive
    assert (result["PQ"], metric.per_class()[0]["FP"]) == (1.0, 0)  # panopticapi: mostly on crowd -> ignored
    assert (row["n_gt"], row["n_crowd"], row["n_pred"], row["n_pred_crowd"], row["count_error"]) == (1, 1, 1, 1, 0)
    assert {m["status"] for m in row["matches"]} == {"TP", "crowd"}


def test_prediction_outside_crowd_is_a_false_positive_in_pq():
    img = Image(H, W).add_gt(box(H, W, 5, 5, 20, 20)).add_gt(box(H, W, 30, 10, 60, 30), crowd=1)
    img.add_pred(box(H, W, 5, 5, 20, 20), 1, 0.9).add_pred(box(H, W, 35, 25, 45, 45), 1, 0.8)  # 1/4 on the crowd
    metric, _ = run([img])
    assert metric.per_class()[0]["FP"] == 1


def test_empty_images():
    empty = Image(H, W)
    only_pred = Image(H, W).add_pred(box(H, W, 5, 5, 20, 20))
    metric, (row_empty, row_pred) = run([empty, only_pred])
    assert math.isnan(row_empty["mask_AP"]) and math.isnan(row_empty["PQ"]) and row_empty["matches"] == []
    assert row_pred["mask_AP"] == 0.0 and row_pred["PQ"] == 0.0 and row_pred["count_error"] == 1
    result = metric.compute()
    assert math.isnan(result["mask_AP"])  # no ground truth anywhere: COCO's -1
    assert result["PQ"] == 0.0 and result["count_MAE"] == 0.5
    assert math.isnan(InstanceMetrics([1]).compute()["mask_AP"])


def test_resolve_overlaps_drops_predictions_that_lose_over_half():
    a = box(H, W, 0, 0, 20, 20)
    b = box(H, W, 0, 8, 20, 28)  # 12 of its 20 columns under a: loses 60%
    c = box(H, W, 0, 14, 20, 44)  # 6 of 30 columns under a, b dropped: loses 20%
    painted = resolve_overlaps(np.stack([b, a, c]), np.array([0.8, 0.9, 0.7]))
    assert set(np.unique(painted)) == {0, 2, 3}
    assert (painted == 3).sum() == 20 * 24 and (painted[a] == 2).all()
    assert (resolve_overlaps(np.stack([a]), np.array([0.4])) == 0).all()  # below the score threshold


def test_input_errors():
    metric = InstanceMetrics([1, 2])
    img = Image(H, W).add_gt(box(H, W, 0, 0, 5, 5)).add_pred(box(H, W, 0, 0, 5, 5), 3)
    with pytest.raises(ValueError, match=r"class ids \[3\]"):
        metric.update("a", *img.arrays())
    good = Image(H, W).add_gt(box(H, W, 0, 0, 5, 5)).arrays()
    metric.update("a", *good)
    with pytest.raises(ValueError, match="already"):
        metric.update("a", *good)
    with pytest.raises(ValueError, match="one size"):
        metric.update("b", good[0], good[1], good[2], np.zeros((1, 8, 8), bool), np.array([1]), np.array([0.5]))
    assert len(metric.per_sample()) == 1  # failed updates changed nothing
    with pytest.raises(ValueError, match="max_dets"):
        InstanceMetrics([1], max_dets=10)


# ---------------------------------------------------------------------------------------------
# Equality with the references
# ---------------------------------------------------------------------------------------------


def test_object_boundaries_equal_plain_erosion():
    rng = np.random.default_rng(3)
    corner = box(50, 70, 0, 60, 12, 70)  # touches two image borders
    masks = np.stack([random_blob(rng, 50, 70) for _ in range(6)] + [np.ones((50, 70), bool), corner,
                                                                       np.zeros((50, 70), bool)])
    for ratio in (0.02, 0.05):
        ours = object_boundaries(masks, ratio)
        assert all((ours[k] == plain_boundary(masks[k], ratio)).all() for k in range(len(masks)))


def test_mask_ap_equals_pycocotools_on_random_images():
    images = random_images(seed=0, n=40, n_obj=(0, 9), crowd_every=5)
    images[3].pred.clear()  # an image without predictions
    metric, rows = run(images, class_ids=(1, 2, 3), boundary=False)
    direct = coco_direct(images, class_ids=(1, 2, 3))
    result = metric.compute()
    for key, theirs in zip(COCO_KEYS, direct.stats):
        assert_same(result[f"mask_{key}"], theirs)
    assert np.abs(metric.coco_eval("mask")["precision"] - direct.eval["precision"]).max() <= TOL
    assert np.abs(metric.coco_eval("mask")["recall"] - direct.eval["recall"]).max() <= TOL
    for k, row in enumerate(metric.per_class()):
        precision = direct.eval["precision"][..., k, 0, -1]
        assert_same(row["mask_AP"], float(precision[precision > -1].mean()) if (precision > -1).any() else -1)
    # The row's matching (score >= 0.5, IoU >= 0.5) equals COCOeval's at IoU 0.5, area 'all'.
    n_area = len(direct.params.areaRng)
    n_img = len(images)
    for i, row in enumerate(rows):
        matched = crowd = 0
        for k in range(3):
            e = direct.evalImgs[k * n_area * n_img + i]
            if e is None:
                continue
            keep = np.array(e["dtScores"]) >= 0.5
            hit = (e["dtMatches"][0] > 0) & keep
            matched += int((hit & ~e["dtIgnore"][0]).sum())
            crowd += int((hit & e["dtIgnore"][0]).sum())
        assert (row["n_matched"], row["n_pred_crowd"]) == (matched, crowd), i


def test_image_ap_equals_pycocotools_on_that_image_alone():
    images = random_images(seed=1, n=6, n_obj=(1, 9), crowd_every=3)
    _, rows = run(images, class_ids=(1, 2, 3), boundary=False)
    compared = 0
    for img, row in zip(images, rows):
        if not img.pred or not any(c == 0 for _, _, c in img.gt):
            continue  # (no prediction or no regular ground truth: COCO's AP is -1, ours 0 by rule)
        theirs = coco_direct([img], class_ids=(1, 2, 3)).stats[0]
        assert theirs != -1
        assert_same(row["mask_AP"], theirs)
        compared += 1
    assert compared >= 4, compared  # (of 6 images: the skip must not empty the comparison)


def test_max_dets_cuts_like_pycocotools():
    images = random_images(seed=2, n=4, n_obj=(12, 16))
    metric, _ = run(images, class_ids=(1, 2, 3), boundary=False, max_dets=11)
    direct = coco_direct(images, class_ids=(1, 2, 3), max_dets=11)
    assert np.abs(metric.coco_eval("mask")["precision"] - direct.eval["precision"]).max() <= TOL
    assert metric.compute()["mask_AR11"] == pytest.approx(float(np.mean(direct.eval["recall"][:, :, 0, -1][
        direct.eval["recall"][:, :, 0, -1] > -1])))


def test_boundary_ap_equals_plain_rule():
    images = random_images(seed=4, n=8, n_obj=(1, 6), sizes=((40, 48), (48, 64), (64, 64)))  # d = 1, 2, 2
    hand = Image(H, W).add_gt(box(H, W, 20, 20, 40, 40)).add_pred(box(H, W, 20, 23, 40, 43))
    for case in (images, [hand]):
        metric, _ = run(case, class_ids=(1, 2, 3))
        result = metric.compute()
        assert result["boundary_AP"] == pytest.approx(plain_ap(case, (1, 2, 3), plain_boundary_iou), abs=TOL)
        assert result["mask_AP"] == pytest.approx(plain_ap(case, (1, 2, 3), plain_iou), abs=TOL)


def test_pq_equals_torchmetrics():
    from torchmetrics.detection import PanopticQuality

    classes = (1, 2, 3)
    images = random_images(seed=5, n=12, n_obj=(0, 8))
    # overlapping ground truth (void pixels) and overlapping predictions in one image
    images[0].add_gt(box(48, 64, 10, 10, 30, 30), 1).add_gt(box(48, 64, 20, 20, 40, 40), 2)
    images[0].add_pred(box(48, 64, 10, 10, 30, 30), 1, 0.7).add_pred(box(48, 64, 12, 12, 32, 32), 1, 0.6)
    metric, rows = run(images, class_ids=classes, boundary=False)
    background, void = 10, 11
    total = PanopticQuality(things=set(classes), stuffs={background}, return_per_class=True, return_sq_and_rq=True)
    for img, row in zip(images, rows):
        pred, target = panoptic_tensors(img, background, void)
        total.update(pred, target)
        single = PanopticQuality(things=set(classes), stuffs={background}, return_per_class=True,
                                 return_sq_and_rq=True)
        single.update(pred, target)
        check_pq(row, single)
    check_pq(metric.compute(), total, metric.per_class())


def check_pq(ours: dict, tm, per_class: list[dict] | None = None) -> None:
    """Our PQ/SQ/RQ (means over thing classes with TP + FP + FN > 0) against a torchmetrics state."""
    n_things = 3  # torchmetrics orders things first, then stuff
    scored = (tm.true_positives + tm.false_positives + tm.false_negatives)[:n_things] > 0
    values = tm.compute()[:n_things].double()  # (things, [PQ, SQ, RQ]); 0 for unscored classes
    for j, name in enumerate(("PQ", "SQ", "RQ")):
        assert_same(ours[name], float(values[scored, j].mean()) if scored.any() else math.nan)
    if per_class is not None:
        for k, row in enumerate(per_class):
            assert (row["TP"], row["FP"], row["FN"]) == (int(tm.true_positives[k]), int(tm.false_positives[k]),
                                                         int(tm.false_negatives[k]))
            for j, name in enumerate(("PQ", "SQ", "RQ")):
                assert_same(row[name], float(values[k, j]) if scored[k] else math.nan)


def test_streaming_order_of_updates_is_the_coco_image_order():
    """compute() after updates equals pycocotools on the same images in update order, and twice is stable."""
    images = random_images(seed=6, n=10, n_obj=(2, 6))
    metric, _ = run(images, class_ids=(1, 2, 3), boundary=False)
    first = metric.compute()
    assert metric.compute() == pytest.approx(first, nan_ok=True)
    assert_same(first["mask_AP"], coco_direct(images, class_ids=(1, 2, 3)).stats[0])
    metric.reset()
    assert metric.per_sample() == [] and math.isnan(metric.compute()["mask_AP"])


BOUNDARY_CASE = dict(seed=7, n=12, n_obj=(1, 8), crowd_every=4, sizes=((48, 64), (64, 64)))


def test_boundary_ap_equals_pycocotools_with_the_boundary_iou_rule():
    """Boundary AP, crowd regions, area ranges and maxDets included (the plain rule above has none of them), against
    pycocotools' COCOeval over the whole dataset with Boundary IoU's computeIoU and scipy's boundaries."""
    images = random_images(**BOUNDARY_CASE)
    assert sum(c for img in images for _, _, c in img.gt) == 3  # (crowd regions in images 0, 4 and 8)
    metric, _ = run(images, class_ids=(1, 2, 3))
    result = metric.compute()
    direct = coco_boundary_direct(images, class_ids=(1, 2, 3))
    compared = 0
    for key, theirs in zip(COCO_KEYS, direct.stats, strict=True):
        assert_same(result[f"boundary_{key}"], theirs)
        compared += theirs != -1
    assert compared >= 8, compared  # (every object is small, < 32² px: the medium and large stats are -1, not compared)
    precision = metric.coco_eval("boundary")["precision"]
    assert precision.shape == direct.eval["precision"].shape and (direct.eval["precision"] > -1).sum() > 1000
    assert np.abs(precision - direct.eval["precision"]).max() <= TOL
    # Boundary IoU is no mask IoU: the two APs differ here, so the comparison above is one of boundaries.
    assert abs(result["boundary_AP"] - result["mask_AP"]) > 0.01


def test_boundary_ap_equals_faster_coco_eval_if_installed():
    """A second, independent reference when faster-coco-eval is installed (`pip install -e .[bench]`; not in dev,
    so CI skips it: the pycocotools test above always runs): its iouType 'boundary' implements Cheng et al.'s rule
    with OpenCV erosion, crowd regions included."""
    fce = pytest.importorskip("faster_coco_eval")
    images = random_images(**BOUNDARY_CASE)
    gt, results = coco_dicts(images, (1, 2, 3), text_counts=True)
    assert len(gt["annotations"]) >= 30 and len(results) >= 30, (len(gt["annotations"]), len(results))
    coco_gt = fce.COCO(gt)
    ev = fce.COCOeval_faster(coco_gt, coco_gt.loadRes(results), "boundary", boundary_cpu_count=1)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    metric, _ = run(images, class_ids=(1, 2, 3))
    result = metric.compute()
    compared = 0
    for key, theirs in zip(COCO_KEYS, ev.stats[:12], strict=True):
        assert_same(result[f"boundary_{key}"], float(theirs))
        compared += float(theirs) != -1
    assert compared >= 8, compared  # (every object is small, < 32² px: the medium and large stats are -1, not compared)


def test_painted_truth_leaves_crowd_regions_unscored():
    """The painted mIoU of an instance evaluation ignores crowd regions, as AP and PQ do; a crowd region under a
    real object keeps the object."""
    from masklab.evaluation.instance import painted_truth

    masks = np.zeros((3, 6, 8), bool)
    masks[0, 1:3, 1:3] = True  # an object of class 1
    masks[1, 3:6, 0:8] = True  # a crowd region of class 2
    masks[2, 4:6, 6:8] = True  # an object of class 2 inside the crowd region
    truth = painted_truth(np.array([1, 2, 2]), masks, np.array([0, 1, 0], np.uint8), 255)
    expected = np.zeros((6, 8), np.int64)
    expected[1:3, 1:3] = 1
    expected[3:6, :] = 255
    expected[4:6, 6:8] = 2
    assert np.array_equal(truth, expected)
    assert (painted_truth(np.array([1, 2, 2]), masks, np.array([0, 1, 0], np.uint8), None) != 255).all()
