"""Resolve what a user names as "the model" into a loaded Package.

Accepted: ``models:/<name>/<stage or version>``, ``models:/<name>@<alias>``, an MLflow run id
(its best checkpoint), a checkpoint file, or a package folder.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from masklab.config import DEFAULT_TASK
from masklab.errors import UserError
from masklab.inference.package import SPEC_FILE, Package, load_package_dir

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def package_from_checkpoint(ckpt: Path) -> Package:
    """A Package built straight from a training checkpoint (same input rule as registration)."""
    from masklab.evaluation.checkpoint import load_checkpoint_model
    from masklab.inference.rule import rule_from_meta

    loaded = load_checkpoint_model(ckpt)
    spec = {"task": loaded.meta.get("task", DEFAULT_TASK), "model": loaded.meta["model"],
            "dataset": loaded.meta.get("dataset", {})}
    return Package(loaded.model, loaded.class_table, rule_from_meta(loaded.meta), spec)


ENGINES = ("auto", "torch", "onnx", "torchscript")


def load_model_ref(ref: str, tracking_uri: str, engine: str = "auto") -> Package:
    """Load the model ``ref`` names; UserError (one line) when it names nothing that exists. ``engine``: ``auto``
    (what ``ref`` is: the torch model, or the file of an exported package), or for a registered version ``torch``,
    ``onnx`` or ``torchscript`` (the export ``masklab export`` attached to it)."""
    ref = str(ref)
    path = Path(ref)
    if engine not in ENGINES:
        raise UserError(f"engine={engine!r}: expected one of {', '.join(ENGINES)}")
    if ref.startswith("models:/") and engine in ("onnx", "torchscript"):
        return _export_from_registry(ref, tracking_uri, engine)
    if engine in ("onnx", "torchscript"):
        exported = (path / SPEC_FILE).is_file() and (yaml_spec(path).get("export") or {}).get("format") == engine
        if not exported:
            raise UserError(f"model={ref} engine={engine}: not a registered version or an exported {engine} package; "
                            f"export it first (masklab export model={ref} format={engine} output=<folder>)")
    if ref.startswith("models:/"):
        return _from_registry(ref, tracking_uri)
    if path.is_dir() and (path / SPEC_FILE).is_file():
        return load_package_dir(path)
    if path.is_file():
        return package_from_checkpoint(path)
    if RUN_ID.match(ref):
        from masklab.tracking.runs import downloaded_checkpoint

        with downloaded_checkpoint(tracking_uri, ref) as ckpt:
            return package_from_checkpoint(ckpt)
    raise UserError(f"model={ref}: not a models:/ URI, run id, checkpoint file or package folder that exists")


def yaml_spec(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / SPEC_FILE).read_text()) or {}


def _export_from_registry(uri: str, tracking_uri: str, fmt: str) -> Package:
    """The ``fmt`` export attached to the version ``uri`` names (its file is read into memory, so the download goes
    away); a UserError naming the command that attaches one when it has none."""
    import mlflow

    from masklab.tracking.registry import Registry, quiet_mlflow
    from masklab.tracking.runs import fluent_tracking_uri

    name, version = registry_version(uri, tracking_uri)
    found = Registry(tracking_uri).export_uri(name, version, fmt)
    if not found:
        raise UserError(f"model={uri} engine={fmt}: version {version} of '{name}' has no {fmt} export; attach one "
                        f"with: masklab export model=models:/{name}/{version} format={fmt} output=<folder>")
    with tempfile.TemporaryDirectory(prefix="masklab-export-") as dest:
        with quiet_mlflow(), fluent_tracking_uri(tracking_uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=found, dst_path=dest))
        return load_package_dir(local)


def _parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, stage-or-version, alias) of ``models:/<name>/<stage or version>`` / ``models:/<name>@<alias>``."""
    match = re.match(r"^models:/([^/@]+)(?:/([^/]+)|@(.+))$", uri)
    if not match:
        raise UserError(f"model={uri}: expected models:/<name>/<stage or version> or models:/<name>@<alias>")
    return match.group(1), match.group(2), match.group(3)


def registry_version(uri: str, tracking_uri: str) -> tuple[str, str]:
    """(name, version number) that a ``models:/`` URI names now (a stage or alias resolved)."""
    from masklab.tracking.registry import STAGES, Registry

    name, selector, alias = _parse_registry_uri(uri)
    registry = Registry(tracking_uri)
    versions = registry.versions(name)  # UserError naming the registered models if unknown
    if selector and selector.isdigit():
        return name, str(registry.version(name, selector).version)
    if selector:
        if selector not in STAGES:
            raise UserError(f"model={uri}: '{selector}' is neither a version nor a stage {list(STAGES)}")
        found = registry.in_stage(name, selector)
        if found is None:
            held = {str(v.version): v.current_stage for v in versions}
            raise UserError(f"model={uri}: no version of '{name}' is in {selector}; stages now: {held}")
        return name, str(found.version)
    try:
        return name, str(registry.client.get_model_version_by_alias(name, alias).version)
    except Exception as exc:  # MlflowException RESOURCE_DOES_NOT_EXIST
        raise UserError(f"model={uri}: no version of '{name}' has the alias '{alias}'") from exc


def _from_registry(uri: str, tracking_uri: str) -> Package:
    import mlflow

    from masklab.tracking.registry import quiet_mlflow
    from masklab.tracking.runs import fluent_tracking_uri

    registry_version(uri, tracking_uri)  # a one-line UserError for an unknown name, stage, version or alias
    # The package is read into memory (weights copied into the model), so its download goes away.
    with tempfile.TemporaryDirectory(prefix="masklab-model-") as dest:
        try:
            # models:/ URIs resolve through the fluent registry URI, whatever tracking_uri/registry_uri say.
            with quiet_mlflow(), fluent_tracking_uri(tracking_uri):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dest))
        except Exception as exc:  # MlflowException: alias or version vanished, artifacts unreachable
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"model={uri}: {first}") from exc
        found = [p.parent for p in local.rglob(SPEC_FILE)]
        if not found:
            raise UserError(f"model={uri}: the registered model is not a masklab package (no {SPEC_FILE})")
        return load_package_dir(found[0])
