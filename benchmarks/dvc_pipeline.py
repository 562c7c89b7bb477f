"""What DVC adds to a pipeline run: `dvc repro` against the same four stage commands run by hand.

    python benchmarks/dvc_pipeline.py [--count 16 --size 32 --epochs 2]

Both runs start from a fresh `git clone` of this checkout's committed state with the same small
params.yaml; the baseline runs `masklab pipeline prepare|train|evaluate|report` in order, the other
`dvc repro` (hashing deps and outs, caching, writing dvc.lock). Also times a second, no-op
`dvc repro`. Needs the committed dvc.yaml, params.yaml and .dvc/config.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
           MLFLOW_DISABLE_TELEMETRY="true", PYTHONWARNINGS="ignore")


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - start


def clone(dest: Path, count: int, size: int, epochs: int) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"] = {"image_size": size, "batch_size": 4, "synth": {"count": count, "seed": 0}}
    params["trainer"] = {"max_epochs": epochs}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        by_hand = clone(Path(tmp) / "by_hand", a.count, a.size, a.epochs)
        direct = sum(timed([str(BIN / "masklab"), "pipeline", stage, "data.root=data/synthetic"], by_hand)
                     for stage in ("prepare", "train", "evaluate"))
        direct += timed([str(BIN / "masklab"), "pipeline", "report"], by_hand)
        with_dvc = clone(Path(tmp) / "with_dvc", a.count, a.size, a.epochs)
        repro = timed([str(BIN / "dvc"), "repro"], with_dvc)
        noop = timed([str(BIN / "dvc"), "repro"], with_dvc)
    print(f"pipeline of {a.count} images at {a.size} px, {a.epochs} epochs")
    print(f"four stage commands by hand: {direct:6.1f} s")
    print(f"dvc repro:                   {repro:6.1f} s  ({repro / direct:.2f}x by hand)")
    print(f"dvc repro again (no-op):     {noop:6.2f} s  ({noop / direct:.3f}x by hand)")


if __name__ == "__main__":
    main()
