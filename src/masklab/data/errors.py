"""The error every reader of the dataset format raises, and how its messages quote a value."""

from __future__ import annotations

from masklab.errors import UserError


class DatasetFormatError(UserError):
    """A dataset on disk does not follow the masklab format; the message names the file."""


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (ending in ``...``), so a message quoting it stays one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
