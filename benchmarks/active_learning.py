"""Active-learning simulations on real datasets: does any strategy reach random's final test mIoU with fewer labels?

    python benchmarks/active_learning.py [--datasets kvasir_seg dsb2018_semantic] [--size kvasir_seg=64 ...]
        [--strategies random entropy hybrid] [--seeds 0 1 2] [--seed-size 20] [--budget 20] [--rounds 4]
        [--steps 250] [--val-checks 3] [--workdir DIR] [--out FILE.json] [-- train overrides ...]

Per dataset: import it from ../shared (``dsb2018_semantic``: DSB 2018's nuclei as one class against background,
as in benchmarks/label_errors.py), then run ``masklab al simulate`` through the real CLI with the dataset's UNet
preset at ``--size`` px, the checkpoint picked on val, every round scored on test at the model's resolution.
The default training is sized for 2 CPU cores: a UNet-resnet18 cut to 4 encoder stages (the 512-channel stage
costs half of a step at these sizes and adds nothing at 64-96 px), light augmentation, 250 steps of 8 images. A
simulation interrupted (or a benchmark run again) resumes from its folder in ``--workdir``. The label-cost table,
paired gains and the curves' PNGs are in the simulation's folder; the JSON gets the tables and the wall time.
Run it alone on an idle machine: two trainings at once on 2 cores are each several times slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from label_errors import PRESETS, import_source, per_dataset
from scratch import REPO, enter_scratch_project


def simulate(name: str, a: argparse.Namespace) -> dict:
    folder = Path("runs") / name
    if not (Path("data") / name).is_dir():
        import_source(name)
    if (folder / "simulation.json").is_file():
        args = [f"resume={folder.resolve()}"]
    else:
        args = [f"experiment={PRESETS[name]}", f"data.name={name}", f"data.image_size={per_dataset(a.size, name)}",
                "data.batch_size=8", "evaluation.resolution=model", "trainer.enable_progress_bar=false",
                f"experiment_name=bench-al-{name}", f"al.strategies=[{','.join(a.strategies)}]",
                f"al.seeds=[{','.join(map(str, a.seeds))}]", f"al.seed_size={a.seed_size}", f"al.budget={a.budget}",
                f"al.rounds={a.rounds}", f"al.steps={a.steps}", f"al.val_checks={a.val_checks}",
                f"hydra.run.dir={folder.resolve()}", *a.overrides]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "masklab.cli", "al", "simulate", *args], text=True,
                          capture_output=True)
    wall = time.perf_counter() - started
    print(done.stdout[-4000:], done.stderr[-3000:] if done.returncode else "", flush=True)
    if done.returncode:
        raise SystemExit(f"{name}: al simulate failed (exit {done.returncode})")
    return {"wall_s": round(wall, 1), "folder": str(folder.resolve()), "summary": done.stdout.strip()[-3000:],
            "label_cost": pd.read_csv(folder / "al_label_cost.csv").round(4).to_dict("records"),
            "gains": pd.read_csv(folder / "al_gains.csv").round(4).to_dict("records")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["kvasir_seg", "dsb2018_semantic"], choices=list(PRESETS))
    p.add_argument("--size", nargs="+", default=["kvasir_seg=64", "dsb2018_semantic=96", "membrane=96"])
    p.add_argument("--strategies", nargs="+", default=["random", "entropy", "hybrid"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--seed-size", type=int, default=20)
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--val-checks", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-active-learning")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("overrides", nargs="*", default=["augment=light", "+model.encoder_depth=4",
                                                     "+model.decoder_channels=[128,64,32,16]"])
    a = p.parse_args()
    enter_scratch_project(a.workdir.resolve())
    results = {"args": {k: str(v) for k, v in vars(a).items()}, "datasets": {}}
    for name in a.datasets:
        results["datasets"][name] = simulate(name, a)
        print(json.dumps(results["datasets"][name]["label_cost"], indent=1), flush=True)
    if a.out:
        a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
