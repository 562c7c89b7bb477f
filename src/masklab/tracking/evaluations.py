"""Evaluation records on the MLflow entity a number belongs to: a run, or a registered model version.

Where a record lives:
- on a run: the artifact ``evaluations/<key>.json`` (the whole record; artifacts have no size limit,
  while run tags are cut to 8000 characters without notice);
- on a model version: the version tag ``masklab.evaluation.<key>`` holding the record's JSON.
  Every MLflow backend guarantees tag values of 5000 bytes; a record above that keeps only its
  summary metrics (``eval/<split>/<name>``, not per-class ones) and says how many it dropped.

``<key>`` is :meth:`EvaluationRecord.key` (dataset, manifest hash, split, resolution), so a later
record of the same number replaces the older one, and records of other data sit beside it.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from masklab.errors import UserError
from masklab.evaluation.record import EvaluationRecord

ARTIFACT_DIR = "evaluations"
VERSION_TAG_PREFIX = "masklab.evaluation."
# The tag value size every MLflow backend accepts (the SQL stores take 100 000; Databricks 5000).
MAX_VERSION_TAG_BYTES = 5000
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def storage_key(record: EvaluationRecord) -> str:
    """``record.key()`` with characters MLflow tag names and file names may not hold replaced by ``_``."""
    return _UNSAFE.sub("_", record.key())


def log_evaluation(tracking_uri: str, record: EvaluationRecord, *, run_id: str | None = None,
                   model_version: tuple[str, str] | None = None) -> None:
    """Store ``record`` on run ``run_id`` and/or on registered version ``model_version`` = (name, version).

    A record with the same key (dataset version, split, resolution) already there is replaced.
    UserError when the run or the version does not exist.
    """
    from masklab.tracking.runs import client as make_client

    if run_id is None and model_version is None:
        raise ValueError("log_evaluation needs run_id and/or model_version")
    client = make_client(tracking_uri)
    key = storage_key(record)
    if run_id is not None:
        _get_run(client, tracking_uri, run_id)
        with tempfile.TemporaryDirectory(prefix="masklab-eval-") as tmp:
            path = Path(tmp) / f"{key}.json"
            path.write_text(record.to_json())
            client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    if model_version is not None:
        name, version = str(model_version[0]), str(model_version[1])
        if not version.isdigit():
            raise ValueError(f"model_version=({name!r}, {version!r}): resolve a stage or alias to its number first")
        _call(lambda: client.set_model_version_tag(name, version, VERSION_TAG_PREFIX + key, version_tag_value(record)),
              f"model '{name}' version {version}", tracking_uri)


def version_tag_value(record: EvaluationRecord) -> str:
    """The record's JSON, within :data:`MAX_VERSION_TAG_BYTES` (per-class metrics dropped when needed)."""
    text = record.to_json()
    if len(text.encode()) <= MAX_VERSION_TAG_BYTES:
        return text
    data = json.loads(text)
    summary = {k: v for k, v in data["metrics"].items() if k.count("/") <= 2}
    data["metrics"] = summary
    data["metrics_dropped"] = len(record.metrics) - len(summary)
    text = json.dumps(data, sort_keys=True)
    if len(text.encode()) > MAX_VERSION_TAG_BYTES:
        data["platform"] = {}
        data["input_rule"] = {"dropped": "record too large for a model version tag"}
        text = json.dumps(data, sort_keys=True)
    if len(text.encode()) > MAX_VERSION_TAG_BYTES:
        raise ValueError(f"evaluation record {record.key()} is {len(text.encode())} bytes even without per-class "
                         f"metrics; a model version tag holds {MAX_VERSION_TAG_BYTES}")
    return text


def evaluations_for_run(tracking_uri: str, run_id: str) -> list[EvaluationRecord]:
    """The records stored on run ``run_id``, oldest first; UserError when the run does not exist."""
    from masklab.tracking.runs import client as make_client

    client = make_client(tracking_uri)
    _get_run(client, tracking_uri, run_id)
    files = [f.path for f in client.list_artifacts(run_id, ARTIFACT_DIR)
             if not f.is_dir and f.path.endswith(".json")]
    if not files:
        return []
    records = []
    with tempfile.TemporaryDirectory(prefix="masklab-eval-") as tmp:
        local = Path(client.download_artifacts(run_id, ARTIFACT_DIR, tmp))
        for name in sorted(Path(f).name for f in files):
            records.append(EvaluationRecord.from_json((local / name).read_text()))
    return sorted(records, key=lambda r: r.created)


def evaluations_for_version(tracking_uri: str, name: str, version: str | int) -> list[EvaluationRecord]:
    """The records of registered version ``version`` of ``name``, oldest first: its own plus those of its
    source run (the version is that run's best checkpoint). For the same key, the version's own wins."""
    from masklab.tracking.runs import client as make_client

    client = make_client(tracking_uri)
    mv = _call(lambda: client.get_model_version(str(name), str(version)), f"model '{name}' version {version}",
               tracking_uri)
    own = {key[len(VERSION_TAG_PREFIX):]: EvaluationRecord.from_json(value)
           for key, value in (mv.tags or {}).items() if key.startswith(VERSION_TAG_PREFIX)}
    merged: dict[str, EvaluationRecord] = {}
    if mv.run_id:
        try:
            merged = {storage_key(r): r for r in evaluations_for_run(tracking_uri, mv.run_id)}
        except UserError:
            merged = {}  # the source run was deleted: the version's own records still stand
    merged.update(own)
    return sorted(merged.values(), key=lambda r: r.created)


def newest(records: Iterable[EvaluationRecord], *, dataset: str | None = None, manifest_sha256: str | None = None,
           split: str | None = None, resolution: str | None = None) -> EvaluationRecord | None:
    """The most recent record matching every criterion given (None when none does)."""
    found = [r for r in records
             if (dataset is None or r.dataset == dataset)
             and (manifest_sha256 is None or r.manifest_sha256 == manifest_sha256)
             and (split is None or r.split == split)
             and (resolution is None or r.resolution == resolution)]
    return max(found, key=lambda r: r.created) if found else None


def _get_run(client, tracking_uri: str, run_id: str):
    return _call(lambda: client.get_run(run_id), f"run_id={run_id}", tracking_uri)


def _call(fn, what: str, tracking_uri: str):
    """``fn()``, with MLflow's refusal (no such run or version, bad value) as a UserError naming ``what``."""
    from mlflow.exceptions import MlflowException

    try:
        return fn()
    except MlflowException as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{what}: MLflow at {tracking_uri} answered: {first}") from exc
