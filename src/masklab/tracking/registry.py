"""Model registry workflow: register, promote with a gate, keep stages and aliases in step, history.

MLflow stages (None/Staging/Production/Archived) are deprecated since 2.9 but still work; aliases
replace them. masklab keeps both: after every transition the aliases ``staging`` and
``production`` are set to the versions holding those stages, so ``models:/N/Production`` and
``models:/N@production`` name the same version. Every transition is also written as a version
tag (``masklab.transition.<time>.<id>``), so the audit history lives in the registry itself.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.errors import UserError
from masklab.tracking.runs import client as make_client

STAGES = ("None", "Staging", "Production", "Archived")
ALIASES = {"Staging": "staging", "Production": "production"}
HISTORY_PREFIX = "masklab.transition."
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
# The packaged pyfunc needs masklab and its stack; listing them stops MLflow from inferring
# requirements by importing the model (which took ~30 s per registration).
PIP_REQUIREMENTS = ["masklab", "torch==2.14.1", "torchvision==0.29.1", "segmentation-models-pytorch==0.6.0",
                    "safetensors", "opencv-python-headless", "numpy"]


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """The one place MLflow's stage deprecation warnings (and its chatter) are silenced."""
    import logging

    loggers = [logging.getLogger(n) for n in ("mlflow", "mlflow.models", "mlflow.pyfunc", "mlflow.tracking")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r".*[Ss]tage.*deprecated.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow.*")
        warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method.*")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@dataclass
class Gate:
    """Promotion to Production needs ``metric`` better than the current Production by ``min_delta``."""

    metric: str
    min_delta: float = 0.0
    mode: str = "max"


