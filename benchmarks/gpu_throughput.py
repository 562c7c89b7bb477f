"""Training throughput on a GPU: `masklab train trainer=gpu` against the model-only ceiling, in one run.

For each setting (precision bf16-mixed / 32-true, channels_last on / off by default), two figures measured in
this run on the same model (UNet-resnet18), batch, image size, loss and optimizer:

- masklab train: the images/s its ThroughputMonitor logs in the last epoch (data loading, augmentation, the
  LightningModule's step, logging; `trainer=gpu` with that precision and memory format);
- model-only: forward + backward + optimizer step on batches already in GPU memory, with the same autocast,
  loss scaling (16-mixed) and memory format: what the GPU does when nothing else waits.

Their ratio says how much of the GPU the workbench uses; the settings' rows say what bf16 and channels-last buy.
A markdown table goes to stdout (and the figures as JSON to --out).

    python benchmarks/gpu_throughput.py                                # on a machine with a CUDA GPU
    python benchmarks/gpu_throughput.py --size 512 --batch 16 --workers 16 --precisions bf16-mixed 16-mixed 32-true
    python benchmarks/gpu_throughput.py --device cpu --size 32 --batch 4 --count 40    (a smoke run of the script)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from throughput import WARMUP, benchmark_data, model_only, workbench

SETTINGS_DEFAULT = ("bf16-mixed", "32-true")


def no_cuda_message() -> str:
    return ("gpu_throughput.py: no CUDA device here (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); run it on a machine with an NVIDIA GPU, "
            "or with --device cpu for a smoke run of the script (its figures say nothing about a GPU)")


def masklab_overrides(device: str, precision: str, channels_last: bool, workers: int) -> list[str]:
    """`masklab train` arguments for one setting: the GPU preset (the CPU one for a smoke run) with this precision
    and memory format, and the data loader's worker processes."""
    preset = "trainer=gpu" if device == "cuda" else "trainer=cpu"
    return [preset, f"trainer.precision={precision}", f"trainer.channels_last={str(channels_last).lower()}",
            f"data.num_workers={workers}"]


def on_device(batches: list[tuple[torch.Tensor, torch.Tensor]], device: str, channels_last: bool
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The model-only input: the batches in the device's memory, images in the memory format masklab would use."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [(i.to(device).contiguous(memory_format=fmt), m.to(device)) for i, m in batches]


def markdown_table(rows: list[dict]) -> str:
    """One row per setting: both throughputs, their ratio, and each against 32-true without channels-last."""
    base = next((r for r in rows if r["precision"] == "32-true" and not r["channels_last"]), None)
    head = ("| precision | channels_last | masklab train (img/s) | model-only (img/s) | train / model-only "
            "| model-only vs 32-true NCHW |\n|---|---|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        speedup = f"{r['model_only'] / base['model_only']:.2f}x" if base else "-"
        lines.append(f"| {r['precision']} | {'on' if r['channels_last'] else 'off'} | {r['workbench']:.1f} "
                     f"| {r['model_only']:.1f} | {r['workbench'] / r['model_only']:.2f} | {speedup} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--count", type=int, default=800, help="images in the dataset (80%% train: an epoch's steps)")
    p.add_argument("--workers", type=int, default=None,
                   help="data.num_workers of masklab train (default: 8 on cuda, 0 on cpu)")
    p.add_argument("--precisions", nargs="+", default=list(SETTINGS_DEFAULT))
    p.add_argument("--channels-last", nargs="+", choices=("on", "off"), default=["on", "off"])
    p.add_argument("--arch", default="Unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--rounds", type=int, default=1, help="repeat every setting; medians are reported")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print(no_cuda_message(), file=sys.stderr)
        raise SystemExit(2)
    workers = a.workers if a.workers is not None else (8 if a.device == "cuda" else 0)
    kw = {"arch": a.arch, "encoder": a.encoder, "lr": 1e-3, "num_classes": 4, "device": a.device}
    settings = [(prec, cl == "on") for prec in a.precisions for cl in a.channels_last]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data" / "bench"
        _, batches, steps = benchmark_data(root, a.count, a.size, a.batch)
        if steps < 2:
            p.error(f"--count {a.count} gives {steps + WARMUP} steps an epoch at --batch {a.batch}; expected more "
                    f"than {WARMUP + 1}")
        measured: dict[tuple[str, bool], list[dict]] = {s: [] for s in settings}
        for r in range(a.rounds):
            for precision, channels_last in settings:  # settings alternate within a round: drifts hit all alike
                if a.device == "cuda":
                    torch.cuda.empty_cache()
                ceiling = model_only(on_device(batches, a.device, channels_last), steps, precision=precision,
                                     channels_last=channels_last, **kw)
                project = Path(tmp) / f"project-{r}-{precision}-{channels_last}"
                project.mkdir()
                bench = workbench(project, root, a.size, a.batch, a.arch, a.encoder, kw["lr"],
                                  masklab_overrides(a.device, precision, channels_last, workers))
                measured[(precision, channels_last)].append({"workbench": bench, "model_only": ceiling})
                print(f"round {r} {precision} channels_last={channels_last}: masklab train {bench:.1f} img/s, "
                      f"model-only {ceiling:.1f} img/s", file=sys.stderr, flush=True)
    rows = [{"precision": prec, "channels_last": cl,
             **{k: statistics.median(m[k] for m in measured[(prec, cl)]) for k in ("workbench", "model_only")}}
            for prec, cl in settings]
    device_name = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"## Training throughput, {a.arch}-{a.encoder}, {a.size} px, batch {a.batch}, {steps} steps measured, "
          f"data.num_workers={workers}: {device_name}\n")
    print(markdown_table(rows))
    print(f"\n(torch {torch.__version__}; {a.rounds} round(s); {time.perf_counter() - started:.0f} s in all)")
    if a.out:
        a.out.write_text(json.dumps({"config": {**vars(a), "out": str(a.out), "workers": workers,
                                                "steps_measured": steps, "device_name": device_name},
                                     "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
