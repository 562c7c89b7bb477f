"""Cost of the instance metrics per image: mask AP, Boundary AP and PQ separately; faster-coco-eval if installed.

Synthetic images (default 40 images of 256x256 with 20 ellipses each, 2 classes) and predictions
that are shifted / resized copies of the objects, some missed, plus spurious ones. Timed, each the
median of ``--rounds`` passes over all images, per image:

* ``mask AP``: ``InstanceMetrics(boundary=False).update`` + ``compute`` (RLE encoding, COCOeval's
  per-image matching, the image AP, the per-sample row) minus the PQ part below;
* ``Boundary AP``: ``boundary=True`` minus ``boundary=False`` (bands, their RLEs, the second COCOeval);
* ``PQ``: :func:`resolve_overlaps` + :func:`panoptic_counts` alone;
* ``pycocotools direct``: COCOeval evaluate + accumulate over the whole set built as a COCO dataset,
  the non-streaming way (RLEs encoded beforehand, not timed);
* ``faster-coco-eval``: the same with ``faster_coco_eval.COCOeval_faster``, its stats compared with
  pycocotools' (largest absolute difference) and the speed ratio. Skipped when not installed.

    python benchmarks/instance_metrics.py [--images 40] [--size 256] [--objects 20] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import numpy as np
import torch

from masklab.metrics.instance import InstanceMetrics, panoptic_counts, resolve_overlaps

CLASSES = (1, 2)


def make_images(n: int, size: int, n_obj: int, seed: int = 0) -> list[dict]:
    """Per image: gt masks/classes/iscrowd and predictions (about 90% of objects found, 2 spurious)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]

    def ellipse() -> np.ndarray:
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(size / 40, size / 10, 2)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1

    images = []
    for _ in range(n):
        gt = np.stack([ellipse() for _ in range(n_obj)])
        gt_cls = rng.choice(CLASSES, n_obj)
        found = rng.random(n_obj) < 0.9
        preds = [np.roll(m, tuple(rng.integers(-2, 3, 2)), axis=(0, 1)) for m in gt[found]]
        preds += [ellipse() for _ in range(2)]
        pred_cls = np.concatenate([gt_cls[found], rng.choice(CLASSES, 2)])
        images.append({"gt_masks": gt, "gt_classes": gt_cls, "gt_iscrowd": np.zeros(n_obj, np.uint8),
                       "pred_masks": np.stack(preds), "pred_classes": pred_cls,
                       "pred_scores": rng.uniform(0.05, 1.0, len(preds))})
    return images


def time_metric(images: list[dict], boundary: bool) -> tuple[float, dict[str, float]]:
    """Seconds for update on every image + compute(); the computed metrics."""
    start = time.perf_counter()
    metric = InstanceMetrics(CLASSES, boundary=boundary)
    for i, im in enumerate(images):
        metric.update(f"s{i}", **im)
    result = metric.compute()
    return time.perf_counter() - start, result


def time_pq(images: list[dict]) -> float:
    start = time.perf_counter()
    for im in images:
        painted = resolve_overlaps(im["pred_masks"], im["pred_scores"])
        panoptic_counts(im["gt_masks"], im["gt_classes"], im["gt_iscrowd"].astype(bool), painted, im["pred_classes"],
                        CLASSES)
    return time.perf_counter() - start