class Registry:
    """The registry of one tracking URI. Every method raises UserError with a one-line message."""

    def __init__(self, tracking_uri: str):
        # Fail fast against an unreachable server instead of MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.tracking_uri = tracking_uri
        self.client = make_client(tracking_uri)

    # -- lookups ---------------------------------------------------------------------------
    def _call(self, what: str, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            with quiet_mlflow():
                return fn(*args, **kwargs)
        except MlflowException as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if any(m in message for m in ("Failed to establish a new connection", "Max retries exceeded",
                                          "Connection refused", "Read timed out")):
                raise UserError(f"{what}: cannot reach the registry at {self.tracking_uri} "
                                f"(connection failed; is the server running?)") from exc
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in message.lower():
                raise LookupError(message) from exc
            raise UserError(f"{what}: registry at {self.tracking_uri} answered: {message}") from exc
        except OSError as exc:  # connection refused, DNS, timeouts
            raise UserError(f"{what}: cannot reach the registry at {self.tracking_uri} ({exc})") from exc

    def model_names(self) -> list[str]:
        models = self._call("list models", self.client.search_registered_models)
        return sorted(m.name for m in models)

    def versions(self, name: str) -> list:
        """All versions of ``name``, oldest first; UserError naming the existing models if unknown."""
        try:
            self._call(f"model '{name}'", self.client.get_registered_model, name)
        except LookupError:
            names = self.model_names()
            raise UserError(f"no registered model '{name}'; registered models: {names or 'none'}") from None
        found = self._call(f"model '{name}'", self.client.search_model_versions, f"name='{name}'")
        return sorted(found, key=lambda v: int(v.version))

    def version(self, name: str, version: str | int):
        versions = self.versions(name)
        for v in versions:
            if str(v.version) == str(version):
                return v
        raise UserError(f"model '{name}' has no version {version}; versions: {[int(v.version) for v in versions]}")

    def in_stage(self, name: str, stage: str):
        with quiet_mlflow():
            found = self._call(f"model '{name}'", self.client.get_latest_versions, name, [stage])
        return found[0] if found else None

    def run_metric(self, run_id: str, metric: str) -> float | None:
        run = self._call(f"run {run_id}", self.client.get_run, run_id)
        return run.data.metrics.get(metric)

    def run_tag(self, run_id: str, tag: str) -> str | None:
        run = self._call(f"run {run_id}", self.client.get_run, run_id)
        return run.data.tags.get(tag)

    # -- register --------------------------------------------------------------------------
    def register(self, run_id: str, name: str, ckpt_path: Path) -> Any:
        """Package ``ckpt_path`` (the run's best checkpoint) as a new version of ``name``."""
        import mlflow
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from masklab.tasks import task_for
        from masklab.tracking.packaging import write_package

        self._call(f"run {run_id}", self.client.get_run, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            package = Path(tmp) / "package"
            spec = write_package(ckpt_path, package)
            inputs, outputs = task_for(spec).signature()
            signature = ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(inputs["dtype"]), inputs["shape"], inputs["name"])]),
                outputs=Schema([TensorSpec(np.dtype(outputs["dtype"]), outputs["shape"], outputs["name"])]),
            )
            mlflow.set_tracking_uri(self.tracking_uri)
            with quiet_mlflow(), mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_FILE),
                    artifacts={"package": str(package)},
                    # A model of the user's own code: MLflow copies it to the model's code/ and puts
                    # that on sys.path when loading (serve, spark_udf, pyfunc.load_model); masklab's
                    # loader reads the package's own copy.
                    code_paths=[str(package / spec["code"]["path"])] if spec.get("code") else None,
                    pip_requirements=PIP_REQUIREMENTS,
                    signature=signature,
                    input_example=np.zeros((1, 32, 32, 3), np.uint8),
                    metadata={"masklab": {"classes": [c["name"] for c in spec["classes"]["classes"]],
                                          "input_rule": spec["input_rule"]}},
                )
            mv = self._call("register", mlflow.register_model, info.model_uri, name)
        tags = {"masklab.dataset": spec["dataset"].get("name", ""),
                "masklab.manifest_sha256": spec["dataset"].get("manifest_sha256", ""),
                "masklab.arch": model_name(spec["model"])}
        # The version names its code and data versions itself, so tracing it needs no run lookup.
        for key in ("masklab.git_commit", "masklab.dataset_dvc_md5", "masklab.dataset_dvc_status"):
            value = self.run_tag(run_id, key)
            if value:
                tags[key] = value
        for k, v in tags.items():
            self._call("tag version", self.client.set_model_version_tag, name, mv.version, k, v)
        self._record(name, mv.version, "None", "None", "registered", forced=False, run_id=run_id)
        return mv

    # -- promote ---------------------------------------------------------------------------
    def promote(self, name: str, version: str | int, stage: str, gate: Gate | None, force: bool = False,
                reason: str = "") -> tuple[str, str]:
        """Move a version to ``stage`` (Production archives the previous one); returns (from, to)."""
        if stage not in STAGES:
            canonical = {s.lower(): s for s in STAGES}.get(str(stage).lower())
            if canonical is None:
                raise UserError(f"stage '{stage}' does not exist; stages: {list(STAGES)}")
            stage = canonical
        with self._lock():
            mv = self.version(name, version)
            from_stage = mv.current_stage
            if stage == "Production" and gate is not None:
                verdict = self.check_gate(name, mv, gate)
                if verdict and not force:
                    raise UserError(verdict + " (force=true overrides)")
                if verdict:
                    reason = f"{reason + '; ' if reason else ''}forced past gate: {verdict}"
            self._call(
                "promote", self.client.transition_model_version_stage, name, str(mv.version), stage,
                archive_existing_versions=(stage == "Production"),
            )
            self._record(name, mv.version, from_stage, stage, reason, forced=force)
            if stage == "Production":
                self._record_replaced(name, mv.version)
            self.sync_aliases(name)
        return from_stage, stage

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise promotions against a local SQLite store across processes (a file lock beside
        the database). Against a server there is no shared file: `sync_aliases` and
        `_record_replaced` re-read the registry instead, so concurrent promotions still converge."""
        if not self.tracking_uri.startswith("sqlite:///"):
            yield
            return
        import fcntl

        lock_path = Path(self.tracking_uri[len("sqlite:///"):] + ".registry.lock")
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _record_replaced(self, name: str, new_version) -> None:
        """Write the Production -> Archived entry for every version the registry archived but whose
        history still ends in Production."""
        for v in self.versions(name):
            if str(v.version) == str(new_version) or v.current_stage != "Archived":
                continue
            entries = sorted((json.loads(val) for key, val in (v.tags or {}).items()
                              if key.startswith(HISTORY_PREFIX)), key=lambda e: e["time"])
            if entries and entries[-1]["to"] == "Production":
                self._record(name, v.version, "Production", "Archived", f"replaced by version {new_version}",
                             forced=False)

    def check_gate(self, name: str, candidate, gate: Gate) -> str | None:
        """None if ``candidate`` may enter Production, else why not (both numbers named)."""
        value = self.run_metric(candidate.run_id, gate.metric)
        if value is None:
            return (f"model '{name}' version {candidate.version}: its run {candidate.run_id} has no metric "
                    f"'{gate.metric}' (registry.gate.metric); evaluate it first")
        current = self.in_stage(name, "Production")
        if current is None or str(current.version) == str(candidate.version):
            return None
        cur_value = self.run_metric(current.run_id, gate.metric)
        if cur_value is None:
            return None  # the incumbent was never measured: nothing to beat
        cand_hash = self.run_tag(candidate.run_id, "masklab.manifest_sha256")
        cur_hash = self.run_tag(current.run_id, "masklab.manifest_sha256")
        if cand_hash != cur_hash:
            return (f"version {candidate.version} and Production version {current.version} were measured on "
                    f"different datasets (manifest {str(cand_hash)[:12]} vs {str(cur_hash)[:12]}); the gate "
                    f"compares only on the same data")
        better = value - cur_value if gate.mode == "max" else cur_value - value
        if better <= gate.min_delta:
            return (f"gate refused: {gate.metric} of version {candidate.version} is {value:.4f}, Production version "
                    f"{current.version} has {cur_value:.4f}; needs an improvement > {gate.min_delta}")
        return None

    def sync_aliases(self, name: str, attempts: int = 5) -> None:
        """Point ``staging``/``production`` at the versions in those stages, re-checking after each
        write so concurrent promotions converge to the stage the registry holds last."""
        for _ in range(attempts):
            stable = True
            for stage, alias in ALIASES.items():
                holder = self.in_stage(name, stage)
                current = self._alias_version(name, alias)
                wanted = str(holder.version) if holder else None
                if current == wanted:
                    continue
                stable = False
                if wanted is None:
                    self._call("alias", self.client.delete_registered_model_alias, name, alias)
                else:
                    self._call("alias", self.client.set_registered_model_alias, name, alias, wanted)
            if stable:
                return
            time.sleep(0.05)

    def _alias_version(self, name: str, alias: str) -> str | None:
        try:
            return str(self._call("alias", self.client.get_model_version_by_alias, name, alias).version)
        except (LookupError, UserError):
            return None

    def _record(self, name: str, version, from_stage: str, to_stage: str, reason: str, forced: bool,
                run_id: str | None = None) -> None:
        entry = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "time": time.time(),
                 "who": _who(), "from": from_stage, "to": to_stage, "reason": reason, "forced": forced}
        if run_id:
            entry["run_id"] = run_id
        key = f"{HISTORY_PREFIX}{time.time_ns()}.{uuid.uuid4().hex[:6]}"
        self._call("history", self.client.set_model_version_tag, name, str(version), key, json.dumps(entry))

    # -- reports ---------------------------------------------------------------------------
    def list_versions(self, name: str, gate_metric: str) -> list[dict[str, Any]]:
        rows = []
        registered = self._call("model", self.client.get_registered_model, name)
        aliases: dict[str, list[str]] = {}
        for alias, version in (getattr(registered, "aliases", None) or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for v in self.versions(name):
            metric = self.run_metric(v.run_id, gate_metric) if v.run_id else None
            rows.append({
                "version": int(v.version), "stage": v.current_stage,
                "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
                gate_metric: metric, "dataset": (v.tags or {}).get("masklab.manifest_sha256", "")[:12],
                "data_dvc_md5": (v.tags or {}).get("masklab.dataset_dvc_md5", "")[:12],
                "run_id": v.run_id,
                "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.creation_timestamp / 1000)),
            })
        return rows

    def history(self, name: str) -> list[dict[str, Any]]:
        entries = []
        for v in self.versions(name):
            for key, value in (v.tags or {}).items():
                if key.startswith(HISTORY_PREFIX):
                    entry = json.loads(value)
                    entry["version"] = int(v.version)
                    entries.append(entry)
        return sorted(entries, key=lambda e: e["time"])


def model_name(model_spec: dict[str, Any]) -> str:
    """``<arch>-<encoder>`` for masklab's smp builder, the ``_target_`` for the user's own model."""
    from masklab.models.factory import is_builtin

    if is_builtin(model_spec):
        return f"{model_spec.get('arch')}-{model_spec.get('encoder')}"
    return str(model_spec["_target_"])


def _who() -> str:
    try:
        return os.environ.get("MASKLAB_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
