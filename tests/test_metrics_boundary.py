"""Boundary IoU against two plain references (Cheng et al.'s erosion code and a distance transform)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.ndimage import distance_transform_cdt

from masklab.metrics import (
    IGNORE_CONVENTIONS,
    SemanticMetrics,
    boundary_band,
    boundary_counts,
    boundary_dilation,
    named_scalars,
    per_image_confusion,
    per_image_scores,
)

from conftest import SHARED_DATASETS, assert_close

IGNORE = 255
NAN = float("nan")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: with a busy machine, intra-op threads only wait for each other
    (each op then costs milliseconds). One thread keeps the module fast; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# References: straight from the definition, one class and one image at a time.
# ---------------------------------------------------------------------------------------------


def ref_dilation(h: int, w: int, ratio: float) -> int:
    # as in Cheng et al.'s mask_to_boundary
    dilation = int(round(ratio * np.sqrt(h**2 + w**2)))
    return max(dilation, 1)


def ref_boundary_erode(mask: np.ndarray, d: int) -> np.ndarray:
    """(a) Cheng et al.'s code: zero-pad by 1, erode with a 3x3 kernel d times, crop, mask - eroded."""
    h, w = mask.shape
    m = mask.astype(np.uint8)
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
    return (m - eroded).astype(bool)


def ref_boundary_cdt(mask: np.ndarray, d: int) -> np.ndarray:
    """(b) Pixels of the mask at chessboard distance <= d from a non-mask pixel of the zero-padded mask."""
    dist = distance_transform_cdt(np.pad(mask.astype(np.uint8), 1), metric="chessboard")[1:-1, 1:-1]
    return mask.astype(bool) & (dist <= d)


def ref_counts(pred: np.ndarray, target: np.ndarray, c: int, ignore: int | None, ratio: float,
               convention: str = "exclude"):
    """Per class (intersection, union) of one image, with the erosion reference (checked against (b)).

    Ignored (void) pixels are never counted; each ``convention`` applied as stated: "exclude" scores no pixel
    whose d-window holds void; "raw" takes the prediction's contours from the raw prediction; "hide" makes void
    "not class c" in both masks. The target's contours treat void as "not class c" under all three."""
    h, w = target.shape
    d = ref_dilation(h, w, ratio)
    valid = np.ones_like(target, dtype=bool) if ignore is None else target != ignore
    scored = valid.copy()
    if convention == "exclude":
        window = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
        scored &= cv2.dilate((~valid).astype(np.uint8), window, borderType=cv2.BORDER_CONSTANT, borderValue=0) == 0
    inter, union = [], []
    for k in range(c):
        g, p = target == k, (pred == k) if convention == "raw" else (pred == k) & valid
        gb = ref_boundary_erode(g, d)
        pb = ref_boundary_erode(p, d)
        assert np.array_equal(gb, ref_boundary_cdt(g, d))
        assert np.array_equal(pb, ref_boundary_cdt(p, d))
        inter.append(int(np.sum(gb & pb & scored)))
        union.append(int(np.sum((gb | pb) & scored)))
    return inter, union


def ref_iou(inter: list[int], union: list[int]) -> list[float]:
    return [i / u if u > 0 else NAN for i, u in zip(inter, union)]


def nan_mean(values) -> float:
    scored = [v for v in values if not math.isnan(v)]
    return sum(scored) / len(scored) if scored else NAN


def ref_dataset(pairs: list[tuple[np.ndarray, np.ndarray]], c: int, ignore: int | None, ratio: float,
                convention: str = "exclude") -> dict:
    """pairs: (pred, target) per image, sizes may differ; ``convention``: see ref_counts."""
    per_image = [ref_counts(p, t, c, ignore, ratio, convention) for p, t in pairs]
    pooled_inter = [sum(inter[k] for inter, _ in per_image) for k in range(c)]
    pooled_union = [sum(union[k] for _, union in per_image) for k in range(c)]
    pooled = ref_iou(pooled_inter, pooled_union)
    image_iou = [ref_iou(inter, union) for inter, union in per_image]
    image_mean = [nan_mean(row) for row in image_iou]
    return {
        "boundary_iou": np.array(pooled),
        "mBoundaryIoU": nan_mean(pooled),
        "boundary_iou_image": np.array([nan_mean([row[k] for row in image_iou]) for k in range(c)]),
        "mBoundaryIoU_image": nan_mean(image_mean),
        "per_image_iou": np.array(image_iou),
        "per_image_miou": np.array(image_mean),
        "per_image_inter": np.array([inter for inter, _ in per_image]),
        "per_image_union": np.array([union for _, union in per_image]),
    }


