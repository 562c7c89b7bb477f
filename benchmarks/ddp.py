"""DDP on CPU: `masklab train trainer=ddp` (2 gloo processes x batch b) vs one process (batch 2b), same data.

Both train the same experiment in this one run, alternating rounds so machine noise hits both alike. Reported:
training throughput in images/s (what `masklab train` logs as train/images_per_s in its last epoch: all ranks
together under DDP), the wall time of each command, their ratios (DDP / one process), and how far apart the
validation metrics of every epoch are (the loss is a per-pixel mean: ce; SGD, whose updates are linear in the
gradients). For scale, the same one-process training again with one thread (OMP_NUM_THREADS=1; Lightning gives each
DDP process cores / processes threads): two one-process runs that differ only in float summation order drift apart
too, as far as the network's float noise grows (a deep UNet on small images: far).

    python benchmarks/ddp.py [--size 96] [--batch 4] [--count 160] [--epochs 2] [--rounds 2] [--out ddp.json]
    python benchmarks/ddp.py --shallow     # a UNet 3 stages deep: float noise stays small, metrics comparable
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

SHALLOW = ["+model.encoder_depth=3", "+model.decoder_channels=[32,16,8]"]


def train(project: Path, overrides: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, list[float]]]:
    """Run `masklab train` in ``project`` (``env`` added to the environment): (last epoch's train/images_per_s, wall
    seconds, val metric histories)."""
    from mlflow.tracking import MlflowClient

    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONWARNINGS="ignore", **env)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "masklab.cli", "train", *overrides], cwd=project, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    client = MlflowClient(f"sqlite:///{project}/experiments/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])[0]
    history = {key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
               for key in run.data.metrics if key.startswith("val/")}
    return client.get_metric_history(run.info.run_id, "train/images_per_s")[-1].value, wall, history


def largest_difference(a: dict[str, list[float]], b: dict[str, list[float]]) -> tuple[float, str]:
    """The largest |a - b| over every epoch of every metric both have, and that metric's name."""
    return max((max(abs(x - y) for x, y in zip(a[k], b[k])), k) for k in a.keys() & b.keys())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=4, help="per process under DDP; one process gets twice as many")
    p.add_argument("--count", type=int, default=160, help="images in the dataset (80%% train)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shallow", action="store_true",
                   help="UNet with 3 encoder stages (tests/test_ddp.py's): float noise does not grow into the metrics")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = p.parse_args()
    common = [f"data.image_size={a.size}", f"data.synth.count={a.count}", f"trainer.max_epochs={a.epochs}",
              "loss=ce", "optimizer=sgd", "evaluate_after=false", "trainer.enable_progress_bar=false",
              *(SHALLOW if a.shallow else [])]
    one = [f"data.batch_size={2 * a.batch}", *common]
    ddp = ["trainer=ddp", f"data.batch_size={a.batch}", *common,
           *(["trainer.strategy.find_unused_parameters=true"] if a.shallow else [])]
    runs = {"ddp": (ddp, {}), "one": (one, {}),
            "one_1thread": (one, {"OMP_NUM_THREADS": "1"})}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            row: dict[str, object] = {}
            histories = {}
            for name, (overrides, env) in runs.items():
                project = Path(tmp) / f"{name}{r}"
                project.mkdir()
                row[f"{name}_images_per_s"], row[f"{name}_wall_s"], histories[name] = train(project, overrides, env)
            row["images_per_s_ratio"] = row["ddp_images_per_s"] / row["one_images_per_s"]
            row["images_per_s_ratio_1thread"] = row["ddp_images_per_s"] / row["one_1thread_images_per_s"]
            row["wall_ratio"] = row["ddp_wall_s"] / row["one_wall_s"]
            row["val_difference_ddp"], row["at_ddp"] = largest_difference(histories["ddp"], histories["one"])
            row["val_difference_threads"], row["at_threads"] = largest_difference(histories["one_1thread"],
                                                                                  histories["one"])
            rows.append(row)
            print(f"round {r}: DDP 2x{a.batch} {row['ddp_images_per_s']:.2f} img/s ({row['ddp_wall_s']:.0f} s), "
                  f"one process x{2 * a.batch} {row['one_images_per_s']:.2f} img/s ({row['one_wall_s']:.0f} s), "
                  f"ratio {row['images_per_s_ratio']:.2f}; one process, 1 thread {row['one_1thread_images_per_s']:.2f}"
                  f" img/s. Largest val metric difference from one process: DDP {row['val_difference_ddp']:.2e} "
                  f"({row['at_ddp']}), 1 thread {row['val_difference_threads']:.2e} ({row['at_threads']})", flush=True)
    summary = {k: statistics.median(row[k] for row in rows) for k in rows[0] if not k.startswith("at")}
    print(f"median: DDP / one process throughput {summary['images_per_s_ratio']:.2f} (/ one process with 1 thread "
          f"{summary['images_per_s_ratio_1thread']:.2f}), wall time {summary['wall_ratio']:.2f}; largest val metric "
          f"difference from one process: DDP {summary['val_difference_ddp']:.2e}, one process with 1 thread "
          f"{summary['val_difference_threads']:.2e}")
    if a.out:
        a.out.write_text(json.dumps({"args": vars(a) | {"out": str(a.out)}, "rounds": rows, "median": summary},
                                    indent=2))


if __name__ == "__main__":
    main()
