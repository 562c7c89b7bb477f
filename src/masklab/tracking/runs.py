"""MLflow runs: the Lightning logger, run context (config, git, dataset), metrics and artifacts."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from masklab.errors import NotFoundError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MAX_PARAM_LENGTH = 6000
CHECKPOINT_ARTIFACT_DIR = "checkpoints"
# The run's best model as masklab tracks it, newest format first: safetensors (the model's weights, masklab's
# metadata in the header; masklab.evaluation.checkpoint), then the torch checkpoint of runs logged before.
BEST_CHECKPOINT = "best.safetensors"
BEST_CHECKPOINTS = (BEST_CHECKPOINT, "best.ckpt")
# Every run masklab creates carries masklab.platform.<key> tags (masklab.platform.platform_fingerprint()).
PLATFORM_TAG_PREFIX = "masklab.platform."


def is_local_store(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def prepare_store(tracking_uri: str) -> None:
    """Create the folder of a local SQLite store so MLflow can open it; servers need nothing."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def artifact_location(tracking_uri: str, artifact_root: str, experiment_name: str) -> str | None:
    """Artifacts of local stores go under experiments/ (MLflow's default would be ./mlruns)."""
    if not is_local_store(tracking_uri):
        return None
    return (Path(artifact_root).resolve() / experiment_name).as_uri()


def client(tracking_uri: str):
    """An MlflowClient for ``tracking_uri`` (imported lazily: mlflow is slow to import); on a SQLite store its
    calls wait and retry while another process writes (masklab.tracking.sqlite_retry)."""
    from mlflow.tracking import MlflowClient

    from masklab.tracking.sqlite_retry import call_mlflow

    prepare_store(tracking_uri)
    install_busy_timeout(tracking_uri)
    # (the constructor opens the store: it meets a lock too)
    return shared_store_client(call_mlflow(MlflowClient, tracking_uri=tracking_uri), tracking_uri)


def install_busy_timeout(tracking_uri: str) -> None:
    """On a SQLite store, make this process's SQLite connections wait for a lock (masklab.tracking.sqlite_retry)."""
    if tracking_uri.startswith("sqlite:"):
        from masklab.tracking.sqlite_retry import wait_on_locked_sqlite

        wait_on_locked_sqlite()


def shared_store_client(mlflow_client: Any, tracking_uri: str) -> Any:
    """``mlflow_client`` as it should be used on ``tracking_uri``: wrapped in retries on a SQLite store."""
    if not tracking_uri.startswith("sqlite:"):
        return mlflow_client
    from masklab.tracking.sqlite_retry import RetryingClient

    return RetryingClient(mlflow_client)


@contextmanager
def fluent_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.start_run``, ``log_model``, ``register_model``) on ``tracking_uri`` for the
    block, then the previous URI back. ``mlflow.set_tracking_uri`` alone also exports MLFLOW_TRACKING_URI,
    which masklab's config reads: a later command in the same process would log to this store."""
    import mlflow

    # set_tracking_uri mirrors its value into the variable (None unsets both), so the variable is the state to restore.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # (None unsets both again)


def platform_tags() -> dict[str, str]:
    """``masklab.platform.<key>`` tags of this process's platform fingerprint (imports torch)."""
    from masklab.platform import platform_fingerprint

    return {f"{PLATFORM_TAG_PREFIX}{key}": value for key, value in platform_fingerprint().items()}


@functools.cache
def _platform_tagging_logger() -> type:
    """MLFlowLogger that tags the run with the platform again when training ends.

    The tags given at creation are taken before the Trainer exists, which is what switches on
    deterministic algorithms; the tags at the end say how training actually ran (and which
    platform a resumed run finished on).
    """
    from mlflow.entities import RunTag
    from pytorch_lightning.loggers import MLFlowLogger
    from pytorch_lightning.utilities import rank_zero_only

    class PlatformTaggingMLFlowLogger(MLFlowLogger):
        _mlflow_client: Any  # (MLFlowLogger's, wrapped below)

        def __init__(self, *args: Any, **kwargs: Any):
            from masklab.tracking.sqlite_retry import call_mlflow

            uri = str(kwargs.get("tracking_uri") or "")
            install_busy_timeout(uri)
            call_mlflow(super().__init__, *args, **kwargs)  # (it opens the store: it meets a lock too)
            self._mlflow_client = shared_store_client(self._mlflow_client, uri)

        @rank_zero_only
        def finalize(self, status: str = "success") -> None:
            if self._initialized:
                self.experiment.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in platform_tags().items()])
            super().finalize(status)

    return PlatformTaggingMLFlowLogger


