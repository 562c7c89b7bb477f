"""MLflow against a real server process, and `masklab ui` serving the local store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import FAST, run_masklab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    # Own process group: the server's workers are stopped with it.
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    proc = start([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{server_dir}/mlflow.db",
                  "--artifacts-destination", str(server_dir / "artifacts"), "--workers", "1"], server_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health")
        yield url, server_dir
    finally:
        stop(proc)


def test_train_logs_to_server_named_by_env(project, mlflow_server):
    url, server_dir = mlflow_server
    res = run_masklab(["train", *FAST, "trainer.max_epochs=1"], project, env={"MLFLOW_TRACKING_URI": url})
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (project / "experiments" / "mlflow.db").exists()  # nothing went to the local store
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("synthetic")
    (run,) = client.search_runs([exp.experiment_id])
    assert "val/mIoU" in run.data.metrics and "eval/val/mIoU" in run.data.metrics
    assert {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")} >= {"checkpoints/best.ckpt"}
    assert list((server_dir / "artifacts").rglob("best.ckpt"))  # stored by the server, not the client


def test_ui_serves_local_store(project):
    port = free_port()
    proc = start([sys.executable, "-m", "masklab.cli", "ui", f"port={port}"], project)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert b"MLflow" in resp.read() or resp.status == 200
    finally:
        stop(proc)
    assert (project / "experiments" / "mlflow.db").exists()