def blocky(rng: np.random.Generator, h: int, w: int, classes: np.ndarray) -> np.ndarray:
    """Coarse random blocks of the given classes plus a few random rectangles."""
    block = int(rng.integers(3, 9))
    small = rng.choice(classes, size=(-(-h // block), -(-w // block)))
    out = np.kron(small, np.ones((block, block), dtype=np.int64))[:h, :w]
    for _ in range(3):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        out[y0 : y0 + rng.integers(1, h // 2 + 2), x0 : x0 + rng.integers(1, w // 2 + 2)] = rng.choice(classes)
    return out


def random_batch(seed: int, c: int, n: int, h: int, w: int, ignore: bool = True):
    """Per image a random class subset (so classes go absent and get hallucinated), shifted and
    repainted predictions, and ignored rectangles and speckles in the target.

    In image 0 (c >= 3) class c - 1 is absent from both and class c - 2 only predicted."""
    rng = np.random.default_rng(seed)
    target = np.empty((n, h, w), dtype=np.int64)
    pred = np.empty((n, h, w), dtype=np.int64)
    for i in range(n):
        k = c - 2 if i == 0 and c >= 3 else c
        t_classes = rng.choice(k, size=rng.integers(1, k + 1), replace=False)
        target[i] = blocky(rng, h, w, t_classes)
        shifted = np.roll(target[i], (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        pred[i] = np.where(rng.random() < 0.5, shifted, target[i])
        p_classes = rng.choice(k, size=rng.integers(1, k + 1), replace=False)
        paint = blocky(rng, h, w, p_classes)
        pred[i] = np.where(blocky(rng, h, w, np.array([0, 0, 1])) == 1, paint, pred[i])
        if k < c:
            pred[i, h // 3 : h // 2, w // 3 : w // 2] = c - 2
        if ignore:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            target[i, y0 : y0 + h // 4, x0 : x0 + w // 3] = IGNORE
            target[i][rng.random((h, w)) < 0.02] = IGNORE
    return pred, target


def assert_matches_reference(metric_result: dict, ref: dict) -> None:
    for key in ("mBoundaryIoU", "mBoundaryIoU_image"):
        assert isinstance(metric_result[key], float), key
        assert_close(metric_result[key], ref[key])
    for key in ("boundary_iou", "boundary_iou_image"):
        assert metric_result[key].dtype == torch.float64
        assert_close(metric_result[key], ref[key])


def check_bands(labels: np.ndarray, c: int, d: int, device: str) -> None:
    """Fast band == both references, for every class (and for the ignore label) of every image."""
    band = boundary_band(torch.from_numpy(labels).to(device), d).cpu().numpy()
    assert band.dtype == bool and band.shape == labels.shape
    for n in range(len(labels)):
        for k in [*range(c), IGNORE]:
            mask = labels[n] == k
            a, b = ref_boundary_erode(mask, d), ref_boundary_cdt(mask, d)
            assert np.array_equal(a, b), (n, k)
            assert np.array_equal(mask & band[n], a), (n, k)


# ---------------------------------------------------------------------------------------------


def test_dilation_matches_reference_formula():
    for h, w in ((1, 1), (40, 40), (37, 61), (512, 512), (529, 622), (1024, 2048)):
        for ratio in (0.0, 0.001, 0.005, 0.02, 0.05, 0.1):
            assert boundary_dilation(h, w, ratio) == ref_dilation(h, w, ratio), (h, w, ratio)
    assert boundary_dilation(256, 256) == 7
    with pytest.raises(ValueError, match=r"^image size must be positive, got 0x5$"):
        boundary_dilation(0, 5)
    with pytest.raises(ValueError, match=r"^dilation_ratio must be >= 0, got -0.1$"):
        boundary_dilation(5, 5, -0.1)
    with pytest.raises(ValueError, match=r"^dilation_ratio must be >= 0, got nan$"):
        boundary_dilation(5, 5, float("nan"))


def test_band_hand_computed_border_counts_as_contour():
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    ring = torch.ones(6, 6, dtype=torch.bool)
    ring[1:5, 1:5] = False
    assert torch.equal(boundary_band(labels, 1)[0], ring)
    assert not boundary_band(labels, 0).any()
    assert boundary_band(labels, 3).all()  # every window now reaches the border
    labels[0, 2:4, 2:4] = 2
    expected = ring.clone()
    expected[1:5, 1:5] = True  # class 0 next to the block, and the block itself
    assert torch.equal(boundary_band(labels, 1)[0], expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("h", "w"), [(40, 40), (37, 61), (96, 128)])
@pytest.mark.parametrize("ratio", [0.001, 0.02, 0.05])
def test_random_masks_match_references(h, w, ratio, device):
    c = 4
    seed = h * 1000 + w + int(ratio * 1e4)
    pred_np, target_np = random_batch(seed, c, n=3, h=h, w=w)
    d = boundary_dilation(h, w, ratio)
    if ratio == 0.001:
        assert d == 1
    check_bands(target_np, c, d, device)
    check_bands(pred_np, c, d, device)
    check_bands(np.where(target_np == IGNORE, IGNORE, pred_np), c, d, device)  # what the counts use

    ref = ref_dataset(list(zip(pred_np, target_np)), c, IGNORE, ratio)
    pred, target = torch.from_numpy(pred_np).to(device), torch.from_numpy(target_np).to(device)
    inter, union = boundary_counts(pred, target, c, IGNORE, ratio)
    assert inter.dtype == union.dtype == torch.int64 and inter.shape == union.shape == (3, c)
    assert inter.device == target.device
    np.testing.assert_array_equal(inter.cpu().numpy(), ref["per_image_inter"])
    np.testing.assert_array_equal(union.cpu().numpy(), ref["per_image_union"])

    s = per_image_scores(pred, target, c, IGNORE, boundary=True, dilation_ratio=ratio)
    assert_close(s["boundary_iou"], ref["per_image_iou"])
    assert_close(s["boundary_miou"], ref["per_image_miou"])
    np.testing.assert_array_equal(s["boundary_intersection"].cpu().numpy(), ref["per_image_inter"])
    np.testing.assert_array_equal(s["boundary_union"].cpu().numpy(), ref["per_image_union"])

    metric = SemanticMetrics(c, IGNORE, boundary=True, dilation_ratio=ratio).to(device)
    metric.update(pred, target)
    assert_matches_reference(metric.compute(), ref)
    # the data exercises the absent-class rule
    assert np.isnan(ref["per_image_iou"]).any() and (ref["per_image_iou"] == 0).any()


def test_batches_equal_one_batch_and_reference():
    c, ratio = 5, 0.05
    pred_np, target_np = random_batch(7, c, n=9, h=48, w=40)
    target_np[4] = IGNORE  # an all-ignore image is skipped in the per-image means
    pred, target = torch.from_numpy(pred_np), torch.from_numpy(target_np)
    whole = SemanticMetrics(c, IGNORE, boundary=True, dilation_ratio=ratio)
    whole.update(pred, target)
    batched = SemanticMetrics(c, IGNORE, boundary=True, dilation_ratio=ratio)
    for lo, hi in ((0, 2), (2, 3), (3, 7), (7, 9)):
        batched.update(pred[lo:hi], target[lo:hi])
    a, b = batched.compute(), whole.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert_close(a[key], b[key], atol=1e-12)
    assert_matches_reference(a, ref_dataset(list(zip(pred_np, target_np)), c, IGNORE, ratio))
    assert int(batched.boundary_image_count) == 8


def test_perfect_prediction_is_one_whatever_is_predicted_under_ignore():
    pred_np, target_np = random_batch(11, 4, n=4, h=50, w=30)
    pred = torch.from_numpy(np.where(target_np == IGNORE, pred_np, target_np))  # anything under ignore
    target = torch.from_numpy(target_np)
    assert (target_np == IGNORE).any() and (pred[target == IGNORE] != 0).any()
    s = per_image_scores(pred, target, 4, IGNORE, boundary=True)
    present = s["boundary_union"] > 0
    assert torch.equal(present, s["true_area"] > 0)
    assert torch.equal(s["boundary_iou"][present], torch.ones(int(present.sum()), dtype=torch.float64))
    assert torch.isnan(s["boundary_iou"][~present]).all()
    metric = SemanticMetrics(4, IGNORE, boundary=True)
    metric.update(pred, target)
    r = metric.compute()
    assert r["mBoundaryIoU"] == 1.0 and r["mBoundaryIoU_image"] == 1.0
    # as for IoU, what is predicted under ignored pixels never changes a score
    other = torch.where(target == IGNORE, (pred + 1) % 4, pred)
    s2 = per_image_scores(other, target, 4, IGNORE, boundary=True)
    assert torch.equal(s2["boundary_intersection"], s["boundary_intersection"])
    assert torch.equal(s2["boundary_union"], s["boundary_union"])


def _hand_batch():
    # 6x6, d = 1. Target all class 0; the prediction has a 2x2 block of class 2 in the middle.
    # Class 0: Gb = border ring (20 px), Pb = ring + the 12 px around the block -> 20 / 32.
    # Class 2: hallucinated, Pb = the block (4 px) -> 0. Class 1 absent from both -> NaN.
    # Image B ignores pixel (0, 0): it is not counted, yet makes (1, 1) part of Gb -> 20 / 31.
    target = torch.zeros(2, 6, 6, dtype=torch.long)
    target[1, 0, 0] = IGNORE
    pred = torch.zeros(2, 6, 6, dtype=torch.long)
    pred[:, 2:4, 2:4] = 2
    return pred, target


def test_absent_class_rule_hand_computed():
    """Hand counts under the "hide" convention (image B's ignored corner is a contour of the target)."""
    pred, target = _hand_batch()
    s = per_image_scores(pred, target, 3, IGNORE, boundary=True, dilation_ratio=0.001, boundary_ignore="hide")
    assert s["boundary_intersection"].tolist() == [[20, 0, 0], [20, 0, 0]]
    assert s["boundary_union"].tolist() == [[32, 0, 4], [31, 0, 4]]
    assert_close(s["boundary_iou"], [[20 / 32, NAN, 0.0], [20 / 31, NAN, 0.0]])
    assert_close(s["boundary_miou"], [20 / 64, 20 / 62])  # the hallucinated class pulls the mean down

    metric = SemanticMetrics(3, IGNORE, class_names=["bg", "road", "car"], boundary=True, dilation_ratio=0.001,
                             boundary_ignore="hide")
    metric.update(pred, target)
    r = metric.compute()
    assert_close(r["boundary_iou"], [40 / 63, NAN, 0.0])
    assert_close(r["mBoundaryIoU"], 20 / 63)
    assert_close(r["boundary_iou_image"], [(20 / 32 + 20 / 31) / 2, NAN, 0.0])
    assert_close(r["mBoundaryIoU_image"], (20 / 64 + 20 / 62) / 2)

    out = metric.named_scalars(r, "val")
    assert out["val/mBoundaryIoU"] == pytest.approx(20 / 63)
    assert out["val/mBoundaryIoU_image"] == pytest.approx((20 / 64 + 20 / 62) / 2)
    assert out["val/boundary_iou/bg"] == pytest.approx(40 / 63) and out["val/boundary_iou/car"] == 0.0
    assert "val/boundary_iou/road" not in out  # NaN is dropped
    assert {k for k in named_scalars(r, "test") if "oundary" in k} == {
        "test/mBoundaryIoU",
        "test/mBoundaryIoU_image",
        "test/boundary_iou/0",
        "test/boundary_iou/2",
    }


def test_boundary_off_keeps_old_keys_and_states():
    pred, target = _hand_batch()
    metric = SemanticMetrics(3, IGNORE)
    metric.update(pred, target)
    r = metric.compute()
    assert not any("oundary" in k for k in r)
    assert not any("boundary" in k for k in metric.metric_state)
    assert not any("oundary" in k for k in metric.named_scalars(r, "val"))
    assert not any("boundary" in k for k in per_image_scores(pred, target, 3, IGNORE))


def test_raw_counts_in_per_image_scores():
    pred_np, target_np = random_batch(3, 5, n=4, h=20, w=24)
    pred, target = torch.from_numpy(pred_np), torch.from_numpy(target_np)
    s = per_image_scores(pred, target, 5, IGNORE)
    cms = per_image_confusion(pred, target, 5, IGNORE)
    for key in ("tp", "fp", "fn", "true_area", "pred_area"):
        assert s[key].dtype == torch.int64 and s[key].shape == (4, 5), key
    valid = target_np != IGNORE
    for n in range(4):
        for k in range(5):
            t, p = (target_np[n] == k) & valid[n], (pred_np[n] == k) & valid[n]
            assert s["tp"][n, k] == np.sum(t & p) == cms[n, k, k]
            assert s["fp"][n, k] == np.sum(~t & p & valid[n])
            assert s["fn"][n, k] == np.sum(t & ~p)
            assert s["true_area"][n, k] == np.sum(t) and s["pred_area"][n, k] == np.sum(p)


def test_dtypes_negative_ignore_logits_and_errors():
    c = 4
    pred_np, target_np = random_batch(5, c, n=3, h=30, w=34)
    ref_inter, ref_union = boundary_counts(torch.from_numpy(pred_np), torch.from_numpy(target_np), c, IGNORE)
    # uint8 masks, and ignore given as -100 instead of 255
    inter, union = boundary_counts(torch.from_numpy(pred_np).byte(), torch.from_numpy(target_np).byte(), c, IGNORE)
    assert torch.equal(inter, ref_inter) and torch.equal(union, ref_union)
    neg = torch.from_numpy(np.where(target_np == IGNORE, -100, target_np))
    inter, union = boundary_counts(torch.from_numpy(pred_np), neg, c, -100)
    assert torch.equal(inter, ref_inter) and torch.equal(union, ref_union)
    # any integer dtype and bool give the same band
    labels = torch.from_numpy(target_np)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        assert torch.equal(boundary_band(labels.to(dtype), 2), boundary_band(labels, 2))
    assert torch.equal(boundary_band(labels == 1, 2) & (labels == 1), boundary_band(labels, 2) & (labels == 1))
    # logits
    logits = torch.randn(3, c, 30, 34, generator=torch.Generator().manual_seed(0))
    m1 = SemanticMetrics(c, IGNORE, boundary=True)
    m1.update(logits, torch.from_numpy(target_np))
    m2 = SemanticMetrics(c, IGNORE, boundary=True)
    m2.update(logits.argmax(1), torch.from_numpy(target_np))
    assert_close(m1.compute()["boundary_iou"], m2.compute()["boundary_iou"], atol=0)

    with pytest.raises(ValueError, match="target"):
        boundary_counts(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [0, 0]]]), 2, IGNORE)
    with pytest.raises(ValueError, match="integer"):
        boundary_band(torch.zeros(1, 3, 3), 1)
    with pytest.raises(ValueError, match=r"^pred and target must be \(N, H, W\), got \(2, 2\)$"):
        boundary_counts(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), 2, IGNORE)
    with pytest.raises(ValueError, match=r"^dilation_ratio must be >= 0, got -1.0$"):
        SemanticMetrics(2, IGNORE, boundary=True, dilation_ratio=-1.0)


# ---------------------------------------------------------------------------------------------
# Real masks from the shared datasets (../shared/datasets next to the checkout, or $MASKLAB_SHARED/datasets;
# these tests skip without them), predictions made by shifting / eroding / dilating them.
# ---------------------------------------------------------------------------------------------


def _fake_predictions(mask: np.ndarray, i: int) -> np.ndarray:
    """A plausible prediction of a binary mask: shifted, eroded or dilated foreground."""
    fg = (mask == 1).astype(np.uint8)
    kernel = np.ones((5, 5), dtype=np.uint8)
    if i % 3 == 0:
        fg = np.roll(fg, (4, -3), axis=(0, 1))
    elif i % 3 == 1:
        fg = cv2.erode(fg, kernel, iterations=2)
    else:
        fg = cv2.dilate(fg, kernel, iterations=1)
    return fg.astype(np.int64)


def test_real_membrane_masks():
    folder = SHARED_DATASETS / "membrane" / "train" / "label"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    files = sorted(folder.glob("*.png"), key=lambda p: (len(p.stem), p.stem))[:3]
    if not files:
        pytest.skip(f"no masks in {folder}")
    target_np = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).astype(np.int64) // 255 for f in files])
    assert set(np.unique(target_np)) == {0, 1}
    pred_np = np.stack([_fake_predictions(t, i) for i, t in enumerate(target_np)])
    target_np[1, 100:160, 200:300] = IGNORE
    pred, target = torch.from_numpy(pred_np), torch.from_numpy(target_np)
    for ratio in (0.001, 0.02):
        d = boundary_dilation(*target_np.shape[1:], ratio)
        check_bands(target_np, 2, d, "cpu")
        check_bands(pred_np, 2, d, "cpu")
        ref = ref_dataset(list(zip(pred_np, target_np)), 2, IGNORE, ratio)
        s = per_image_scores(pred, target, 2, IGNORE, boundary=True, dilation_ratio=ratio)
        assert_close(s["boundary_iou"], ref["per_image_iou"])
        metric = SemanticMetrics(2, IGNORE, boundary=True, dilation_ratio=ratio)
        metric.update(pred, target)
        r = metric.compute()
        assert_matches_reference(r, ref)
        assert 0.0 < r["mBoundaryIoU"] < 1.0  # the fakes are neither perfect nor disjoint (value checked above)


def test_real_kvasir_masks_of_different_sizes():
    folder = SHARED_DATASETS / "kvasir_seg" / "masks"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    files = sorted(folder.glob("*.jpg"))[:3]
    if not files:
        pytest.skip(f"no masks in {folder}")
    targets = [(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) >= 128).astype(np.int64) for f in files]
    preds = [_fake_predictions(t, i) for i, t in enumerate(targets)]
    metric = SemanticMetrics(2, IGNORE, boundary=True)
    for p, t in zip(preds, targets):  # one update per image: each gets its own band width
        d = boundary_dilation(*t.shape)
        check_bands(t[None], 2, d, "cpu")
        check_bands(p[None], 2, d, "cpu")
        metric.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    r = metric.compute()
    assert_matches_reference(r, ref_dataset(list(zip(preds, targets)), 2, IGNORE, 0.02))
    assert 0.0 < r["mBoundaryIoU"] < 1.0  # the fakes are neither perfect nor disjoint (value checked above)


# ---------------------------------------------------------------------------------------------
# Void (ignore_index) next to contours: the three conventions (masklab.metrics.boundary.IGNORE_CONVENTIONS)
# against ref_counts, on masks with void of several shapes.
# ---------------------------------------------------------------------------------------------

VOID = IGNORE
RATIO = 0.05  # d = 4 px on 48 x 64 images: bands wide enough for void to matter


def void_cases(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 48, 64) targets with void of several shapes and predictions that err near it: a void rectangle inside an
    object, void along the image border, a class touching only void, blobs of void across class edges."""
    rng = np.random.default_rng(seed)
    targets, preds = [], []
    for i in range(6):
        t = np.zeros((48, 64), np.int64)
        t[8:30, 10:40] = 1
        t[20:44, 30:60] = 2
        if i % 3 == 0:
            t[12:24, 15:28] = VOID  # a hole inside an object
        if i % 3 == 1:
            t[:, :5] = VOID  # void along the border, touching classes 0 and 1's rows
            t[:6, :] = VOID
        if i % 3 == 2:
            t[30:46, 2:20] = VOID
            t[34:42, 6:14] = 3  # class 3 touches only void
        blobs = ndimage.binary_dilation(rng.random((48, 64)) > 0.985, iterations=2)
        t[blobs] = VOID
        p = t.copy()
        p[p == VOID] = rng.integers(0, 4, size=int((p == VOID).sum()))  # anything under void
        grow = ndimage.binary_dilation(t == 1, iterations=int(rng.integers(1, 4)))
        p[grow & (rng.random((48, 64)) > 0.3)] = 1  # class 1 runs over its edges, into void too
        p[rng.random((48, 64)) > 0.97] = int(rng.integers(0, 4))
        targets.append(t)
        preds.append(p)
    return np.stack(preds), np.stack(targets)


@pytest.mark.parametrize("ignore", IGNORE_CONVENTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_void_conventions_per_image_and_pooled_equal_the_reference(ignore, seed):
    pred, target = void_cases(seed)
    d = boundary_dilation(48, 64, RATIO)
    assert d == 4
    inter, union = boundary_counts(torch.from_numpy(pred), torch.from_numpy(target), 4, VOID, RATIO, ignore=ignore)
    expected = [np.array(ref_counts(p, t, 4, VOID, RATIO, ignore)) for p, t in zip(pred, target)]
    np.testing.assert_array_equal(inter.numpy(), np.stack([e[0] for e in expected]))
    np.testing.assert_array_equal(union.numpy(), np.stack([e[1] for e in expected]))
    assert union.sum() > 0 and (union > inter).any()  # the cases score something and are not all perfect

    # per image and pooled, as evaluations report them
    scores = per_image_scores(torch.from_numpy(pred), torch.from_numpy(target), 4, VOID, boundary=True,
                              dilation_ratio=RATIO, boundary_ignore=ignore)
    ref_inter, ref_union = (np.stack([e[k] for e in expected]).astype(np.float64) for k in (0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = np.where(ref_union > 0, ref_inter / ref_union, np.nan)
    np.testing.assert_allclose(scores["boundary_iou"].numpy(), per_image, atol=1e-6, equal_nan=True)
    metrics = SemanticMetrics(4, VOID, boundary=True, dilation_ratio=RATIO, boundary_ignore=ignore)
    metrics.update(torch.from_numpy(pred), torch.from_numpy(target))
    with np.errstate(invalid="ignore"):  # a class no image has: NaN, left out of the mean
        pooled = ref_inter.sum(0) / ref_union.sum(0)
    assert metrics.compute()["mBoundaryIoU"] == pytest.approx(float(np.nanmean(pooled)), abs=1e-6)


def test_the_conventions_differ_only_where_there_is_void():
    pred, target = void_cases(0)
    scores = {ignore: boundary_counts(torch.from_numpy(pred), torch.from_numpy(target), 4, VOID, RATIO,
                                      ignore=ignore) for ignore in IGNORE_CONVENTIONS}
    for ignore in ("exclude", "raw"):
        assert not all(torch.equal(a, b) for a, b in zip(scores[ignore], scores["hide"])), ignore
    clean = np.where(target == VOID, 0, target)  # the same masks without void
    same = [boundary_counts(torch.from_numpy(pred), torch.from_numpy(clean), 4, VOID, RATIO, ignore=ignore)
            for ignore in IGNORE_CONVENTIONS]
    assert all(torch.equal(a, b) for s in same[1:] for a, b in zip(same[0], s))


@pytest.mark.parametrize("ignore", ["exclude", "hide"])
def test_a_prediction_right_on_every_scored_pixel_scores_one(ignore):
    _, target = void_cases(1)
    pred = np.where(target == VOID, 3, target)  # right everywhere but under void, where it says anything
    inter, union = boundary_counts(torch.from_numpy(pred), torch.from_numpy(target), 4, VOID, RATIO, ignore=ignore)
    assert torch.equal(inter[union > 0], union[union > 0]) and (union > 0).any()


def test_void_gives_no_free_agreement_by_default():
    """A prediction that runs class 1 up to a void edge drew no contour there: `hide` counts the void edge as an
    agreeing contour, the default does not score it."""
    target = np.zeros((1, 48, 64), np.int64)
    target[0, 10:40, 10:30] = 1
    target[0, 10:40, 30:54] = VOID  # the object's right part is void
    pred = target.copy()
    pred[0, 10:40, 30:54] = 1  # the prediction runs on into the void and stops at 54
    hide = boundary_counts(torch.from_numpy(pred), torch.from_numpy(target), 2, VOID, RATIO, ignore="hide")
    exclude = boundary_counts(torch.from_numpy(pred), torch.from_numpy(target), 2, VOID, RATIO)
    assert hide[0][0, 1] > exclude[0][0, 1]  # hide scores the void edge at column 30 as a contour of both


def test_an_unknown_convention_is_named():
    with pytest.raises(ValueError, match=r"boundary_ignore='none': expected one of \['exclude', 'raw', 'hide'\]"):
        SemanticMetrics(2, VOID, boundary=True, boundary_ignore="none")
