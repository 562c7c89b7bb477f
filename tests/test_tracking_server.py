"""`masklab ui` serving the local store. (The whole model path against a real tracking server, named only by
MLFLOW_TRACKING_URI, is tests/test_team_tracking.py's, on PostgreSQL and S3.)"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from conftest import free_port, start, stop, wait_http


def process_group(proc_dir: Path) -> int | None:
    """The process group id of the process ``/proc/<pid>`` (None once it has gone)."""
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_ui_serves_local_store(project, seed_store):
    from mlflow.tracking import MlflowClient

    # An experiment only the project's store has: the UI must show it, so it serves that store.
    store = seed_store(project)  # migrated already: neither this client nor the server migrates it
    experiment_id = MlflowClient(f"sqlite:///{store}").create_experiment("only-in-this-project")
    port = free_port()
    proc = start([sys.executable, "-m", "masklab.cli", "ui", f"port={port}"], project)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200
            assert b"<title>MLflow</title>" in resp.read()  # the UI's page, not MLflow's "index.html not found"
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=only-in-this-project"
        with urllib.request.urlopen(api, timeout=90) as resp:  # the first request opens the store: slow here
            assert json.load(resp)["experiment"]["experiment_id"] == experiment_id
        # masklab ui, mlflow ui and one uvicorn worker (workers=1); no MLflow job runner and huey consumers
        group = [p for p in Path("/proc").iterdir() if p.name.isdigit() and process_group(p) == proc.pid]
        assert len(group) == 3, [(p / "cmdline").read_bytes()[:120] for p in group]
    finally:
        stop(proc)
