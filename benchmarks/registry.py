"""Registry figures: time to register a UNet-resnet18, time to load it back, prediction throughput.

    python benchmarks/registry.py [--size 256] [--images 16]

Trains a tiny debug run first (the checkpoint's weights are what matters, not their quality),
then measures in-process: `Registry.register` (package + MLflow log + registry version),
`load_model_ref("models:/N/Production")` and `predict_image` at size x size on CPU. Also times
the `masklab register` command end to end (process start and imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    res = subprocess.run([sys.executable, "-m", "masklab.cli", *cmd], cwd=cwd, capture_output=True, text=True,
                         env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return res.stdout


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=16)
    a = p.parse_args()
    from masklab.inference import predict_image
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
        registry = Registry(uri)
        times = []
        with downloaded_checkpoint(uri, run_id) as ckpt:
            registry.register(run_id, "warmup", ckpt)  # first call pays MLflow's lazy imports
            for _ in range(3):
                start = time.perf_counter()
                mv = registry.register(run_id, "bench", ckpt)
                times.append(time.perf_counter() - start)
        registry.promote("bench", mv.version, "Production", None)
        start = time.perf_counter()
        out = run(["register", f"run_id={run_id}", "registry.name=bench_cli"], project)
        cli_time = time.perf_counter() - start
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
        "register_cli_end_to_end_s": cli_time,
        "register_cli_reported": out.strip().splitlines()[0],
        "load_models_uri_s": sorted(load_times)[1],
        f"predict_img_per_s_{a.size}px": throughput,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
