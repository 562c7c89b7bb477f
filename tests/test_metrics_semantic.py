"""Semantic metrics against a plain numpy reference, torchmetrics, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from masklab.metrics import (
    SemanticMetrics,
    confusion_matrix,
    named_scalars,
    per_image_confusion,
    per_image_scores,
    scores_from_confusion,
)

from conftest import assert_close

IGNORE = 255
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NAN = float("nan")


# ---------------------------------------------------------------------------------------------
# Reference: written straight from the definitions, loops everywhere, no vectorised tricks.
# ---------------------------------------------------------------------------------------------


def ref_confusion(pred: np.ndarray, target: np.ndarray, c: int, ignore: int | None) -> np.ndarray:
    cm = np.zeros((c, c), dtype=np.int64)
    for t, p in zip(target.reshape(-1).tolist(), pred.reshape(-1).tolist()):
        if ignore is not None and t == ignore:
            continue
        cm[t, p] += 1
    return cm


def ref_scores(cm: np.ndarray) -> dict:
    c = cm.shape[0]
    iou, dice = [], []
    for k in range(c):
        tp = cm[k, k]
        fp = sum(cm[g, k] for g in range(c) if g != k)
        fn = sum(cm[k, q] for q in range(c) if q != k)
        if tp + fp + fn == 0:
            iou.append(NAN)
            dice.append(NAN)
        else:
            iou.append(tp / (tp + fp + fn))
            dice.append(2 * tp / (2 * tp + fp + fn))
    scored_iou = [v for v in iou if not math.isnan(v)]
    scored_dice = [v for v in dice if not math.isnan(v)]
    total = cm.sum()
    return {
        "iou": np.array(iou),
        "dice": np.array(dice),
        "miou": sum(scored_iou) / len(scored_iou) if scored_iou else NAN,
        "mdice": sum(scored_dice) / len(scored_dice) if scored_dice else NAN,
        "pixel_acc": sum(cm[k, k] for k in range(c)) / total if total > 0 else NAN,
    }


def ref_dataset(pred: np.ndarray, target: np.ndarray, c: int, ignore: int | None) -> dict:
    per_image = [ref_scores(ref_confusion(pred[n], target[n], c, ignore)) for n in range(len(target))]
    pooled = ref_scores(ref_confusion(pred, target, c, ignore))
    out = {
        "mIoU": pooled["miou"],
        "mDice": pooled["mdice"],
        "pixel_acc": pooled["pixel_acc"],
        "iou": pooled["iou"],
        "dice": pooled["dice"],
    }
    # per-image means: skip images without valid pixels, and per class skip images where it is NaN
    for key, src in (("mIoU_image", "miou"), ("mDice_image", "mdice"), ("pixel_acc_image", "pixel_acc")):
        vals = [s[src] for s in per_image if not math.isnan(s["pixel_acc"])]
        out[key] = sum(vals) / len(vals) if vals else NAN
    for key, src in (("iou_image", "iou"), ("dice_image", "dice")):
        col = []
        for k in range(c):
            vals = [s[src][k] for s in per_image if not math.isnan(s[src][k])]
            col.append(sum(vals) / len(vals) if vals else NAN)
        out[key] = np.array(col)
    out["per_image"] = per_image
    return out


def random_batch(seed: int, c: int, n: int = 6, h: int = 12, w: int = 10, all_ignore: bool = True):
    """Targets/preds where each image uses a random class subset (absent + hallucinated classes) with ignores."""
    rng = np.random.default_rng(seed)
    target = np.empty((n, h, w), dtype=np.int64)
    pred = np.empty((n, h, w), dtype=np.int64)
    for i in range(n):
        t_classes = rng.choice(c, size=rng.integers(1, c + 1), replace=False)
        p_classes = rng.choice(c, size=rng.integers(1, c + 1), replace=False)
        target[i] = rng.choice(t_classes, size=(h, w))
        pred[i] = np.where(rng.random((h, w)) < 0.5, target[i], rng.choice(p_classes, size=(h, w)))
        target[i][rng.random((h, w)) < 0.1] = IGNORE
    if all_ignore:
        target[rng.integers(n)] = IGNORE
    return pred, target


def assert_results_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert_close(a[key], b[key], atol=1e-12)


# ---------------------------------------------------------------------------------------------


def test_confusion_matrix_orientation_rows_are_ground_truth():
    target = torch.tensor([[[0, 0, 1]]])
    pred = torch.tensor([[[1, 0, 1]]])
    cm = confusion_matrix(pred, target, 2, None)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 1], [0, 1]]  # gt 0 predicted as 1 lands in row 0, column 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", [2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_reference(seed, c, device):
    pred_np, target_np = random_batch(seed, c)
    ref = ref_dataset(pred_np, target_np, c, IGNORE)
    pred, target = torch.from_numpy(pred_np).to(device), torch.from_numpy(target_np).to(device)

    cm = confusion_matrix(pred, target, c, IGNORE)
    assert cm.device == target.device and cm.dtype == torch.int64
    np.testing.assert_array_equal(cm.cpu().numpy(), ref_confusion(pred_np, target_np, c, IGNORE))
    cms = per_image_confusion(pred, target, c, IGNORE)
    assert cms.shape == (len(target_np), c, c) and cms.dtype == torch.int64
    for n in range(len(target_np)):
        np.testing.assert_array_equal(cms[n].cpu().numpy(), ref_confusion(pred_np[n], target_np[n], c, IGNORE))

    per_image = per_image_scores(pred, target, c, IGNORE)
    for key in ("iou", "dice", "miou", "mdice", "pixel_acc"):
        assert per_image[key].dtype == torch.float64
        assert_close(per_image[key], np.stack([np.asarray(s[key]) for s in ref["per_image"]]))

    metric = SemanticMetrics(c, IGNORE).to(device)
    metric.update(pred, target)
    result = metric.compute()
    for key in ("mIoU", "mDice", "pixel_acc", "mIoU_image", "mDice_image", "pixel_acc_image"):
        assert isinstance(result[key], float), key
        assert_close(result[key], ref[key])
    for key in ("iou", "dice", "iou_image", "dice_image"):
        assert result[key].shape == (c,)
        assert_close(result[key], ref[key])
    # the data really exercises both halves of the absent-class rule and the all-ignore skip
    all_iou = np.stack([s["iou"] for s in ref["per_image"]])
    assert np.isnan(all_iou).any()
    assert any(math.isnan(s["pixel_acc"]) for s in ref["per_image"])


@pytest.mark.parametrize("c", [2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_matches_torchmetrics(seed, c):
    pred_np, target_np = random_batch(seed, c, all_ignore=False)
    pred, target = torch.from_numpy(pred_np), torch.from_numpy(target_np)
    metric = SemanticMetrics(c, IGNORE)
    metric.update(pred, target)
    result = metric.compute()

    jaccard = MulticlassJaccardIndex(num_classes=c, average=None, ignore_index=IGNORE)
    tm_iou = jaccard(pred, target).double()
    # torchmetrics reports 0 (zero_division) where we report NaN: compare where the class has a union
    present = ~torch.isnan(result["iou"])
    assert present.any()
    assert_close(result["iou"][present], tm_iou[present].numpy())

    accuracy = MulticlassAccuracy(num_classes=c, average="micro", ignore_index=IGNORE)
    assert_close(result["pixel_acc"], float(accuracy(pred, target)))


@pytest.mark.parametrize("c", [2, 5])
def test_batched_updates_equal_single_update(c):
    pred_np, target_np = random_batch(3, c, n=9)
    pred, target = torch.from_numpy(pred_np), torch.from_numpy(target_np)
    whole = SemanticMetrics(c, IGNORE)
    whole.update(pred, target)
    batched = SemanticMetrics(c, IGNORE)
    for lo, hi in ((0, 2), (2, 3), (3, 7), (7, 9)):
        batched.update(pred[lo:hi], target[lo:hi])
    assert_results_equal(batched.compute(), whole.compute())
    # and batched equals the reference, so both are not merely equally wrong
    assert_close(batched.compute()["mIoU_image"], ref_dataset(pred_np, target_np, c, IGNORE)["mIoU_image"])


@pytest.mark.parametrize("boundary", [False, True])
def test_update_from_per_image_counts_equals_update(boundary):
    """Evaluation feeds the metric from per_image_scores' counts: the same results as update()."""
    pred_np, target_np = random_batch(5, 4, n=6)
    pred, target = torch.from_numpy(pred_np), torch.from_numpy(target_np)
    direct = SemanticMetrics(4, IGNORE, boundary=boundary)
    direct.update(pred, target)
    scores = per_image_scores(pred, target, 4, IGNORE, boundary=boundary)
    assert torch.equal(scores["confusion"], per_image_confusion(pred, target, 4, IGNORE))
    counted = SemanticMetrics(4, IGNORE, boundary=boundary)
    counted.update(counts=scores)
    assert_results_equal(counted.compute(), direct.compute())
    # torchmetrics' bookkeeping runs too: a later update is not hidden behind a cached compute().
    counted.update(counts=scores)
    direct.update(pred, target)
    assert_results_equal(counted.compute(), direct.compute())
    if boundary:
        with pytest.raises(ValueError, match="boundary_intersection"):
            counted.update(counts={"confusion": scores["confusion"]})


