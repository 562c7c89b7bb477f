"""MLflow against a real server process, and `masklab ui` serving the local store."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import FAST, free_port, run_masklab, start, stop, wait_http


@pytest.mark.team  # a tracking server: with the team tests (tests/test_team_tracking.py has PostgreSQL + S3)
def test_train_register_promote_predict_on_a_server_named_by_env(project, mlflow_server, tmp_path, capsys):
    """The whole model path against a real server: `masklab train` (registering) and `masklab predict` from
    shells that name the server only through MLFLOW_TRACKING_URI; promote and list in this process."""
    from mlflow.tracking import MlflowClient
    from test_registry import NAME, command, command_ok, write_images

    url, server_dir = mlflow_server
    env = {"MLFLOW_TRACKING_URI": url}
    res = run_masklab(["train", *FAST, "trainer.max_epochs=1", "registry.register=true", f"registry.name={NAME}"],
                      project, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"as model '{NAME}'" in res.stdout
    assert not (project / "experiments" / "mlflow.db").exists()  # nothing went to the local store
    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert "val/mIoU" in run.data.metrics and "eval/val/mIoU" in run.data.metrics
    assert {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")} >= {"checkpoints/best.safetensors"}
    assert list((server_dir / "artifacts").rglob("best.safetensors"))  # stored by the server, not the client

    tracking = f"logger.tracking_uri={url}"
    command(project, "promote", f"name={NAME}", "version=1", "stage=Production", tracking)
    assert client.get_model_version(NAME, "1").current_stage == "Production"
    assert "Production" in command_ok(project, capsys, "models list", tracking)
    images = tmp_path / "in"
    write_images(images, [(40, 60)])
    res = run_masklab(["predict", f"model=models:/{NAME}@production", f"input={images}", f"output={tmp_path / 'o'}"],
                      project, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "o" / "img0.png").is_file()


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
