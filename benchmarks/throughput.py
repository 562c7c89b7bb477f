"""Training-step throughput: full workbench vs model-only ceiling vs a hand-written PyTorch loop.

All three train the same model (UNet-resnet18 by default), batch, image size, loss and
optimizer on the same synthetic dataset, measured in this one run, alternating rounds so
machine noise hits all three alike. Ratios are reported, not absolute times.

All three are timed as wall clock over the same steps: the workbench's figure is its last (second) epoch from the
end of its ``WARMUP``-th batch (its ThroughputMonitor), so the model-only ceiling and the plain loop also run one
epoch and ``WARMUP`` steps before their clock starts, then time the same number of steps. (Timing them from their
third step instead, as this benchmark once did, compared the workbench's second epoch with the others' first
steps: the workbench came out at 1.08x the ceiling on one machine, 1.01-1.03x on another.)

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
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from masklab.augment import build_pipeline
from masklab.data.datamodule import SegmentationSplit
from masklab.data.manifest import load_dataset
from masklab.data.synth import synthesize
from masklab.losses import build_loss
from masklab.models import build_model

CONF = Path(__file__).resolve().parents[1] / "src" / "masklab" / "conf"
WARMUP = 2  # same as the workbench's ThroughputMonitor


def setup(num_classes: int, arch: str, encoder: str, lr: float, device: str = "cpu", channels_last: bool = False):
    """The model, loss and optimizer `masklab train` builds for this experiment, on ``device`` (in channels-last
    memory format, as trainer.channels_last puts it)."""
    torch.manual_seed(0)
    model = build_model(num_classes=num_classes, arch=arch, encoder=encoder).train().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss = build_loss({"ce": 1.0, "dice": 1.0}, ignore_index=255)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    return model, loss, opt


def autocast(device: str, precision: str):
    """The autocast context of a Lightning precision (``bf16-mixed``, ``16-mixed``; none for ``32-true``)."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else nullcontext()


def step(model, loss_fn, opt, images, masks, precision: str = "32-true", scaler=None) -> None:
    """One optimizer step as Lightning takes it: forward and loss under ``precision``'s autocast, backward (through
    ``scaler``'s loss scaling for 16-mixed), optimizer step."""
    opt.zero_grad(set_to_none=True)
    with autocast(images.device.type, precision):
        loss = loss_fn(model(images), masks)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so a clock reading covers it (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def model_only(batches: Sequence[tuple[torch.Tensor, torch.Tensor]], steps: int, precision: str = "32-true",
               warmup: int = WARMUP, **kw) -> float:
    """Images/s of forward+backward+step on tensors already in the device's memory (the ceiling), timed over
    ``steps`` steps after ``warmup`` untimed ones; ``kw``: setup's, the batches already on its device and in its
    memory format."""
    model, loss_fn, opt = setup(**kw)
    device = kw.get("device", "cpu")
    scaler = torch.amp.GradScaler(torch.device(device).type) if precision == "16-mixed" else None
    images_done, start = 0, None
    for i in range(steps + warmup):
        images, masks = batches[i % len(batches)]
        step(model, loss_fn, opt, images, masks, precision, scaler)
        if i + 1 == warmup:
            synchronize(device)
            start = time.perf_counter()
        elif i + 1 > warmup:
            images_done += len(images)
    synchronize(device)
    return images_done / (time.perf_counter() - start)


def plain_loop(split: SegmentationSplit, batch: int, steps: int, warmup: int = WARMUP, **kw) -> float:
    """Images/s of a hand-written loop: DataLoader + augmentation + the same step, timed over ``steps`` steps after
    ``warmup`` untimed ones."""
    model, loss_fn, opt = setup(**kw)
    loader = DataLoader(split, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    images_done, start, i = 0, None, 0
    while i < steps + warmup:
        for b in loader:
            step(model, loss_fn, opt, b["image"], b["mask"])
            i += 1
            if i == warmup:
                start = time.perf_counter()
            elif i > warmup:
                images_done += len(b["image"])
            if i >= steps + warmup:
                break
    return images_done / (time.perf_counter() - start)


def benchmark_data(root: Path, count: int, size: int, batch: int
                   ) -> tuple[SegmentationSplit, list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Synthesize the benchmark dataset at ``root`` (``count`` shapes images of ``size`` px, 80 % train); returns
    its train split with the light augmentation (the loops' input), the train images as un-augmented batches in
    memory (the model-only input) and the steps the workbench measures in one epoch (``WARMUP`` fewer)."""
    synthesize(root, count=count, size=size, num_shapes=3, seed=0)
    dataset = load_dataset(root)
    light = OmegaConf.load(CONF / "augment" / "light.yaml")
    aug = OmegaConf.merge({"data": {"image_size": size}}, {"augment": light})
    split = SegmentationSplit(dataset, dataset.split("train"), build_pipeline(aug.augment.train, seed=0))
    eval_split = SegmentationSplit(dataset, dataset.split("train"), None)
    batches = [(b["image"], b["mask"]) for b in DataLoader(eval_split, batch_size=batch, drop_last=True)]
    return split, batches, len(split) // batch - WARMUP


def workbench(project: Path, data_root: Path, size: int, batch: int, arch: str, encoder: str, lr: float,
              overrides: Sequence[str] = ()) -> float:
    """Images/s that `masklab train` itself logs (ThroughputMonitor), in its last epoch; ``overrides``: more of
    its arguments (trainer=gpu, trainer.precision=...)."""
    args = [sys.executable, "-m", "masklab.cli", "train", f"data.root={data_root}", f"data.name={data_root.name}",
            f"data.image_size={size}", f"data.batch_size={batch}", f"model.arch={arch}", f"model.encoder={encoder}",
            f"optimizer.lr={lr}",
            "trainer.max_epochs=2", "trainer.limit_val_batches=1", "evaluate_after=false", "augment=light",
            "loss=ce_dice", "trainer.enable_progress_bar=false", *overrides]
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
        split, batches, steps = benchmark_data(root, a.count, a.size, a.batch)
        rows = []
        # The workbench's clock runs in its second epoch from the end of batch WARMUP: the same steps here.
        warmup = steps + 2 * WARMUP
        for r in range(a.rounds):
            ceiling = model_only(batches, steps, warmup=warmup, num_classes=4, **kw)
            plain = plain_loop(split, a.batch, steps, warmup=warmup, num_classes=4, **kw)
            project = Path(tmp) / f"project{r}"
            project.mkdir()
            bench = workbench(project, root, a.size, a.batch, **kw)
            rows.append({"model_only": ceiling, "plain_loop": plain, "workbench": bench})
            print(f"round {r}: model-only {ceiling:.2f} img/s, plain loop {plain:.2f} img/s, "
                  f"workbench {bench:.2f} img/s", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {
        "config": {**vars(a), "out": str(a.out), "steps_measured": steps, "steps_before_the_clock": steps + 2 * WARMUP,
                   "torch_threads": torch.get_num_threads()},
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