def _hand_batch():
    # Image A: class 0 half missed (predicted 2), class 1 perfect, class 2 hallucinated.
    # Image B: only class 0 in ground truth; the 2 sits on an ignored pixel and must not count.
    target = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [0, IGNORE]]])
    pred = torch.tensor([[[0, 2], [1, 1]], [[0, 0], [0, 2]]])
    return pred, target


def test_absent_class_rule_hand_computed():
    pred, target = _hand_batch()
    s = per_image_scores(pred, target, 3, IGNORE)
    assert_close(s["iou"], [[0.5, 1.0, 0.0], [1.0, NAN, NAN]])
    assert_close(s["dice"], [[2 / 3, 1.0, 0.0], [1.0, NAN, NAN]])
    assert_close(s["miou"], [0.5, 1.0])  # hallucinated class counts as 0; absent classes are left out
    assert_close(s["mdice"], [(2 / 3 + 1) / 3, 1.0])
    assert_close(s["pixel_acc"], [0.75, 1.0])

    metric = SemanticMetrics(3, IGNORE)
    metric.update(pred, target)
    r = metric.compute()
    assert_close(r["iou"], [0.8, 1.0, 0.0])
    assert_close(r["mIoU"], 1.8 / 3)
    assert_close(r["mDice"], (8 / 9 + 1) / 3)
    assert_close(r["pixel_acc"], 6 / 7)
    assert_close(r["iou_image"], [0.75, 1.0, 0.0])  # classes 1, 2 only scored in image A
    assert_close(r["mIoU_image"], 0.75)
    assert_close(r["pixel_acc_image"], 0.875)


