"""Training-step throughput: full workbench vs model-only ceiling vs a hand-written PyTorch loop.

All three train the same model (UNet-resnet18 by default), batch, image size, loss and
optimizer on the same synthetic dataset, measured in this one run, alternating rounds so
machine noise hits all three alike. Ratios are reported, not absolute times.

    python benchmarks/throughput.py [--size 128] [--batch 8] [--count 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from masklab.augment import build_pipeline
from masklab.data.datamodule import SegmentationSplit
from masklab.data.format import load_dataset
from masklab.data.synth import synthesize
from masklab.losses import build_loss
from masklab.models import build_model

CONF = Path(__file__).resolve().parents[1] / "src" / "masklab" / "conf"
WARMUP = 2  # same as the workbench's ThroughputMonitor


def setup(num_classes: int, arch: str, encoder: str, lr: float):
    torch.manual_seed(0)
    model = build_model(num_classes=num_classes, arch=arch, encoder=encoder).train()
    loss = build_loss({"ce": 1.0, "dice": 1.0}, ignore_index=255)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    return model, loss, opt


def step(model, loss_fn, opt, images, masks) -> None:
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), masks)
    loss.backward()
    opt.step()


def model_only(batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int, **kw) -> float:
    """Images/s of forward+backward+step on tensors already in memory (the ceiling)."""
    model, loss_fn, opt = setup(**kw)
    images_done, start = 0, None
    for i in range(steps + WARMUP):
        images, masks = batches[i % len(batches)]
        step(model, loss_fn, opt, images, masks)
        if i + 1 == WARMUP:
            start = time.perf_counter()
        elif i + 1 > WARMUP:
            images_done += len(images)
    return images_done / (time.perf_counter() - start)


def plain_loop(split: SegmentationSplit, batch: int, steps: int, **kw) -> float:
    """Images/s of a hand-written loop: DataLoader + augmentation + the same step."""
    model, loss_fn, opt = setup(**kw)
    loader = DataLoader(split, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    images_done, start, i = 0, None, 0
    while i < steps + WARMUP:
        for b in loader:
            step(model, loss_fn, opt, b["image"], b["mask"])
            i += 1
            if i == WARMUP:
                start = time.perf_counter()
            elif i > WARMUP:
                images_done += len(b["image"])
            if i >= steps + WARMUP:
                break
    return images_done / (time.perf_counter() - start)


def workbench(project: Path, data_root: Path, size: int, batch: int, arch: str, encoder: str, lr: float) -> float:
    """Images/s that `masklab train` itself logs (ThroughputMonitor), in its last epoch."""
    args = [sys.executable, "-m", "masklab.cli", "train", f"data.root={data_root}", f"data.name={data_root.name}",
            f"data.image_size={size}", f"data.batch_size={batch}", f"model.arch={arch}", f"model.encoder={encoder}",
            f"optimizer.lr={lr}",
            "trainer.max_epochs=2", "trainer.limit_val_batches=1", "evaluate_after=false", "augment=light",
            "loss=ce_dice", "trainer.enable_progress_bar=false"]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    res = subprocess.run(args, cwd=project, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/experiments/mlflow.db")
    exp = client.get_experiment_by_name(data_root.name)
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    return client.get_metric_history(run.info.run_id, "train/images_per_s")[-1].value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--count", type=int, default=200, help="images in the dataset (80%% train)")
    p.add_argument("--arch", default="Unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = p.parse_args()
    kw = {"arch": a.arch, "encoder": a.encoder, "lr": 1e-3}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data" / "bench"
        synthesize(root, count=a.count, size=a.size, num_shapes=3, seed=0)
        dataset = load_dataset(root)
        light = OmegaConf.load(CONF / "augment" / "light.yaml")
        aug = OmegaConf.merge({"data": {"image_size": a.size}}, {"augment": light})
        split = SegmentationSplit(dataset, dataset.split("train"), build_pipeline(aug.augment.train, seed=0))
        steps = len(split) // a.batch - WARMUP  # what the workbench measures in one epoch
        eval_split = SegmentationSplit(dataset, dataset.split("train"), None)
        batches = [(b["image"], b["mask"]) for b in DataLoader(eval_split, batch_size=a.batch, drop_last=True)]
        rows = []
        for r in range(a.rounds):
            ceiling = model_only(batches, steps, num_classes=4, **kw)
            plain = plain_loop(split, a.batch, steps, num_classes=4, **kw)
            project = Path(tmp) / f"project{r}"
            project.mkdir()
            bench = workbench(project, root, a.size, a.batch, **kw)
            rows.append({"model_only": ceiling, "plain_loop": plain, "workbench": bench})
            print(f"round {r}: model-only {ceiling:.2f} img/s, plain loop {plain:.2f} img/s, "
                  f"workbench {bench:.2f} img/s", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {
        "config": {**vars(a), "out": str(a.out), "steps_measured": steps, "torch_threads": torch.get_num_threads()},
        "rounds": rows,
        "median_img_per_s": med,
        "workbench_vs_model_only": med["workbench"] / med["model_only"],
        "workbench_vs_plain_loop": med["workbench"] / med["plain_loop"],
    }
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