def make_lightning_logger(
    tracking_uri: str,
    artifact_root: str,
    experiment_name: str,
    run_name: str | None,
    tags: Mapping[str, str],
    run_id: str | None = None,
):
    """Lightning's MLFlowLogger writing per-epoch metrics to the given store (continuing ``run_id`` if set).

    A new run is tagged with the platform fingerprint (``masklab.platform.*``, refreshed when training ends).
    """
    prepare_store(tracking_uri)
    return _platform_tagging_logger()(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=tracking_uri,
        tags={**platform_tags(), **tags},
        artifact_location=artifact_location(tracking_uri, artifact_root, experiment_name),
        log_model=False,
        run_id=run_id,
    )


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} with lists rendered inline; values cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def git_commit(path: Path) -> str | None:
    """The commit of the git work tree containing ``path``, with '-dirty' when tracked files changed.

    Files that DVC itself rewrites while a pipeline runs (dvc.lock, .gitignore files, the outputs
    listed in dvc.lock) do not count: otherwise every run started by `dvc repro` would be dirty.
    """
    from masklab.data.versioning import dvc_managed_paths

    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=top, capture_output=True, text=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    managed = dvc_managed_paths(Path(top))
    changed = [line[3:].split(" -> ")[-1].strip('"') for line in status if len(line) > 3]
    dirty = [p for p in changed if Path(p).name not in ("dvc.lock", ".gitignore") and p not in managed]
    return f"{sha}-dirty" if dirty else sha


class RunLog:
    """Writes to one existing MLflow run: params, metrics, tags, files."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._client = client(tracking_uri)

    def params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if not math.isnan(float(v))]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def file(self, path: Path, artifact_dir: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_dir)

    def files(self, paths: Iterable[Path], artifact_dir: str | None = None) -> None:
        for p in paths:
            self.file(p, artifact_dir)

    def yaml(self, data: Mapping[str, Any], artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
            self.file(path, str(Path(artifact_file).parent) if "/" in artifact_file else None)

    def directory(self, path: Path, artifact_dir: str) -> None:
        """Log every file under ``path`` as ``artifact_dir/...`` in one call."""
        self._client.log_artifacts(self.run_id, str(path), artifact_dir)

    def metric_history(self, keys: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
        """{key: [(step, value), ...]} for the keys the run has."""
        logged = set(self._client.get_run(self.run_id).data.metrics)
        return {k: [(m.step, m.value) for m in self._client.get_metric_history(self.run_id, k)]
                for k in keys if k in logged}

    def download(self, artifact_path: str, dest: Path) -> Path | None:
        """Download an artifact file or folder of the run; None when the run has no such artifact.

        Only a missing artifact is None: a store that cannot be listed or read (authentication, network, a server
        error) is a UserError naming the store, so a caller never reports "no evaluation" when the server refused.
        """
        import posixpath

        import mlflow

        from masklab.errors import UserError

        where = f"MLflow run {self.run_id} in {self.tracking_uri}"
        parent = posixpath.dirname(artifact_path) or None
        try:
            listed = {f.path for f in self._client.list_artifacts(self.run_id, parent)}
        except Exception as exc:  # MlflowException / RestException / OSError from the store
            raise UserError(f"{where}: cannot list its artifacts ({type(exc).__name__}: {exc})") from exc
        if artifact_path.rstrip("/") not in listed:
            return None
        try:
            return Path(mlflow.artifacts.download_artifacts(run_id=self.run_id, artifact_path=artifact_path,
                                                            dst_path=str(dest), tracking_uri=self.tracking_uri))
        except Exception as exc:
            raise UserError(f"{where}: its artifact {artifact_path} exists but could not be downloaded "
                            f"({type(exc).__name__}: {exc})") from exc

    def local_artifact(self, artifact_path: str) -> Path | None:
        """Where the artifact lies on this machine when the run's artifact store is a local folder (so a caller
        can read it in place instead of copying it); None for a remote store or when the run has no such artifact."""
        import urllib.parse
        import urllib.request

        uri = self._client.get_run(self.run_id).info.artifact_uri
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme == "file":
            root = Path(urllib.request.url2pathname(parts.path))
        elif parts.scheme == "" or (len(parts.scheme) == 1 and ":" in uri):  # a plain path (or a Windows drive)
            root = Path(uri)
        else:
            return None
        path = root / artifact_path
        return path if path.exists() else None

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ended with ``status`` (FINISHED, FAILED or KILLED)."""
        self._client.set_terminated(self.run_id, status=status)

    def run_data(self) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
        """(latest metrics, params, tags) of the run."""
        run = self._client.get_run(self.run_id)
        return dict(run.data.metrics), dict(run.data.params), dict(run.data.tags)


