"""Scores and speed of evaluation at model resolution vs at each image's original resolution.

For each real dataset from ../shared (Kvasir-SEG, ISBI membranes): import it into a scratch
project, train its experiment preset (epochs cut to fit a 2-core CPU: ``--epochs``), then
evaluate the best checkpoint on the held-out split both ways, alternating rounds so machine noise
hits both alike. Prints and writes (``--out``, JSON) the metrics side by side and the ratio of
seconds per image, original / model (the issue's goal: <= 1.3 on CPU).

    python benchmarks/eval_resolution.py [--datasets kvasir_seg membrane] [--rounds 2] [--workdir DIR]

A second call with the same ``--workdir`` reuses the imports and checkpoints (``--retrain`` to
train again). Run it on an idle machine: two jobs on 2 cores slow each other several times over.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from scratch import REPO, enter_scratch_project

PRESETS = {"kvasir_seg": ("unet-resnet18_kvasir_seg-160", 4, "test"),
           "membrane": ("unet-resnet18_membrane-256", 30, "val")}
HEADLINES = ("mIoU", "mDice", "mBoundaryIoU", "pixel_acc")


def prepare(name: str, epochs: int, retrain: bool) -> tuple[object, Path]:
    """The imported dataset and the best checkpoint of its preset (trained here unless already done)."""
    from masklab.config import compose
    from masklab.data.manifest import load_dataset
    from masklab.workflows import fit, import_dataset

    if not (Path("data") / name).is_dir():
        import_dataset(compose("data_import", [f"source={name}", "write_conf=true"]))
    marker = Path("checkpoints") / f"{name}.txt"
    if retrain or not marker.is_file():
        preset = PRESETS[name][0]
        cfg = compose("train", [f"experiment={preset}", f"trainer.max_epochs={epochs}", "evaluate_after=false"])
        start = time.perf_counter()
        result = fit(cfg, Path("runs") / name)
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(f"{result.best_checkpoint}\n{time.perf_counter() - start:.0f}\n")
    ckpt = Path(marker.read_text().splitlines()[0])
    return load_dataset(Path("data") / name), ckpt


def measure(dataset, ckpt: Path, split: str, rounds: int) -> dict:
    from masklab.workflows import evaluate_checkpoint

    times: dict[str, list[float]] = {"model": [], "original": []}
    metrics: dict[str, dict[str, float]] = {}
    n = len(dataset.labeled(split))
    evaluate_checkpoint(ckpt, dataset, split, Path("eval") / "warmup", options={"resolution": "model"})
    for _ in range(rounds):
        for resolution in ("model", "original"):
            start = time.perf_counter()
            result = evaluate_checkpoint(ckpt, dataset, split, Path("eval") / resolution,
                                         options={"resolution": resolution, "device": "cpu"})
            times[resolution].append((time.perf_counter() - start) / n)
            metrics[resolution] = {k: result.headline(k) for k in HEADLINES}
    seconds = {k: statistics.median(v) for k, v in times.items()}
    return {"split": split, "images": n, "metrics": metrics, "seconds_per_image": seconds,
            "ratio_original_over_model": seconds["original"] / seconds["model"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--epochs", type=int, nargs="*", default=None, help="one per dataset (default: 4 and 30)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-eval-resolution")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    enter_scratch_project(a.workdir)
    results = {}
    print(f"{'dataset':<11} {'split':<5} {'resolution':<10} " + " ".join(f"{h:>12}" for h in HEADLINES)
          + f" {'s/image':>8}")
    for i, name in enumerate(a.datasets):
        epochs = a.epochs[i] if a.epochs else PRESETS[name][1]
        dataset, ckpt = prepare(name, epochs, a.retrain)
        r = results[name] = {"preset": PRESETS[name][0], "epochs": epochs, "checkpoint": str(ckpt),
                             **measure(dataset, ckpt, PRESETS[name][2], a.rounds)}
        # Printed (and written) as soon as measured: a later dataset's failure keeps this one's figures.
        for res in ("model", "original"):
            print(f"{name:<11} {r['split']:<5} {res:<10} "
                  + " ".join(f"{r['metrics'][res][h]:>12.4f}" for h in HEADLINES)
                  + f" {r['seconds_per_image'][res]:>8.4f}", flush=True)
        print(f"{name}: original / model seconds per image = {r['ratio_original_over_model']:.2f}", flush=True)
        if a.out:
            a.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
