"""How far the pipeline's metrics move when only the float summation order changes.

    python benchmarks/reproduction_spread.py [--variants threads1 aten ...] [--extra <rev>:<metrics.json>]

Each variant retrains and re-evaluates the committed pipeline (train + evaluate stages, as
`dvc repro` runs them) in a fresh `git clone` of HEAD, with the data this checkout holds and one
environment change that another CPU would make for it: fewer threads, torch's non-vectorised
kernels, older oneDNN kernels. With the committed metrics (and any `--extra` metrics from another
machine, as ``<rev>:<path>``) it prints, per metric family of ``masklab.pipeline.check``, the
largest standard deviation across the runs and the bound 3 * sqrt(2) * sd rounded up to 0.01,
which is how ``ACROSS_PLATFORMS`` was set. About one training per variant: minutes each at idle.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VARIANTS = {
    "threads1": {"OMP_NUM_THREADS": "1"},
    "threads3": {"OMP_NUM_THREADS": "3"},
    "aten": {"ATEN_CPU_CAPABILITY": "default"},
    "aten_threads1": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
    "onednn_avx": {"ONEDNN_MAX_CPU_ISA": "AVX"},
}
FAMILIES = ("summary", "per_class", "boundary", "boundary_per_class")


def run_variant(name: str, env: dict[str, str], data: Path, work: Path) -> dict:
    """Train + evaluate HEAD in a clone with ``env`` set; the evaluate stage's metrics."""
    clone = work / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    shutil.copytree(data, clone / data.relative_to(REPO))
    full = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(clone / "src"),
                MLFLOW_DISABLE_TELEMETRY="true", PYTHONWARNINGS="ignore", **env)
    root = f"data.root={data.relative_to(REPO)}"
    for stage in ("train", "evaluate"):
        done = subprocess.run([str(BIN / "masklab"), "pipeline", stage, root], cwd=clone, env=full,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{name}: {stage} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads((clone / "pipeline/evaluate/metrics.json").read_text())


def committed(spec: str) -> dict:
    return json.loads(subprocess.run(["git", "show", spec], cwd=REPO, capture_output=True, text=True,
                                     check=True).stdout)


def bounds(runs: dict[str, dict], split: str = "val") -> dict[str, tuple[float, str, float]]:
    """{family: (largest sd, its metric, bound)} over the runs' ``split`` metrics."""
    from masklab.pipeline.check import Tolerance

    probe = Tolerance(1, 2, 3, 4)  # tells the family of a metric name by its bound
    values = [m[split] for m in runs.values()]
    out: dict[str, tuple[float, str, float]] = {}
    for name in values[0]:
        xs = [v[name] for v in values if v.get(name) is not None]
        if len(xs) < 2:
            continue
        family = FAMILIES[int(probe.allowed(f"{split}.{name}")) - 1]
        sd = statistics.stdev(xs)
        if family not in out or sd > out[family][0]:
            out[family] = (sd, name, math.ceil(round(3 * math.sqrt(2) * sd * 100, 9)) / 100)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--extra", nargs="*", default=[], help="<rev>:<path> metrics made elsewhere")
    parser.add_argument("--data", default="data/synthetic", help="the pipeline's dataset in this checkout")
    args = parser.parse_args()

    runs = {"committed": committed("HEAD:pipeline/evaluate/metrics.json")}
    runs.update({spec: committed(spec) for spec in args.extra})
    with tempfile.TemporaryDirectory(prefix="masklab-spread-") as tmp:
        for name in args.variants:
            runs[name] = run_variant(name, VARIANTS[name], REPO / args.data, Path(tmp))
            print(f"{name}: val mIoU {runs[name]['val']['mIoU']:.6f}", flush=True)
    distinct: dict[str, str] = {}  # metrics -> the first run that gave them
    for name, metrics in runs.items():
        distinct.setdefault(json.dumps(metrics, sort_keys=True), name)
    print(f"\n{len(runs)} runs, {len(distinct)} distinct (identical runs are counted once)")
    unique = {name: runs[name] for name in distinct.values()}
    for name, m in unique.items():
        print(f"  {name:12s} mIoU {m['val']['mIoU']:.6f}  mDice {m['val']['mDice']:.6f}")
    pairs = itertools.combinations([m["val"]["mIoU"] for m in unique.values()], 2)
    print(f"largest mIoU difference between two runs: {max(abs(a - b) for a, b in pairs):.6f}")
    for family, (sd, name, bound) in bounds(unique).items():
        print(f"  {family:20s} largest sd {sd:.4f} ({name})  3*sqrt(2)*sd -> bound {bound:g}")


if __name__ == "__main__":
    main()
