"""DVC experiments on the pipeline: a queued `-S` point run by DVC's queue worker, in its own copy of the project
(a module apart from test_dvc_pipeline.py so the two run on separate workers)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from dvc_project import committed_project, dvc, git

# DVC's experiment queue runs a background worker that runs the point's whole pipeline (about 40 s on a quiet
# 2-core machine, nearly all of it masklab's stage processes starting). One point, not a grid: expanding
# `-S a=1,2` into points is DVC's; what masklab must get right (edited params, the run in the project's store,
# `exp apply`) is the same for every point, and each further point costs another 35 s of the suite.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mlflow_template) -> Path:
    """The committed project, not reproduced: each queued point runs the whole pipeline from its own params."""
    return committed_project(tmp_path_factory, mlflow_template)


def test_queued_point_runs_logs_to_the_main_store_and_applies(repo):
    """`dvc exp run --queue -S`, run by `dvc queue start`: the point trains from the edited params (comments
    kept), `dvc exp show` lists its params and metrics, its MLflow run lands in the project's store, and
    `dvc exp apply` brings its params and outputs into the workspace."""
    # fpn_tiny: another of the project's own small models (dvc_project.TINY_MODELS) than params.yaml's unet_tiny
    dvc("exp", "run", "--queue", "-S", "model=fpn_tiny", "-S", "optimizer.lr=0.003", cwd=repo)
    dvc("queue", "start", cwd=repo)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            status = dvc("queue", "status", cwd=repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        dvc("queue", "stop", "--kill", cwd=repo, check=False)  # no worker outlives the test
    assert status.count("Success") == 1, status
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    exps = [(e.get("name"), r["data"]) for row in rows for e in (row.get("experiments") or []) for r in e["revs"]]
    points = {d["params"]["params.yaml"]["data"]["optimizer"]["lr"]: name for name, d in exps}
    assert 0.003 in points, points
    assert all(d["params"]["params.yaml"]["data"]["model"] == "fpn_tiny"
               and d["metrics"]["pipeline/evaluate/metrics.json"]["data"]["val"]["mIoU"] is not None for _, d in exps)
    # Queued experiments run in .dvc/tmp/exps/<tmp>; their MLflow runs still land in the project's store.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/experiments/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    queued = [r for r in runs if r.data.params.get("optimizer.lr") == "0.003"]
    assert len(queued) == 1 and all(r.data.tags.get("masklab.dvc_experiment") for r in queued)
    assert all("eval/val/mIoU" in r.data.metrics for r in queued)

    dvc("exp", "apply", points[0.003], cwd=repo)
    params = (repo / "params.yaml").read_text()
    assert yaml.safe_load(params)["model"] == "fpn_tiny" and params.startswith("# ")  # edited in place, comments kept
    config = yaml.safe_load((repo / "pipeline/train/config.yaml").read_text())
    assert config["model"]["arch"] == "FPN" and config["optimizer"]["lr"] == 0.003
    git("checkout", "-q", "--", ".", cwd=repo)
    dvc("checkout", "--force", cwd=repo)