def test_scores_from_confusion_all_absent_is_nan():
    s = scores_from_confusion(torch.zeros(2, 3, 3, dtype=torch.long))
    assert s["iou"].shape == (2, 3) and s["miou"].shape == (2,)
    assert torch.isnan(s["iou"]).all() and torch.isnan(s["miou"]).all() and torch.isnan(s["pixel_acc"]).all()


def test_all_ignore_image_is_skipped_in_per_image_means():
    pred, target = _hand_batch()
    blank_t = torch.full((1, 2, 2), IGNORE)
    blank_p = torch.tensor([[[2, 2], [1, 1]]])  # whatever is predicted there must not matter
    with_blank = SemanticMetrics(3, IGNORE)
    with_blank.update(torch.cat([pred[:1], blank_p, pred[1:]]), torch.cat([target[:1], blank_t, target[1:]]))
    without = SemanticMetrics(3, IGNORE)
    without.update(pred, target)
    assert_results_equal(with_blank.compute(), without.compute())
    assert int(with_blank.image_count) == 2

    only_blank = SemanticMetrics(3, IGNORE, class_names=["a", "b", "c"])
    only_blank.update(blank_p, blank_t)
    r = only_blank.compute()
    assert all(math.isnan(r[k]) for k in ("mIoU", "pixel_acc", "mIoU_image", "pixel_acc_image"))
    assert only_blank.named_scalars(r, "val") == {}


