"""Team-service figures, each as a ratio against its one-machine baseline measured in the same run:

1. `Registry.register` and loading `models:/NAME/Production` against an MLflow server (PostgreSQL backend,
   artifacts proxied to an S3 bucket on moto) versus the local SQLite store (median of ``--repeats``).
2. `masklab sweep` with 1 versus 2 workers on one Optuna study in PostgreSQL: trials per hour of a grid of
   ``--trials`` debug=fast trainings (each worker gets half the cores).

    python benchmarks/team_services.py [--repeats 3] [--trials 6] [--only registry|sweep]

The servers are the tests' own (tests/services.py), on 127.0.0.1, started and stopped here. Run it on an idle
machine: two processes on 2 cores slow each other down.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' server starters (services.py)


def masklab(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run([sys.executable, "-m", "masklab.cli", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **env})
    if res.returncode != 0:
        raise RuntimeError(f"masklab {' '.join(args)}: {res.stderr[-3000:]}")
    return res.stdout


def trained_run(project: Path, tracking_uri: str, env: dict[str, str]) -> str:
    """A tiny UNet-resnet18 run logged to ``tracking_uri``; returns its run id."""
    from masklab.tracking.runs import client

    masklab(["train", "debug=fast", "trainer.max_epochs=1", "evaluate_after=false", "model=unet",
             "model.encoder=resnet18", f"logger.tracking_uri={tracking_uri}"], project, env)
    c = client(tracking_uri)
    exp = c.get_experiment_by_name("synthetic")
    return c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0].info.run_id


def registry_times(tracking_uri: str, run_id: str, repeats: int) -> dict[str, float]:
    """Median seconds of register (package + log + version) and of loading models:/bench/Production."""
    from masklab.tasks import package_signature
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.registry import Registry
    from masklab.tracking.runs import downloaded_checkpoint

    registry = Registry(tracking_uri)
    register = []
    with downloaded_checkpoint(tracking_uri, run_id) as ckpt:
        registry.register(run_id, "warmup", ckpt, package_signature)  # the first call pays lazy imports
        for _ in range(repeats):
            start = time.perf_counter()
            mv = registry.register(run_id, "bench", ckpt, package_signature)
            register.append(time.perf_counter() - start)
    registry.promote("bench", mv.version, "Production", None)
    load = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_model_ref("models:/bench/Production", tracking_uri)
        load.append(time.perf_counter() - start)
    return {"register_s": statistics.median(register), "load_s": statistics.median(load)}


def registry_figures(repeats: int, postgres, s3, home: Path) -> dict[str, float]:
    from conftest import stop
    from services import start_tracking_server

    server, proc = start_tracking_server(postgres, s3, home, "bench_registry")
    try:
        local_project, server_project = home / "local", home / "server"
        local_project.mkdir()
        server_project.mkdir()
        local_uri = f"sqlite:///{local_project}/experiments/mlflow.db"
        local = registry_times(local_uri, trained_run(local_project, local_uri, {}), repeats)
        remote = registry_times(server.url, trained_run(server_project, server.url, {}), repeats)
    finally:
        stop(proc)
    return {"register_local_s": local["register_s"], "register_server_s": remote["register_s"],
            "register_server_over_local": remote["register_s"] / local["register_s"],
            "load_local_s": local["load_s"], "load_server_s": remote["load_s"],
            "load_server_over_local": remote["load_s"] / local["load_s"]}


def sweep_figures(trials: int, postgres, home: Path) -> dict[str, float]:
    """Trials per hour of a ``trials``-point grid with 1 and with 2 workers, each on its own PostgreSQL study."""
    project = home / "sweep"
    (project / "conf" / "sweep").mkdir(parents=True)
    lrs = ", ".join(f"{0.001 * (i + 1):.3f}" for i in range(trials))
    (project / "conf" / "sweep" / "bench_grid.yaml").write_text(
        f"name: bench_grid\nsampler: grid\ngrid:\n  optimizer.lr: [{lrs}]\n"
        "overrides: [debug=fast, evaluate_after=false, trainer.max_epochs=2]\n")
    url = postgres.create_database("bench_sweep")
    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        masklab(["sweep", "sweep=bench_grid", f"study=w{workers}", f"workers={workers}"], project,
                {"MASKLAB_SWEEP_STORAGE": url})
        rates[workers] = trials / (time.perf_counter() - start) * 3600
    return {"sweep_trials_per_hour_1_worker": rates[1], "sweep_trials_per_hour_2_workers": rates[2],
            "sweep_2_over_1": rates[2] / rates[1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--only", choices=["registry", "sweep"], default=None)
    a = p.parse_args()
    from services import running_postgres, running_s3

    result: dict[str, object] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="masklab-bench-team-") as tmp, running_postgres() as postgres, \
            running_s3(Path(tmp)) as s3:
        home = Path(tmp)
        if a.only in (None, "registry"):
            result.update(registry_figures(a.repeats, postgres, s3, home))
        if a.only in (None, "sweep"):
            result.update(sweep_figures(a.trials, postgres, home))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
