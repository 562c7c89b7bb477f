"""Paths a dataset's files may have: relative to the dataset folder and inside it.

A manifest (or an objects file) may come from elsewhere (a shared DVC remote, a colleague's import), so the
paths it names are data, not trusted locations: an absolute path, a ``..`` component or a symlink that leads
out of the dataset folder would let ``data check``, training, the explorers and the explore server's thumbnail
endpoint read any file the user can read. Every reader gets its samples through
:func:`masklab.data.manifest.load_dataset`, which refuses such rows with :func:`path_problem` (lexical) and
:class:`LinkCheck` (symlinks); objects files' mask PNGs go through the same two checks.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

PATH_RULE = "a path relative to the dataset folder that stays inside it"


def path_problem(value: str) -> str | None:
    """Why ``value`` (a path as a manifest row writes it) cannot name a file of the dataset; None when it can.

    Refused: empty, absolute (``/x``, ``C:\\x``, ``\\\\host\\x``) and any ``..`` component (``/`` or ``\\``
    separated). Checked on the text alone: nothing is read from disk."""
    if not value:
        return "an empty path"
    windows = PureWindowsPath(value)
    if value.startswith(("/", "\\")) or windows.drive or windows.is_absolute():
        return "an absolute path"
    if ".." in PurePosixPath(value.replace("\\", "/")).parts:
        return "a '..' component"
    return None


class LinkCheck:
    """Finds manifest paths under ``root`` that are symlinks (or lie in symlinked folders) leading out of it.

    A link is allowed when it stays in the dataset folder or leads into the DVC cache of a project the dataset
    lies in (``<project>/.dvc/cache``: DVC's ``cache.type symlink`` checks data out that way). Costs one
    ``realpath`` and one ``scandir`` per distinct folder and a set lookup per file, so loading a large manifest
    stays cheap (benchmarks/dataset_load.py)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        real = os.path.realpath(self.root)
        self.allowed = [real] + [os.path.join(os.path.realpath(p), ".dvc", "cache")
                                 for p in (self.root.absolute(), *self.root.absolute().parents)
                                 if (p / ".dvc").is_dir()]
        self._folders: dict[str, tuple[str, bool, frozenset[str]]] = {}

    def _inside(self, real: str) -> bool:
        return any(real == base or real.startswith(base + os.sep) for base in self.allowed)

    def _folder(self, folder: str) -> tuple[str, bool, frozenset[str]]:
        """A folder's real path, whether it is inside, and the names of the symlinks in it (one scandir: the file
        type comes with the directory entry, so no file is stat'ed)."""
        known = self._folders.get(folder)
        if known is None:
            real = os.path.realpath(self.root / folder)
            try:
                with os.scandir(real) as entries:
                    links = frozenset(e.name for e in entries if e.is_symlink())
            except OSError:  # not a folder (a missing file's parent): another check reports it
                links = frozenset()
            known = self._folders[folder] = (real, self._inside(real), links)
        return known

    def escape(self, rel: str) -> str | None:
        """The real path ``rel`` (a :func:`path_problem`-clean manifest path) leads to when that is outside the
        dataset folder; None when it stays inside (or does not exist: a missing file is another check's). For the
        many paths of a manifest; one path alone: :meth:`escape_one`."""
        folder, _, name = rel.replace("\\", "/").rpartition("/")
        real_folder, inside, links = self._folder(folder)
        if name not in links:  # a plain file (or none): where its folder is
            return None if inside else os.path.join(real_folder, name)
        real = os.path.realpath(os.path.join(real_folder, name))
        return None if self._inside(real) else real

    def escape_one(self, rel: str) -> str | None:
        """:meth:`escape` for a single path (an objects file's mask PNG): one ``realpath``, no folder scan."""
        real = os.path.realpath(self.root / rel)
        return None if self._inside(real) else real
