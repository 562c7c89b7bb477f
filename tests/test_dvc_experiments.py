"""DVC experiments on the pipeline: `dvc exp run -S` and a queued grid, in their own copy of the project
(a module apart from test_dvc_pipeline.py so the two run on separate workers)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from dvc_project import dvc, git, ran_stages, reproduced_project


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return reproduced_project(tmp_path_factory)


def test_exp_run_set_param(repo):
    done = dvc("exp", "run", "-S", "model=fpn", "-S", "optimizer.lr=0.0003", cwd=repo)
    assert ran_stages(done.stdout) == ["train", "evaluate", "report"]
    params = (repo / "params.yaml").read_text()
    assert yaml.safe_load(params)["model"] == "fpn" and params.startswith("# ")  # edited in place, comments kept
    config = yaml.safe_load((repo / "pipeline/train/config.yaml").read_text())
    assert config["model"]["arch"] == "FPN" and config["optimizer"]["lr"] == 0.0003
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    exps = [e for row in rows for e in (row.get("experiments") or [])]
    values = [r["data"] for e in exps for r in e["revs"]]
    assert any(v["params"]["params.yaml"]["data"]["model"] == "fpn"
               and v["metrics"]["pipeline/evaluate/metrics.json"]["data"]["val"]["mIoU"] is not None for v in values)
    git("checkout", "-q", "--", ".", cwd=repo)
    dvc("checkout", "--force", cwd=repo)


def test_queued_grid_runs_and_logs_to_the_main_store(repo):
    dvc("exp", "run", "--queue", "-S", "optimizer.lr=0.001,0.003", cwd=repo)
    dvc("queue", "start", cwd=repo)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            status = dvc("queue", "status", cwd=repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(3)
    finally:
        dvc("queue", "stop", "--kill", cwd=repo, check=False)  # no worker outlives the test
    assert status.count("Success") == 2, status
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    lrs = {r["data"]["params"]["params.yaml"]["data"]["optimizer"]["lr"]
           for row in rows for e in (row.get("experiments") or []) for r in e["revs"]}
    assert {0.001, 0.003} <= lrs
    # Queued experiments run in .dvc/tmp/exps/<tmp>; their MLflow runs still land in the project's store.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/experiments/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    queued = [r for r in runs if r.data.params.get("optimizer.lr") in ("0.001", "0.003")]
    assert len(queued) == 2 and all(r.data.tags.get("masklab.dvc_experiment") for r in queued)
    assert all("eval/val/mIoU" in r.data.metrics for r in queued)
