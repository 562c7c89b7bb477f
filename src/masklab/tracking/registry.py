"""Model registry workflow: register, promote with a gate, keep stages and aliases in step, history.

MLflow stages (None/Staging/Production/Archived) are deprecated since 2.9 but still work; aliases
replace them. masklab keeps both: after every transition the aliases ``staging`` and
``production`` are set to the versions holding those stages, so ``models:/N/Production`` and
``models:/N@production`` name the same version. Every transition is also written as a version
tag (``masklab.transition.<time>.<id>``), so the audit history lives in the registry itself.

The promotion gate compares EvaluationRecords (``tracking/evaluations.py``), never a run's latest
metric: two numbers are compared only when their dataset version (manifest hash), split and
resolution agree. :func:`judge` decides from two records; ``workflows.registry`` finds or makes them.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.errors import NotFoundError, UserError
from masklab.evaluation.record import RESOLUTIONS, EvaluationRecord
from masklab.tracking.runs import client as make_client
from masklab.tracking.runs import fluent_tracking_uri

# A package spec -> its task's (input, output) tensor specs: {"name", "dtype", "shape"} each.
SignatureOf = Callable[[Mapping[str, Any]], tuple[Mapping[str, Any], Mapping[str, Any]]]

STAGES = ("None", "Staging", "Production", "Archived")
ALIASES = {"Staging": "staging", "Production": "production"}
HISTORY_PREFIX = "masklab.transition."
# The MLflow "models from code" entry point: an edge module (it picks the task), copied into every version.
PYFUNC_FILE = Path(__file__).parent.parent / "pyfunc_model.py"
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


GATE_MODES = ("max", "min")


@contextlib.contextmanager
def no_requirement_scan() -> Iterator[None]:
    """Skip MLflow's check of the package's pip requirements against the installed distributions while
    logging a model: it reads the metadata of every installed distribution (2-4 s on a 2-core machine,
    the largest cost of registering after the imports) only to log a warning, which quiet_mlflow drops.
    The requirements written with the model are unchanged."""
    from mlflow.utils import environment

    original = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if original is None:  # another MLflow version: nothing to skip
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda *args, **kwargs: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = original


@dataclass(frozen=True)
class Gate:
    """Promotion to Production needs ``metric`` better than the current Production's by more than
    ``min_delta`` (``mode`` max: higher is better, min: lower), both scored on the same dataset version,
    ``split`` ("auto": test when the dataset has one, else val) and ``resolution``. ``metric`` "auto" is the
    task's headline (mIoU for semantic, mask_AP for instance models; :meth:`for_task`)."""

    metric: str = "auto"
    min_delta: float = 0.0
    mode: str = "max"
    split: str = "auto"
    resolution: str = "original"

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            raise UserError(f"registry.gate.mode={self.mode!r}: expected one of {list(GATE_MODES)}")
        if self.resolution not in RESOLUTIONS:
            raise UserError(f"registry.gate.resolution={self.resolution!r}: expected one of {list(RESOLUTIONS)}")
        if not self.metric or self.metric.startswith("eval/"):
            raise UserError(f"registry.gate.metric={self.metric!r}: expected a metric name without stage and split "
                            f"(e.g. 'mIoU'); the split compared is registry.gate.split ({self.split!r})")
        if not self.split:
            raise UserError("registry.gate.split='': expected 'auto' or a split name (test, val, ...)")

    def for_task(self, task_gate_metric: str) -> Gate:
        """This gate with ``metric`` "auto" replaced by ``task_gate_metric``, the headline metric of the version's
        task (``masklab.tasks``: mIoU for semantic, mask_AP for instance models)."""
        from dataclasses import replace

        return self if self.metric != "auto" else replace(self, metric=task_gate_metric)

    def value(self, record: EvaluationRecord) -> float | None:
        """The gate metric in ``record`` (logged as ``eval/<split>/<metric>``)."""
        found = record.metric(f"eval/{record.split}/{self.metric}")
        return found if found is not None else record.metric(self.metric)


