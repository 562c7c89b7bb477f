"""``params.yaml`` -> Hydra overrides: the DVC pipeline's one configuration file.

``params.yaml`` holds the overrides that the pipeline applies on top of masklab's ``conf/``,
written as YAML: a top-level scalar is a group choice or a value (``model: fpn`` ->
``model=fpn``), a mapping is a path of keys (``optimizer: {lr: 0.0003}`` -> ``optimizer.lr=0.0003``).
It is read, never written, by masklab: ``dvc exp run -S model=fpn`` edits it in place, and
``dvc repro`` and ``dvc exp run`` use the same file, so the committed file is the config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from masklab.errors import UserError

# Values Hydra's override grammar takes unquoted.
_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+\-]+$")


def format_value(value: Any) -> str:
    """A YAML value as Hydra override text: ``true``, ``0.0003``, ``null``, ``[1,2]``, ``'a b'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    # A string that YAML would read as another type (e.g. "1.0", "true") stays a string when quoted.
    if _PLAIN.match(text) and isinstance(yaml.safe_load(text), str):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(params: dict[str, Any], prefix: str = "") -> list[str]:
    """Flatten nested params into Hydra overrides, in file order."""
    overrides: list[str] = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            overrides.extend(to_overrides(value, f"{name}."))
        else:
            overrides.append(f"{name}={format_value(value)}")
    return overrides


def read_overrides(path: Path) -> list[str]:
    """The Hydra overrides that ``path`` (a params.yaml) asks for; a clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; the pipeline reads its overrides from it (see README, Pipelines)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of overrides (key: value), found {type(params).__name__}")
    return to_overrides(params)
