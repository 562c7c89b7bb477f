"""Registries of classes chosen by name (active-learning strategies, label-error scores): a dict ``name ->
class``, in the order the names are listed to users, filled by a class decorator.

Base layer: it knows nothing of what it registers, only that each class has a ``name``.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from masklab.errors import UserError


class HasName(Protocol):
    name: str


C = TypeVar("C", bound=type[HasName])


def register_named(table: dict[str, C], cls: C, kind: str) -> C:
    """Add ``cls`` to ``table`` under its ``name``; a second class under a taken name is a bug (ValueError naming
    ``kind`` and the class registered first)."""
    if table.get(cls.name, cls) is not cls:
        raise ValueError(f"{kind} {cls.name!r} is registered already ({table[cls.name]})")
    table[cls.name] = cls
    return cls


def named(table: dict[str, C], name: str, key: str) -> C:
    """The class of ``table`` called ``name``; a UserError naming the config ``key`` and the known names."""
    if name not in table:
        raise UserError(f"{key}={name}: expected one of {list(table)}")
    return table[name]
