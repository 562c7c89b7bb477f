"""The same commands timed on two source trees of masklab, alternating, in one run: is a change slower?

    python benchmarks/compare_trees.py --baseline <other checkout>/src [--candidate src] [--rounds 3]

Each tree trains one small run of its own (`masklab train debug=fast`, not timed) in its own project folder; then,
per round and tree in turn, each command runs as a user runs it (a new process: imports included), wall clock:

- ``register``: `masklab register run_id=<its run>` (package the tracked best model, log it, new version);
- ``predict``: `masklab predict` of the run's best checkpoint on a folder of images;
- ``evaluate``: `masklab evaluate ckpt_path=<best checkpoint>` on the val split (metrics, tables, plots, record).

Reports the median seconds per command and tree and the ratio candidate / baseline (above 1: the candidate is
slower). Run it on an idle machine: two processes at once on 2 cores slow each other several times.
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

ROOT = Path(__file__).resolve().parents[1]


def masklab(src: Path, project: Path, args: list[str]) -> float:
    """Run `masklab <args>` with the package from ``src`` in ``project``; its wall-clock seconds."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(src))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "masklab.cli", *args], cwd=project, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"masklab {' '.join(args)} with {src}: {done.stderr[-3000:]}")
    return seconds


def trained(src: Path, project: Path) -> tuple[str, Path]:
    """(run id, best checkpoint) of one `masklab train debug=fast` in ``project`` with the code of ``src``."""
    project.mkdir(parents=True)
    masklab(src, project, ["train", "debug=fast", "evaluate_after=false"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/experiments/mlflow.db")
    exp = client.get_experiment_by_name("synthetic")
    run = client.search_runs([exp.experiment_id])[0]
    best = sorted((project / "experiments" / "runs").rglob("best*.ckpt"))[-1]
    return run.info.run_id, best


def commands(run_id: str, best: Path, project: Path) -> dict[str, list[str]]:
    images = project / "data" / "synthetic" / "images"
    return {
        "register": ["register", f"run_id={run_id}", "registry.name=bench"],
        "predict": ["predict", f"model={best}", f"input={images}", f"output={project / 'predicted'}",
                    "overwrite=true"],
        "evaluate": ["evaluate", f"ckpt_path={best}", "split=val"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="the src/ folder of the tree to compare with")
    p.add_argument("--candidate", type=Path, default=ROOT / "src")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = p.parse_args()
    trees = {"baseline": a.baseline.resolve(), "candidate": a.candidate.resolve()}
    times: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        setups = {t: trained(src, Path(tmp) / t) for t, src in trees.items()}
        for r in range(a.rounds):
            for tree, src in trees.items():
                run_id, best = setups[tree]
                project = Path(tmp) / tree
                for name, args in commands(run_id, best, project).items():
                    seconds = masklab(src, project, args)
                    times[tree].setdefault(name, []).append(seconds)
                    print(f"round {r} {tree:9s} {name:8s} {seconds:6.2f} s", flush=True)
    median = {t: {n: statistics.median(v) for n, v in by.items()} for t, by in times.items()}
    ratios = {n: median["candidate"][n] / median["baseline"][n] for n in median["baseline"]}
    result = {"trees": {t: str(s) for t, s in trees.items()}, "rounds": a.rounds, "seconds": times,
              "median_s": median, "candidate_over_baseline": ratios}
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