def test_out_of_range_values_raise():
    target = torch.tensor([[[0, 7], [IGNORE, 1]], [[-3, 0], [0, 0]]])
    pred = torch.zeros_like(target)
    with pytest.raises(ValueError, match=r"\[-3, 7\]"):
        confusion_matrix(pred, target, 2, IGNORE)
    with pytest.raises(ValueError, match="target"):
        per_image_confusion(pred, target, 2, IGNORE)
    with pytest.raises(ValueError, match="target"):
        SemanticMetrics(2, IGNORE).update(pred, target)
    # without an ignore_index, 255 is just an out-of-range value
    with pytest.raises(ValueError, match="255"):
        confusion_matrix(torch.zeros(1, 1, 2, dtype=torch.long), torch.tensor([[[0, IGNORE]]]), 2, None)
    # predictions are checked too, but only where the pixel is scored
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(torch.tensor([[[0, 5]]]), torch.tensor([[[0, 1]]]), 2, IGNORE)
    assert confusion_matrix(torch.tensor([[[0, 5]]]), torch.tensor([[[0, IGNORE]]]), 2, IGNORE).sum() == 1


def test_uint8_masks_and_negative_ignore_index():
    c = 20
    pred_np, target_np = random_batch(4, c)
    ref = ref_confusion(pred_np, target_np, c, IGNORE)
    # with 20 classes the bin index target * C + pred reaches 399: uint8 would wrap if not widened first
    cm = confusion_matrix(torch.from_numpy(pred_np).byte(), torch.from_numpy(target_np).byte(), c, IGNORE)
    np.testing.assert_array_equal(cm.numpy(), ref)
    neg = np.where(target_np == IGNORE, -100, target_np)
    cms = per_image_confusion(torch.from_numpy(pred_np), torch.from_numpy(neg), c, -100)
    np.testing.assert_array_equal(cms.sum(0).numpy(), ref)


def test_logits_equal_argmax():
    c = 5
    _, target_np = random_batch(5, c)
    target = torch.from_numpy(target_np)
    logits = torch.randn(target.shape[0], c, *target.shape[1:], generator=torch.Generator().manual_seed(0))
    from_logits = SemanticMetrics(c, IGNORE)
    from_logits.update(logits, target)
    from_index = SemanticMetrics(c, IGNORE)
    from_index.update(logits.argmax(dim=1), target)
    assert_results_equal(from_logits.compute(), from_index.compute())
    with pytest.raises(ValueError, match="channels"):
        SemanticMetrics(c + 1, IGNORE).update(logits, target)


def test_forward_returns_batch_scores_and_accumulates():
    pred_np, target_np = random_batch(6, 5, n=4)
    pred, target = torch.from_numpy(pred_np), torch.from_numpy(target_np)
    metric = SemanticMetrics(5, IGNORE)
    first = metric(pred[:2], target[:2])
    metric(pred[2:], target[2:])
    assert_close(first["mIoU"], ref_dataset(pred_np[:2], target_np[:2], 5, IGNORE)["mIoU"])
    assert_close(metric.compute()["mIoU"], ref_dataset(pred_np, target_np, 5, IGNORE)["mIoU"])


def test_named_scalars():
    pred, target = _hand_batch()
    metric = SemanticMetrics(3, IGNORE, class_names=["bg", "road", "car"])
    metric.update(pred[1:], target[1:])  # only class 0 present: road and car are NaN and dropped
    out = metric.named_scalars(metric.compute(), "val")
    assert set(out) == {
        "val/mIoU",
        "val/mDice",
        "val/pixel_acc",
        "val/mIoU_image",
        "val/mDice_image",
        "val/pixel_acc_image",
        "val/iou/bg",
        "val/dice/bg",
    }
    assert all(isinstance(v, float) for v in out.values())
    metric.update(pred[:1], target[:1])
    out = named_scalars(metric.compute(), "test", None)
    assert out["test/iou/2"] == 0.0 and out["test/iou/0"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"^got 1 class_names for num_classes=3$"):
        SemanticMetrics(3, IGNORE, class_names=["a"])