@contextmanager
def ending(run: RunLog) -> Iterator[RunLog]:
    """End ``run`` when the block ends: FINISHED, FAILED on an exception, KILLED on an interruption (Ctrl-C,
    KeyboardInterrupt), so a parent run is never left RUNNING."""
    try:
        yield run
    except Exception:
        run.end("FAILED")
        raise
    except BaseException:
        run.end("KILLED")
        raise
    run.end("FINISHED")


def start_run(tracking_uri: str, artifact_root: str, experiment_name: str, run_name: str | None,
              tags: Mapping[str, str]) -> RunLog:
    """A new RUNNING run in ``experiment_name`` (created if missing) tagged ``tags`` and the platform
    fingerprint: the parent of runs that tag ``mlflow.parentRunId`` with its id. End it with ``RunLog.end``."""
    c = client(tracking_uri)
    experiment = c.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else c.create_experiment(
        experiment_name, artifact_location=artifact_location(tracking_uri, artifact_root, experiment_name))
    run = c.create_run(experiment_id, run_name=run_name, tags={**platform_tags(), **tags})
    return RunLog(tracking_uri, run.info.run_id)


def open_run(
    tracking_uri: str, run_id: str | None, artifact_root: str, experiment_name: str, tags: Mapping[str, str]
) -> RunLog:
    """``run_id`` when the store has it; otherwise a new finished run in ``experiment_name`` tagged ``tags``
    and the platform fingerprint (``masklab.platform.*``; an existing run keeps the tags of the platform it ran on)."""
    c = client(tracking_uri)
    if run_id:
        try:
            c.get_run(run_id)
            return RunLog(tracking_uri, run_id)
        except Exception:  # not in this store (e.g. a checkpoint copied from elsewhere)
            pass
    experiment = c.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else c.create_experiment(
        experiment_name, artifact_location=artifact_location(tracking_uri, artifact_root, experiment_name))
    run = c.create_run(experiment_id, tags={**platform_tags(), **tags})
    c.set_terminated(run.info.run_id)
    return RunLog(tracking_uri, run.info.run_id)


@contextmanager
def downloaded_checkpoint(tracking_uri: str, run_id: str, name: str | None = None) -> Iterator[Path]:
    """The run's tracked best model, fetched into a temporary folder removed on exit: ``checkpoints/best.safetensors``,
    or ``checkpoints/best.ckpt`` for a run logged before masklab tracked safetensors; ``name``: that file of
    ``checkpoints/`` instead. Read either with ``masklab.evaluation.checkpoint`` (it tells the formats apart).

    Raises NotFoundError (a one-line user error, also a LookupError) when the run or the artifact does not exist.
    """
    import mlflow

    store = client(tracking_uri)
    try:
        store.get_run(run_id)
    except Exception as exc:  # mlflow raises MlflowException / RestException subclasses
        raise NotFoundError(f"MLflow run '{run_id}' not found in {tracking_uri}: {exc}") from exc
    wanted = (name,) if name else BEST_CHECKPOINTS
    try:
        logged = {Path(f.path).name for f in store.list_artifacts(run_id, CHECKPOINT_ARTIFACT_DIR)}
    except Exception as exc:  # the artifact store is unreachable
        raise NotFoundError(f"MLflow run '{run_id}': cannot list its artifacts {CHECKPOINT_ARTIFACT_DIR}/: {exc}") \
            from exc
    found = next((n for n in wanted if n in logged), None)
    if found is None:
        raise NotFoundError(f"MLflow run '{run_id}' has no artifact "
                            f"{' or '.join(f'{CHECKPOINT_ARTIFACT_DIR}/{n}' for n in wanted)} "
                            f"(it has {sorted(logged) or 'none'})")
    with tempfile.TemporaryDirectory(prefix="masklab-ckpt-") as dest:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"{CHECKPOINT_ARTIFACT_DIR}/{found}", dst_path=dest,
                tracking_uri=tracking_uri)
        except Exception as exc:
            raise NotFoundError(f"MLflow run '{run_id}': could not download {CHECKPOINT_ARTIFACT_DIR}/{found}: {exc}") \
                from exc
        yield Path(local)
