"""The team's tracking server: MLflow on PostgreSQL with artifacts proxied to S3, with and without MLflow's
basic-auth app. Real servers on 127.0.0.1 (tests/services.py)."""

from __future__ import annotations

import pytest
from test_registry import NAME, command, command_ok, write_images

from conftest import FAST, exits_as_user_error, run_masklab, stop
from services import postgres, s3_server, start_tracking_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.team


@pytest.fixture(scope="module")
def team_server(postgres, s3_server, tmp_path_factory):  # noqa: F811
    server, proc = start_tracking_server(postgres, s3_server, tmp_path_factory.mktemp("mlflow"), "mlflow")
    try:
        yield server, s3_server
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def auth_server(postgres, s3_server, tmp_path_factory):  # noqa: F811
    server, proc = start_tracking_server(postgres, s3_server, tmp_path_factory.mktemp("mlflow-auth"), "guarded",
                                         admin_password="admin-secret-1")
    try:
        yield server, s3_server
    finally:
        stop(proc)


def test_train_register_promote_predict_on_postgres_and_s3(team_server, project, tmp_path, capsys, monkeypatch):
    """train (registering) -> promote -> list -> predict from models:/NAME/Production and @production, every step
    against the server, which the shells name only through MLFLOW_TRACKING_URI; the run's rows are in
    PostgreSQL, its checkpoint in the bucket (uploaded through the server's proxy: the clients have no S3
    credentials)."""
    from mlflow.tracking import MlflowClient

    server, s3 = team_server
    env = {"MLFLOW_TRACKING_URI": server.url}
    res = run_masklab(["train", *FAST, "trainer.max_epochs=1", "registry.register=true", f"registry.name={NAME}"],
                      project, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"as model '{NAME}'" in res.stdout
    assert not (project / "experiments" / "mlflow.db").exists()  # nothing went to the local store
    client = MlflowClient(server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert run.info.status == "FINISHED" and "eval/val/mIoU" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied, not s3:// in the client's hands
    keys = s3.keys(server.bucket)
    assert any(k.endswith("checkpoints/best.safetensors") and run.info.run_id in k for k in keys), keys[:20]

    tracking = f"logger.tracking_uri={server.url}"
    command(project, "promote", f"name={NAME}", "version=1", "stage=Production", tracking)
    assert client.get_model_version(NAME, "1").current_stage == "Production"
    assert "Production" in command_ok(project, capsys, "models list", tracking)
    images = tmp_path / "in"
    write_images(images, [(40, 60)])
    res = run_masklab(["predict", f"model=models:/{NAME}/Production", f"input={images}",
                       f"output={tmp_path / 'out'}"], project, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "out" / "img0.png").is_file()
    command(project, "predict", f"model_ref=models:/{NAME}@production", f"input={images}",  # (the CLI's model=)
            f"output={tmp_path / 'alias'}", tracking)
    assert (tmp_path / "alias" / "img0.png").read_bytes() == (tmp_path / "out" / "img0.png").read_bytes()


def test_basic_auth_guards_the_registry(auth_server, project, capsys, monkeypatch):
    """With MLflow's basic-auth app: credentials come from the environment; a user with READ only cannot
    promote (a one-line error naming the user and what is missing) nor delete a version; a wrong password is a
    one-line error too; the admin can do both."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    server, _ = auth_server
    admin_user, admin_password = server.admin
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin_user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    get_app_client("basic-auth", tracking_uri=server.url).create_user("viewer", "viewer-secret-1")
    env = {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": admin_user,
           "MLFLOW_TRACKING_PASSWORD": admin_password}
    res = run_masklab(["train", *FAST, "trainer.max_epochs=1", "registry.register=true", f"registry.name={NAME}"],
                      project, env=env)
    assert res.returncode == 0, res.stderr[-3000:]

    tracking = f"logger.tracking_uri={server.url}"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "viewer")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "viewer-secret-1")
    message = exits_as_user_error("promote as viewer", lambda: command(
        project, "promote", f"name={NAME}", "version=1", "stage=Production", tracking), capsys)
    assert "denied user 'viewer' permission" in message and "MANAGE" in message, message
    with pytest.raises(MlflowException, match="(?i)permission"):
        MlflowClient(server.url).delete_model_version(NAME, "1")

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    message = exits_as_user_error("promote with a wrong password", lambda: command(
        project, "promote", f"name={NAME}", "version=1", "stage=Production", tracking), capsys)
    assert "MLFLOW_TRACKING_USERNAME" in message and "MLFLOW_TRACKING_PASSWORD" in message, message

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin_user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    client = MlflowClient(server.url)
    assert client.get_model_version(NAME, "1").current_stage == "None"  # the denied promotion changed nothing
    command(project, "promote", f"name={NAME}", "version=1", "stage=Production", tracking)
    assert client.get_model_version(NAME, "1").current_stage == "Production"
    client.delete_model_version(NAME, "1")
    assert not client.search_model_versions(f"name='{NAME}'")
