"""Registry figures: time to register a UNet-resnet18, time to load it back, prediction throughput.

    python benchmarks/registry.py [--size 256] [--images 16]

Trains a tiny debug run first (the checkpoint's weights are what matters, not their quality),
then measures in-process: `Registry.register` (package + MLflow log + registry version),
`load_model_ref("models:/N/Production")` and `predict_image` at size x size on CPU. Also times
the `masklab register` command end to end (process start and imports included): one warm-up run
(the OS file cache), then the median of ``--cli-runs`` timed runs, and one more run under
``python -X importtime`` to say which imports the command pays for (cumulative seconds).

    python benchmarks/registry.py --cli-only     # just the `masklab register` figures
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

import numpy as np

# Top-level imports worth naming in the breakdown (cumulative time, children included).
WATCHED_IMPORTS = ("torch", "mlflow", "mlflow.pyfunc", "mlflow.store.tracking.sqlalchemy_store", "hydra",
                   "omegaconf", "numpy", "pandas", "cv2", "safetensors.numpy", "pytorch_lightning",
                   "segmentation_models_pytorch", "masklab.inference", "masklab.tracking.packaging")


def run(cmd: list[str], cwd: Path, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    res = subprocess.run([sys.executable, *python_flags, "-m", "masklab.cli", *cmd], cwd=cwd, capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return res


def import_seconds(importtime_log: str) -> dict[str, float]:
    """{module: cumulative import seconds} for WATCHED_IMPORTS, from ``python -X importtime`` output."""
    found: dict[str, float] = {}
    for line in importtime_log.splitlines():
        if not line.startswith("import time:"):
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if name in WATCHED_IMPORTS and cumulative.isdigit():
            found[name] = max(found.get(name, 0.0), int(cumulative) / 1e6)
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def time_register_cli(project: Path, run_id: str, runs: int) -> dict[str, object]:
    """`masklab register` end to end: median of ``runs`` after a warm-up, and an import breakdown."""
    run(["register", f"run_id={run_id}", "registry.name=bench_cli_warmup"], project)
    times, reported = [], []
    for i in range(runs):
        start = time.perf_counter()
        out = run(["register", f"run_id={run_id}", f"registry.name=bench_cli_{i}"], project).stdout
        times.append(time.perf_counter() - start)
        reported.append(out.strip().splitlines()[0])
    traced = run(["register", f"run_id={run_id}", "registry.name=bench_cli_traced"], project, ("-X", "importtime"))
    imports = import_seconds(traced.stderr)
    return {"register_cli_end_to_end_s": statistics.median(times), "register_cli_runs_s": [round(t, 2) for t in times],
            "register_cli_reported": reported, "register_cli_imports_s": imports,
            "lightning_imported": "pytorch_lightning" in imports,
            "smp_imported": "segmentation_models_pytorch" in imports}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--cli-runs", type=int, default=3)
    p.add_argument("--cli-only", action="store_true")
    a = p.parse_args()
    from masklab.inference import predict_image
    from masklab.tasks import package_signature
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.registry import Registry
    from masklab.tracking.runs import client, downloaded_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        run(["train", "debug=fast", "trainer.max_epochs=1", "evaluate_after=false", "model=unet",
             "model.encoder=resnet18", f"data.image_size={a.size}"], project)
        uri = f"sqlite:///{project}/experiments/mlflow.db"
        c = client(uri)
        exp = c.get_experiment_by_name("synthetic")
        run_id = c.search_runs([exp.experiment_id])[0].info.run_id
        cli = time_register_cli(project, run_id, a.cli_runs)
        if a.cli_only:
            print(json.dumps(cli, indent=2))
            return
        registry = Registry(uri)
        times = []
        with downloaded_checkpoint(uri, run_id) as ckpt:
            registry.register(run_id, "warmup", ckpt, package_signature)  # first call pays MLflow's lazy imports
            for _ in range(3):
                start = time.perf_counter()
                mv = registry.register(run_id, "bench", ckpt, package_signature)
                times.append(time.perf_counter() - start)
        registry.promote("bench", mv.version, "Production", None)
        load_times = []
        for _ in range(3):
            start = time.perf_counter()
            package = load_model_ref("models:/bench/Production", uri)
            load_times.append(time.perf_counter() - start)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (a.size, a.size, 3), dtype=np.uint8) for _ in range(a.images)]
        predict_image(package.model, images[0], package.input_rule)  # warm-up
        start = time.perf_counter()
        for im in images:
            predict_image(package.model, im, package.input_rule)
        throughput = len(images) / (time.perf_counter() - start)
    result = {
        "register_in_process_s": sorted(times)[1],
        **cli,
        "load_models_uri_s": sorted(load_times)[1],
        f"predict_img_per_s_{a.size}px": throughput,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
