"""Hydra override text from plain values: the one formatter for sweeps and pipelines."""

from __future__ import annotations

import re
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_/][\w\-./@]*")
_KEYWORDS = {"true", "false", "null", "nan", "inf", "-inf", "+inf"}


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged: ``true``, ``0.0003``, ``null``,
    ``[1,2]``, ``{a:1}``, ``fpn``; other strings single-quoted (so ``'1.0'`` stays a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_override(name: str, value: Any) -> str:
    return f"{name}={format_value(value)}"