def coco_inputs(images: list[dict]) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dataset and a results list with compressed RLEs (counts as str: JSON-like)."""
    from pycocotools import mask as mask_utils

    def rle(m: np.ndarray) -> dict:
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}

    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in CLASSES]}
    results = []
    for i, im in enumerate(images, start=1):
        h, w = im["gt_masks"].shape[1:]
        gt["images"].append({"id": i, "height": h, "width": w})
        for m, c in zip(im["gt_masks"], im["gt_classes"]):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": int(c),
                                      "segmentation": rle(m), "area": float(m.sum()), "iscrowd": 0,
                                      "bbox": [0, 0, 1, 1]})
        for m, c, s in zip(im["pred_masks"], im["pred_classes"], im["pred_scores"]):
            results.append({"image_id": i, "category_id": int(c), "segmentation": rle(m), "score": float(s)})
    return gt, results


def time_coco(module: str, gt: dict, results: list[dict], iou_type: str = "segm") -> tuple[float, np.ndarray]:
    """Seconds for evaluate + accumulate + summarize with pycocotools or faster_coco_eval; the 12 stats.

    iou_type 'boundary' (faster_coco_eval only): Boundary AP, its boundaries computed inside the timing.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        # each engine gets its own copy of the inputs (both add keys to the annotations)
        gt, results = json.loads(json.dumps(gt)), json.loads(json.dumps(results))
        if module == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
            start = time.perf_counter()
            ev = COCOeval(coco_gt, coco_dt, iou_type)
        else:
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(gt)
            coco_dt = coco_gt.loadRes(results)
            start = time.perf_counter()
            ev = COCOeval_faster(coco_gt, coco_dt, iou_type, boundary_cpu_count=1)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        seconds = time.perf_counter() - start
    return seconds, np.asarray(ev.stats[:12], dtype=np.float64)


def stats_of(result: dict[str, float], prefix: str) -> np.ndarray:
    """Our compute() keys in COCOeval.stats order, NaN back to COCO's -1."""
    keys = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
            "AR_medium", "AR_large")
    return np.nan_to_num(np.array([result[prefix + k] for k in keys]), nan=-1.0)


def median_time(fn, rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = make_images(args.images, args.size, args.objects)
    n = len(images)

    time_metric(images[:2], boundary=True)  # warm up: imports, first torch ops
    # Rounds interleave the three passes (order flipped each round) so machine noise hits them alike.
    passes: dict[str, list[float]] = {"no_boundary": [], "with_boundary": [], "pq": []}
    ours: dict[str, float] = {}
    for r in range(args.rounds):
        for name in (list(passes) if r % 2 == 0 else reversed(list(passes))):
            if name == "pq":
                passes[name].append(time_pq(images))
            else:
                seconds, result = time_metric(images, boundary=name == "with_boundary")
                passes[name].append(seconds)
                ours = result if name == "with_boundary" else ours
    no_boundary, with_boundary, pq = (statistics.median(passes[k]) for k in passes)
    print(f"{n} images {args.size}x{args.size}, {args.objects} objects each, {args.threads} thread(s); s/image:")
    print(f"  mask AP (+ per-sample row)  {(no_boundary - pq) / n:.4f}")
    print(f"  Boundary AP (extra)         {(with_boundary - no_boundary) / n:.4f}")
    print(f"  PQ                          {pq / n:.4f}")
    print(f"  all three (update+compute)  {with_boundary / n:.4f}")

    gt, results = coco_inputs(images)
    ref = [time_coco("pycocotools", gt, results) for _ in range(args.rounds)]
    ref_seconds, ref_stats = statistics.median(s for s, _ in ref), ref[0][1]
    print(f"  pycocotools direct, mask AP {ref_seconds / n:.4f}  (COCOeval on the whole set; "
          f"|ours - it| <= {np.abs(stats_of(ours, 'mask_') - ref_stats).max():.1e})")
    try:
        import faster_coco_eval  # noqa: F401 (only asks whether it is installed)
    except ImportError:
        print("  faster-coco-eval: not installed (pip install faster-coco-eval to compare)")
        return
    fast = [time_coco("faster_coco_eval", gt, results) for _ in range(args.rounds)]
    fast_seconds = statistics.median(s for s, _ in fast)
    print(f"  faster-coco-eval, mask AP   {fast_seconds / n:.4f}  ({ref_seconds / fast_seconds:.1f}x faster than "
          f"pycocotools direct; |it - pycocotools| <= {np.abs(fast[0][1] - ref_stats).max():.1e})")
    fast_b = [time_coco("faster_coco_eval", gt, results, "boundary") for _ in range(args.rounds)]
    print(f"  faster-coco-eval, Boundary AP {statistics.median(s for s, _ in fast_b) / n:.4f}  (boundaries included; "
          f"|ours - it| <= {np.abs(stats_of(ours, 'boundary_') - fast_b[0][1]).max():.1e})")

if __name__ == "__main__":
    main()
