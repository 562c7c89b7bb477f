"""Instance segmentation on DSB 2018 nuclei at equal training wall time: Mask R-CNN vs bottom-up vs a plain
UNet + connected components baseline, and what AP + Boundary AP + PQ cost next to inference.

    python benchmarks/instance_dsb2018.py [--minutes 6] [--workdir DIR] [--out FILE.json]

Imports ../shared/datasets/dsb2018_nuclei_256 (a folder per image, one mask per nucleus) into a scratch
project with masklab's own importer (split 80/10/10, seed 0), then trains, each for the same wall-clock
budget (Lightning's ``max_time``, one after the other on an otherwise idle machine):

(a) ``experiment=maskrcnn-mobilenetv3_dsb2018_nuclei_256-256`` (Mask R-CNN, MobileNetV3-FPN, from scratch),
(b) ``experiment=bottomup-resnet18_dsb2018_nuclei_256-256`` (UNet-resnet18: classes + boundary, watershed),
(c) the baseline: the same UNet-resnet18 trained as a plain semantic model (nucleus vs background) with
    masklab's semantic preset settings, its foreground split into objects by connected components here
    (score = mean foreground probability), which is what one would write without an instance tool.

All three are scored on the held-out test split at original resolution with the same
:class:`masklab.metrics.instance.InstanceMetrics` (COCO mask AP, AP50, Boundary AP, PQ). The evaluation
cost is the metric update time per image against the model's inference time per image (bottom-up).
A second call with the same ``--workdir`` reuses the import and the trained checkpoints (``--retrain``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scratch import REPO, enter_scratch_project

DATASET = "dsb2018_nuclei_256"
ARMS = {
    "maskrcnn": ["experiment=maskrcnn-mobilenetv3_dsb2018_nuclei_256-256"],
    "bottomup": ["experiment=bottomup-resnet18_dsb2018_nuclei_256-256"],
    "unet_cc": ["data=dsb2018_nuclei_256", "model=unet", "model.encoder=resnet18", "loss=ce_dice", "augment=light",
                "data.image_size=256", "data.batch_size=4", "experiment_name=unet_cc-resnet18_dsb2018_nuclei_256-256"],
}
HEADLINES = ("mask_AP", "mask_AP50", "mask_AP75", "boundary_AP", "PQ")


def train(arm: str, minutes: float, retrain: bool) -> tuple[Path, float, int]:
    """(best checkpoint, seconds spent in fit, epochs) of one arm, trained for ``minutes`` of wall time."""
    from masklab.config import compose
    from masklab.workflows import fit

    marker = Path("checkpoints") / f"{arm}.json"
    if marker.is_file() and not retrain:
        found = json.loads(marker.read_text())
        return Path(found["checkpoint"]), found["seconds"], found["epochs"]
    stop = time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60))
    cfg = compose("train", [*ARMS[arm], "trainer.max_epochs=1000", f"+trainer.max_time={stop}",
                            "evaluate_after=false", "trainer.enable_progress_bar=false"])
    start = time.perf_counter()
    result = fit(cfg, Path("runs") / arm)
    seconds = time.perf_counter() - start
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(json.dumps({"checkpoint": str(result.best_checkpoint), "seconds": seconds,
                                  "epochs": result.epochs}))
    return Path(result.best_checkpoint), seconds, result.epochs


def connected_components(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The baseline's objects from (2, H, W) class probabilities: (masks (K, H, W), classes (K,), scores (K,))."""
    from scipy import ndimage

    labels, n = ndimage.label(probs.argmax(axis=0) == 1)
    ids = np.arange(1, n + 1)
    masks = labels[None] == ids[:, None, None]
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    scores = np.bincount(labels.ravel(), weights=probs[1].ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    return masks, np.ones(n, np.int64), scores.astype(np.float32)


def score(arm: str, ckpt: Path, dataset, split: str) -> dict:
    """Instance metrics of ``arm`` on ``split``, and seconds per image of inference and of the metric update."""
    import torch

    from masklab.data.images import read_image
    from masklab.data.objects import read_objects
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference import Predictor
    from masklab.inference.rule import rule_from_meta
    from masklab.metrics.instance import InstanceMetrics
    from masklab.tasks import get_task

    loaded = load_checkpoint_model(ckpt)
    predictor = Predictor(loaded.model, rule_from_meta(loaded.meta), "cpu", 4)
    metrics = InstanceMetrics([1])
    infer = update = 0.0
    samples = dataset.labeled(split)
    for sample in samples:
        image, truth = read_image(dataset.root / sample.image), read_objects(dataset.root, sample)
        start = time.perf_counter()
        if arm == "unet_cc":
            with torch.no_grad():
                probs = predictor.logits([image])[0].softmax(dim=0).cpu().numpy()
            masks, classes, scores = connected_components(probs)
        else:
            found = get_task("instance").predict(predictor, [image])[0]
            masks, classes, scores = found.masks, found.class_ids, found.scores
        infer += time.perf_counter() - start
        start = time.perf_counter()
        metrics.update(sample.id, truth.masks, truth.class_ids, truth.iscrowd, masks, classes, scores)
        update += time.perf_counter() - start
    values = metrics.compute()
    n = len(samples)
    return {"images": n, **{k: float(values[k]) for k in HEADLINES},
            "inference_s_per_image": infer / n, "metrics_s_per_image": update / n}


def ground_truth_ceiling(dataset, split: str) -> dict:
    """The baseline's best case: connected components of the ground-truth foreground (a perfect semantic
    model), scored like the arms. Touching objects merge, so no instance method can beat a perfect UNet + CC
    by more than 1 / this mask AP."""
    from scipy import ndimage

    from masklab.data.objects import read_objects
    from masklab.metrics.instance import InstanceMetrics

    metrics = InstanceMetrics([1])
    objects = blobs = 0
    for sample in dataset.labeled(split):
        truth = read_objects(dataset.root, sample)
        labels, n = ndimage.label(truth.masks.any(axis=0))
        masks = labels[None] == np.arange(1, n + 1)[:, None, None]
        objects, blobs = objects + len(truth), blobs + n
        metrics.update(sample.id, truth.masks, truth.class_ids, truth.iscrowd, masks, np.ones(n, np.int64),
                       np.ones(n, np.float32))
    values = metrics.compute()
    return {"objects": objects, "blobs": blobs, **{k: float(values[k]) for k in HEADLINES}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=6.0, help="training wall time of each arm")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-instance-dsb2018")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    enter_scratch_project(a.workdir)
    from masklab.config import compose
    from masklab.data.manifest import load_dataset
    from masklab.workflows import import_dataset

    if not (Path("data") / DATASET).is_dir():
        import_dataset(compose("data_import", [f"source={DATASET}", "write_conf=false"]))
    dataset = load_dataset(Path("data") / DATASET)
    results = {}
    print(f"{'arm':<9} {'epochs':>6} {'train s':>8} " + " ".join(f"{h:>11}" for h in HEADLINES)
          + f" {'infer s/img':>11} {'metric s/img':>12}", flush=True)
    for arm in a.arms:
        ckpt, seconds, epochs = train(arm, a.minutes, a.retrain)
        r = results[arm] = {"checkpoint": str(ckpt), "train_seconds": seconds, "epochs": epochs,
                            **score(arm, ckpt, dataset, "test")}
        print(f"{arm:<9} {epochs:>6} {seconds:>8.0f} " + " ".join(f"{r[h]:>11.4f}" for h in HEADLINES)
              + f" {r['inference_s_per_image']:>11.4f} {r['metrics_s_per_image']:>12.4f}", flush=True)
        if a.out:
            a.out.write_text(json.dumps(results, indent=2))
    ceiling = results["cc_of_ground_truth"] = ground_truth_ceiling(dataset, "test")
    print(f"ceiling: connected components of the ground-truth foreground: mask AP {ceiling['mask_AP']:.4f} "
          f"({ceiling['objects']} objects -> {ceiling['blobs']} blobs); no method beats a perfect UNet + CC by more "
          f"than {1 / ceiling['mask_AP']:.2f}x")
    if a.out:
        a.out.write_text(json.dumps(results, indent=2))
    if "unet_cc" in results:
        best = max((arm for arm in ARMS if arm in results and arm != "unet_cc"), key=lambda k: results[k]["mask_AP"],
                   default=None)
        if best:
            base = results["unet_cc"]["mask_AP"]
            ratio = results[best]["mask_AP"] / base if base > 0 else float("inf")
            print(f"best workbench arm: {best}; mask AP {results[best]['mask_AP']:.4f} vs baseline {base:.4f} "
                  f"= {ratio:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    main()
