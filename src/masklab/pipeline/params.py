"""``params.yaml`` -> Hydra overrides: the DVC pipeline's one configuration file.

``params.yaml`` holds the overrides that the pipeline applies on top of masklab's ``conf/``,
written as YAML: a top-level scalar is a group choice or a value (``model: fpn`` ->
``model=fpn``), a mapping is a path of keys (``optimizer: {lr: 0.0003}`` -> ``optimizer.lr=0.0003``).
It is read, never written, by masklab: ``dvc exp run -S model=fpn`` edits it in place, and
``dvc repro`` and ``dvc exp run`` use the same file, so the committed file is the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from masklab.errors import UserError
from masklab.overrides import format_override


def to_overrides(params: dict[str, Any], prefix: str = "") -> list[str]:
    """Flatten nested params into Hydra overrides, in file order; an empty mapping overrides nothing."""
    overrides: list[str] = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            overrides.extend(to_overrides(value, f"{name}."))
        else:
            overrides.append(format_override(name, value))
    return overrides


def read_params(path: Path) -> dict[str, Any]:
    """The mapping in ``path`` (a params.yaml); a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; the pipeline reads its overrides from it (see README, Pipelines)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of overrides (key: value), found {type(params).__name__}")
    return params


def read_overrides(path: Path) -> list[str]:
    """The Hydra overrides that ``path`` (a params.yaml) asks for."""
    return to_overrides(read_params(path))