@dataclass(frozen=True)
class GateResult:
    """What the gate compared: the challenger version and its record, the Production version (None when
    there is none) and its record, and ``refusal`` (None: the challenger may enter Production)."""

    gate: Gate
    name: str
    challenger: str
    challenger_record: EvaluationRecord | None
    incumbent: str | None
    incumbent_record: EvaluationRecord | None
    refusal: str | None

    def lines(self) -> list[str]:
        """One line per model: its gate number and where the number came from."""
        rows = [(f"version {self.challenger}", self.challenger_record)]
        if self.incumbent is not None:
            rows.append((f"Production version {self.incumbent}", self.incumbent_record))
        out = []
        for who, record in rows:
            value = self.gate.value(record) if record is not None else None
            number = f"{value:.4f}" if value is not None else "no score"
            where = record.describe() if record is not None else "not scored on the gate's data"
            out.append(f"  {who}: {self.gate.metric} {number}  ({where})")
        return out

    def to_history(self) -> dict[str, Any]:
        """The comparison as the history keeps it: gate settings, each side's value, provenance and key."""
        def side(version: str | None, record: EvaluationRecord | None) -> dict[str, Any] | None:
            if version is None:
                return None
            return {"version": version, "value": self.gate.value(record) if record else None,
                    "scored": record.describe() if record else None, "key": record.key() if record else None,
                    "masklab_version": record.masklab_version if record else None}

        return {"metric": self.gate.metric, "mode": self.gate.mode, "min_delta": self.gate.min_delta,
                "passed": self.refusal is None, "refusal": self.refusal,
                "challenger": side(self.challenger, self.challenger_record),
                "incumbent": side(self.incumbent, self.incumbent_record)}


def gate_metric_names(record: EvaluationRecord) -> list[str]:
    """The names ``registry.gate.metric`` may take for ``record``: its metrics after ``eval/<split>/``, per-class ones
    as ``<kind>/<class>`` patterns (``iou/<class>``) rather than one entry per class."""
    names = set()
    for full in record.metrics:
        bare = full.split("/", 2)[-1] if full.count("/") >= 2 else full
        names.add(bare if "/" not in bare else f"{bare.split('/', 1)[0]}/<class>")
    return sorted(names)


def judge(gate: Gate, name: str, challenger: str, challenger_record: EvaluationRecord | None,
          incumbent: str | None, incumbent_record: EvaluationRecord | None,
          missing: str | None = None) -> GateResult:
    """Compare two records of the same data. ``missing``: why a record is absent (the refusal then)."""
    def result(refusal: str | None) -> GateResult:
        return GateResult(gate, name, str(challenger), challenger_record, incumbent, incumbent_record, refusal)

    if missing:
        return result(missing)
    if challenger_record is None:
        return result(f"gate: model '{name}' version {challenger} has no score on the gate's data")
    if incumbent is not None and incumbent_record is None:
        return result(f"gate: Production version {incumbent} of '{name}' has no score on the gate's data")
    if incumbent_record is not None and incumbent_record.key() != challenger_record.key():
        return result(f"gate: the two numbers come from different data ({challenger_record.key()} vs "
                      f"{incumbent_record.key()}); the gate compares only the same dataset version, split and "
                      f"resolution")
    value = gate.value(challenger_record)
    if value is None:
        return result(f"gate: the evaluation of version {challenger} ({challenger_record.describe()}) has no "
                      f"metric '{gate.metric}' (registry.gate.metric); expected one of "
                      f"{gate_metric_names(challenger_record)}")
    if incumbent_record is None:
        return result(None)  # nothing in Production to beat
    current = gate.value(incumbent_record)
    if current is None:
        return result(f"gate: the evaluation of Production version {incumbent} ({incumbent_record.describe()}) "
                      f"has no metric '{gate.metric}'")
    better = value - current if gate.mode == "max" else current - value
    if better <= gate.min_delta:
        return result(f"gate refused: {gate.metric} of version {challenger} is {value:.4f}, Production version "
                      f"{incumbent} has {current:.4f}; needs {'an improvement' if gate.mode == 'max' else 'a decrease'}"
                      f" > {gate.min_delta} (mode={gate.mode})")
    return result(None)


