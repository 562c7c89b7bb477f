"""Cost of Boundary IoU in an evaluation pass: boundary off vs on, and the metric alone.

A full pass is what evaluation does per batch: a small model (UNet-resnet18, eval mode) over
random uint8 images, argmax, ``per_image_scores`` (the per-sample rows) feeding
``SemanticMetrics.update(counts=...)``, then ``compute()``. Passes with the
boundary off and on alternate (order flipped each round) so machine noise hits both alike; the
ratio of the median pass times is reported (target <= 1.5). The metric-only part times
``update`` + ``compute`` on predictions computed once beforehand, per image.

    python benchmarks/boundary_iou.py [--images 32] [--batch 8] [--size 256] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from masklab.metrics import SemanticMetrics, boundary_dilation, per_image_scores
from masklab.models import build_model

IGNORE = 255


def make_data(n: int, size: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images and blocky random masks (16 px blocks, 2% ignore pixels)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    coarse = torch.randint(0, num_classes, (n, 1, size // 16, size // 16), generator=g).float()
    masks = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    masks[torch.rand(masks.shape, generator=g) < 0.02] = IGNORE
    return images, masks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def full_pass(model, batches, num_classes: int, boundary: bool, ratio: float, device: torch.device) -> float:
    """Seconds for model + argmax + per-image counts + dataset metric over all batches, then compute()."""
    sync(device)
    start = time.perf_counter()
    metric = SemanticMetrics(num_classes, IGNORE, boundary=boundary, dilation_ratio=ratio).to(device)
    with torch.inference_mode():
        for images, masks in batches:
            pred = model(images).argmax(dim=1)
            metric.update(counts=per_image_scores(pred, masks, num_classes, IGNORE, boundary=boundary,
                                                  dilation_ratio=ratio))
        metric.compute()
    sync(device)
    return time.perf_counter() - start


def metric_pass(preds, batches, num_classes: int, boundary: bool, ratio: float, device: torch.device) -> float:
    """Seconds for SemanticMetrics.update over all batches (predictions given), then compute()."""
    sync(device)
    start = time.perf_counter()
    metric = SemanticMetrics(num_classes, IGNORE, boundary=boundary, dilation_ratio=ratio).to(device)
    for pred, (_, masks) in zip(preds, batches):
        metric.update(pred, masks)
    metric.compute()
    sync(device)
    return time.perf_counter() - start


def scores_pass(preds, batches, num_classes: int, boundary: bool, ratio: float, device: torch.device) -> float:
    """Seconds for per_image_scores over all batches (what per-sample tables add on top of update)."""
    sync(device)
    start = time.perf_counter()
    for pred, (_, masks) in zip(preds, batches):
        per_image_scores(pred, masks, num_classes, IGNORE, boundary=boundary, dilation_ratio=ratio)
    sync(device)
    return time.perf_counter() - start


def alternate(fn, rounds: int) -> dict[bool, list[float]]:
    """Times of fn(boundary) for off and on, alternating, order flipped every round."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for boundary in (False, True) if r % 2 == 0 else (True, False):
            times[boundary].append(fn(boundary))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--dilation-ratio", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=3, help="full-pass rounds per setting")
    parser.add_argument("--metric-rounds", type=int, default=10, help="metric-only rounds per setting")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(num_classes=args.classes, arch="Unet", encoder="resnet18").to(device).eval()
    images, masks = make_data(args.images, args.size, args.classes)
    batches = [
        (images[i : i + args.batch].to(device), masks[i : i + args.batch].to(device))
        for i in range(0, args.images, args.batch)
    ]
    c, ratio = args.classes, args.dilation_ratio

    def full(b: bool) -> float:
        return full_pass(model, batches, c, b, ratio, device)

    full(False), full(True)  # warm-up: allocator, kernels, lazy imports
    full_times = alternate(full, args.rounds)

    with torch.inference_mode():
        preds = [model(x).argmax(dim=1) for x, _ in batches]

    def metric(b: bool) -> float:
        return metric_pass(preds, batches, c, b, ratio, device)

    def scores(b: bool) -> float:
        return scores_pass(preds, batches, c, b, ratio, device)

    metric(False), metric(True), scores(True)
    metric_times = alternate(metric, args.metric_rounds)
    scores_times = alternate(scores, args.metric_rounds)

    def per_image_ms(times: list[float]) -> float:
        return round(statistics.median(times) / args.images * 1e3, 3)

    off, on = statistics.median(full_times[False]), statistics.median(full_times[True])
    summary = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "images": args.images,
        "batch": args.batch,
        "size": args.size,
        "classes": c,
        "dilation_ratio": ratio,
        "d_px": boundary_dilation(args.size, args.size, ratio),
        "full_pass_s": {
            "boundary_off": [round(t, 4) for t in full_times[False]],
            "boundary_on": [round(t, 4) for t in full_times[True]],
        },
        "full_pass_ratio_on_over_off": round(on / off, 4),
        "target_ratio": 1.5,
        "metric_ms_per_image": {
            "update_boundary_off": per_image_ms(metric_times[False]),
            "update_boundary_on": per_image_ms(metric_times[True]),
            "update_boundary_extra": round(per_image_ms(metric_times[True]) - per_image_ms(metric_times[False]), 3),
            "per_image_scores_boundary_off": per_image_ms(scores_times[False]),
            "per_image_scores_boundary_on": per_image_ms(scores_times[True]),
        },
        "model_ms_per_image_approx": round((off - statistics.median(metric_times[False])) / args.images * 1e3, 3),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
