"""RunLog.download: a missing artifact is None; a store that cannot be listed or read is an error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from masklab.errors import UserError
from masklab.tracking.runs import RunLog, start_run


def test_missing_is_none_present_is_downloaded_and_a_broken_store_is_named(tmp_path: Path, seed_store):
    seed_store(tmp_path)
    uri = f"sqlite:///{tmp_path}/experiments/mlflow.db"
    run = start_run(uri, str(tmp_path / "artifacts"), "runs", "one", {})
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "val_per_sample.parquet").write_bytes(b"table")
    run.files([tmp_path / "evaluation" / "val_per_sample.parquet"], "evaluation")
    got = run.download("evaluation/val_per_sample.parquet", tmp_path / "down")
    assert got is not None and got.read_bytes() == b"table"
    assert run.download("evaluation/test_per_sample.parquet", tmp_path / "down") is None
    assert run.download("report", tmp_path / "down") is None

    # An artifact store no client can reach (here: a scheme MLflow has no repository for) is not "no artifact".
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment("elsewhere", artifact_location="nosuchstore://bucket/runs")
    broken = RunLog(uri, client.create_run(experiment).info.run_id)
    with pytest.raises(UserError, match=rf"MLflow run {broken.run_id} in {uri}: cannot list its artifacts"):
        broken.download("evaluation/val_per_sample.parquet", tmp_path / "down")