class GateOutdated(Exception):
    """The Production version changed while the gate was being checked: check it again."""


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

        from masklab.tracking.sqlite_retry import call_mlflow

        try:
            with quiet_mlflow():
                # One retry: a method of self.client (retrying already) is called as is, a fluent call is retried
                return call_mlflow(fn, *args, **kwargs)
        except MlflowException as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if any(m in message for m in ("Failed to establish a new connection", "Max retries exceeded",
                                          "Connection refused", "Read timed out")):
                raise UserError(f"{what}: cannot reach the registry at {self.tracking_uri} "
                                f"(connection failed; is the server running?)") from exc
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in message.lower():
                raise NotFoundError(f"{what}: {message}") from exc
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
        except NotFoundError:
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

    # -- exports ---------------------------------------------------------------------------
    def attach_export(self, name: str, version: str | int, folder: Path, fmt: str, parity_line: str) -> str:
        """Log an exported package folder to version ``version``'s run as ``exports/<fmt>/`` and tag the version
        ``masklab.export.<fmt>`` (that artifact's URI) and ``masklab.export.<fmt>.parity``; returns the URI."""
        from masklab.tracking.runs import RunLog

        found = self.version(name, version)
        artifact_dir = f"exports/{fmt}"
        self._call(f"model '{name}' version {version}", RunLog(self.tracking_uri, found.run_id).directory, folder,
                   artifact_dir)
        uri = f"runs:/{found.run_id}/{artifact_dir}"
        for key, value in ((f"masklab.export.{fmt}", uri), (f"masklab.export.{fmt}.parity", parity_line)):
            self._call(f"model '{name}' version {version}", self.client.set_model_version_tag, name,
                       str(found.version), key, value[:5000])
        return uri

    def export_uri(self, name: str, version: str | int, fmt: str) -> str | None:
        """The ``runs:/`` URI of version ``version``'s ``fmt`` export, or None when it has none."""
        return (self.version(name, version).tags or {}).get(f"masklab.export.{fmt}")

    # -- register --------------------------------------------------------------------------
    def register(self, run_id: str, name: str, ckpt_path: Path, signature_of: SignatureOf) -> Any:
        """Package ``ckpt_path`` (the run's best checkpoint) as a new version of ``name``; ``signature_of`` gives the
        (input, output) tensor specs of a package spec (its task's signature)."""
        import mlflow
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

        from masklab.tracking.packaging import write_package

        self._call(f"run {run_id}", self.client.get_run, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            package = Path(tmp) / "package"
            spec = write_package(ckpt_path, package)
            inputs, outputs = signature_of(spec)
            signature = ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(inputs["dtype"]), inputs["shape"], inputs["name"])]),
                outputs=Schema([TensorSpec(np.dtype(outputs["dtype"]), outputs["shape"], outputs["name"])]),
                # Where and how fast the pyfunc predicts: the inference path's device and batch size.
                params=ParamSchema([ParamSpec("device", "string", "auto"), ParamSpec("batch_size", "long", 8)]),
            )
            with fluent_tracking_uri(self.tracking_uri), quiet_mlflow(), no_requirement_scan(), \
                    mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_FILE),
                    artifacts={"package": str(package)},
                    # A model of the user's own code: MLflow copies it to the model's code/ and puts
                    # that on sys.path when loading (serve, spark_udf, pyfunc.load_model); masklab's
                    # loader reads the package's own copy.
                    code_paths=[str(package / spec["code"]["path"])] if spec.get("code") else None,
                    pip_requirements=PIP_REQUIREMENTS,
                    # No input_example: MLflow would load the package and predict with it to validate the
                    # example (~5 s, the whole model stack) and only warn when that fails. The signature
                    # already says what goes in and out; loading the package rebuilds the model strictly.
                    signature=signature,
                    metadata={"masklab": {"classes": [c["name"] for c in spec["classes"]["classes"]],
                                          "input_rule": spec["input_rule"]}},
                )
            with fluent_tracking_uri(self.tracking_uri):
                mv = self._call("register", mlflow.register_model, info.model_uri, name)
        tags = {"masklab.task": str(spec.get("task") or "semantic"),
                "masklab.dataset": spec["dataset"].get("name", ""),
                "masklab.manifest_sha256": spec["dataset"].get("manifest_sha256", ""),
                "masklab.arch": model_name(spec["model"])}
        # The version names its code and data versions itself, so tracing it needs no run lookup.
        for key in ("masklab.git_commit", "masklab.dataset_dvc_md5", "masklab.dataset_dvc_status",
                    "masklab.dataset_root"):
            value = self.run_tag(run_id, key)
            if value:
                tags[key] = value
        for k, v in tags.items():
            self._call("tag version", self.client.set_model_version_tag, name, mv.version, k, v)
        self._record(name, mv.version, "None", "None", "registered", forced=False, run_id=run_id)
        return mv

    # -- promote ---------------------------------------------------------------------------
    def promote(self, name: str, version: str | int, stage: str, gate: GateResult | None = None,
                force: bool = False, reason: str = "") -> tuple[str, str]:
        """Move a version to ``stage`` (Production archives the previous one); returns (from, to).

        ``gate``: the comparison made for this promotion (Production only). A refusal raises UserError
        with both numbers and their provenance unless ``force``; the history keeps the comparison either
        way. GateOutdated when Production changed since the gate was checked.
        """
        stage = canonical_stage(stage)
        with self._lock():
            mv = self.version(name, version)
            from_stage = mv.current_stage
            checked = gate if stage == "Production" else None
            if checked is not None:
                held = self.in_stage(name, "Production")
                held_version = None if held is None or str(held.version) == str(mv.version) else str(held.version)
                if held_version != checked.incumbent:
                    raise GateOutdated(f"Production of '{name}' is version {held_version}, the gate compared with "
                                       f"{checked.incumbent}")
                if checked.refusal and not force:
                    raise UserError("\n".join([checked.refusal, *checked.lines(), "(force=true overrides)"]))
                if checked.refusal:
                    reason = f"{reason + '; ' if reason else ''}forced past gate: {checked.refusal}"
            self._call(
                "promote", self.client.transition_model_version_stage, name, str(mv.version), stage,
                archive_existing_versions=(stage == "Production"),
            )
            self._record(name, mv.version, from_stage, stage, reason, forced=force,
                         gate=checked.to_history() if checked is not None else None)
            if stage == "Production":
                self._record_replaced(name, mv.version)
            self.sync_aliases(name)
        return from_stage, stage

    def evaluations(self, name: str, version: str | int) -> list[EvaluationRecord]:
        """The evaluation records of a version (its own and its source run's), oldest first."""
        from masklab.tracking.evaluations import evaluations_for_version

        with quiet_mlflow():
            return evaluations_for_version(self.tracking_uri, name, str(version))

    def log_evaluation(self, name: str, version: str | int, record: EvaluationRecord) -> None:
        """Attach ``record`` to a version (replacing its record of the same key)."""
        from masklab.tracking.evaluations import log_evaluation

        with quiet_mlflow():
            log_evaluation(self.tracking_uri, record, model_version=(name, str(version)))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise promotions against a local SQLite store across processes (a file lock beside
        the database). Against a server there is no shared file: `sync_aliases` and
        `_record_replaced` re-read the registry instead, so concurrent promotions still converge."""
        if not self.tracking_uri.startswith("sqlite:///"):
            yield
            return
        from masklab.files import file_lock

        with file_lock(self.tracking_uri[len("sqlite:///"):] + ".registry.lock"):  # released also if the process dies
            yield

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
        except UserError:  # NotFoundError included
            return None

    def _record(self, name: str, version, from_stage: str, to_stage: str, reason: str, forced: bool,
                run_id: str | None = None, gate: dict[str, Any] | None = None) -> None:
        entry: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "time": time.time(),
                                 "who": _who(), "from": from_stage, "to": to_stage, "reason": reason,
                                 "forced": forced}
        if run_id:
            entry["run_id"] = run_id
        if gate is not None:
            entry["gate"] = gate
        key = f"{HISTORY_PREFIX}{time.time_ns()}.{uuid.uuid4().hex[:6]}"
        self._call("history", self.client.set_model_version_tag, name, str(version), key, json.dumps(entry))

    # -- reports ---------------------------------------------------------------------------
    def list_versions(self, name: str, gate: Gate, gate_metric_of: Callable[[str | None], str]) -> list[dict[str, Any]]:
        """One row per version: stage, aliases, its gate number and what it was scored on, its training data.
        ``gate_metric_of``: the headline metric of a task name (its ``masklab.task`` tag), for ``metric=auto``."""
        rows = []
        registered = self._call("model", self.client.get_registered_model, name)
        aliases: dict[str, list[str]] = {}
        for alias, version in (getattr(registered, "aliases", None) or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for v in self.versions(name):
            tags = v.tags or {}
            own = gate.for_task(gate_metric_of(tags.get("masklab.task")))
            record = gate_record(self.evaluations(name, v.version), own)
            rows.append({
                "version": int(v.version), "stage": v.current_stage,
                "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
                "gate metric": own.metric,
                "value": own.value(record) if record else None,
                "scored on": (f"{record.dataset}@{record.manifest_sha256[:12]} {record.split} {record.resolution}"
                              if record else ""),
                "trained on": f"{tags.get('masklab.dataset', '')}@{tags.get('masklab.manifest_sha256', '')[:12]}",
                "data_dvc_md5": tags.get("masklab.dataset_dvc_md5", "")[:12],
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


def canonical_stage(stage: str) -> str:
    """``stage`` spelled as MLflow spells it (case-insensitive); UserError naming the stages otherwise."""
    canonical = {s.lower(): s for s in STAGES}.get(str(stage).lower())
    if canonical is None:
        raise UserError(f"stage '{stage}' does not exist; stages: {list(STAGES)}")
    return canonical


def gate_record(records: list[EvaluationRecord], gate: Gate) -> EvaluationRecord | None:
    """The record that stands for a version's gate number in listings: the gate's resolution and split
    (auto: test before val), newest first."""
    fitting = [r for r in records if r.resolution == gate.resolution and gate.value(r) is not None]
    splits = ["test", "val"] if gate.split == "auto" else [gate.split]
    for split in splits:
        found = [r for r in fitting if r.split == split]
        if found:
            return max(found, key=lambda r: r.created)
    return None


def model_name(model_spec: dict[str, Any]) -> str:
    """``<arch>-<encoder>`` for masklab's smp builder (``bottomup-<arch>-<encoder>`` for the bottom-up instance
    path), ``maskrcnn-<variant>`` for Mask R-CNN, the ``_target_`` for the user's own model."""
    from masklab.models.spec import is_builtin

    target = str(model_spec.get("_target_", ""))
    if is_builtin(model_spec):
        return f"{model_spec.get('arch')}-{model_spec.get('encoder')}"
    if target.endswith(".build_bottom_up"):
        return f"bottomup-{model_spec.get('arch', 'Unet')}-{model_spec.get('encoder', 'resnet18')}"
    if target.endswith(".build_maskrcnn"):
        return f"maskrcnn-{model_spec.get('variant', 'resnet50_fpn')}"
    return target


def _who() -> str:
    try:
        return os.environ.get("MASKLAB_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
