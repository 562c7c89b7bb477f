"""Which DVC version of a dataset folder is in the work tree: its hash as recorded by DVC.

DVC records a tracked folder's content hash (``md5`` of its ``.dir`` listing) either in the
``outs`` of a stage in ``dvc.lock`` or in a ``<folder>.dvc`` file. A run that logs this hash can
be traced to the exact data version: ``git log -S <hash> dvc.lock`` finds the commit, and
``dvc checkout`` brings the bytes back.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def find_dvc_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds a ``.dvc`` directory."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _read_yaml(path: Path) -> dict:
    """A DVC file's content; {} when missing or unreadable (a half-written or hand-broken lock file
    must not stop a run from starting, only leave its data version unknown)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _lock_stages(root: Path) -> dict:
    stages = _read_yaml(Path(root) / "dvc.lock").get("stages")
    return stages if isinstance(stages, dict) else {}


def _outs_hash(outs: list, wanted: str) -> str | None:
    for out in outs or []:
        if isinstance(out, dict) and os.path.normpath(str(out.get("path", ""))) == wanted:
            return out.get("md5") or out.get("hash") or None
    return None


def dvc_hash(path: Path) -> str | None:
    """The DVC hash recorded for ``path`` (a file or folder), or None when DVC does not track it.

    Looks in ``dvc.lock`` next to the repository's ``dvc.yaml`` (stage outputs) and in ``<path>.dvc``
    (``dvc add``). The recorded hash is what DVC committed, so it names the data version only when
    ``dvc status`` is clean for ``path``.
    """
    path = Path(path).resolve()
    root = find_dvc_root(path)
    if root is None:
        return None
    rel = os.path.normpath(os.path.relpath(path, root))
    for stage in _lock_stages(root).values():
        found = _outs_hash(stage.get("outs", []), rel)
        if found:
            return found
    return _outs_hash(_read_yaml(path.with_name(path.name + ".dvc")).get("outs", []), path.name)


def dvc_md5(path: Path) -> str:
    """DVC's hash of ``path`` as it is now on disk (``<md5>.dir`` for a folder), honouring .dvcignore;
    equal to what ``dvc commit`` would record. Needs no repository lock, so a stage can call it."""
    import tempfile

    from dvc.ignore import DvcIgnoreFilter
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(path).resolve()
    fs = LocalFileSystem()
    root = find_dvc_root(path)
    ignore = DvcIgnoreFilter(fs, str(root)) if root else None
    with tempfile.TemporaryDirectory() as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), str(path), fs, "md5", ignore=ignore, dry_run=True)
    return obj.hash_info.value


def locked_stage(root: Path, name: str) -> dict | None:
    """The entry of stage ``name`` in ``<root>/dvc.lock`` (deps, params, outs), or None."""
    return _lock_stages(root).get(name)


def dvc_managed_paths(root: Path) -> set[str]:
    """Paths (relative to ``root``, POSIX) of every stage output recorded in ``<root>/dvc.lock``."""
    return {Path(os.path.normpath(out["path"])).as_posix()
            for stage in _lock_stages(root).values() for out in stage.get("outs", []) if "path" in out}


def data_version(path: Path) -> tuple[str | None, str]:
    """(DVC hash, status) of a dataset folder for a run's tags.

    status is "untracked" (DVC does not track it), "committed" (the bytes are the version DVC
    recorded) or "modified" (the folder changed since; the hash is then of the bytes on disk, which
    no commit holds yet). Inside a `dvc repro` stage DVC has just verified its dependencies, so the
    recorded hash is used without hashing the folder again.
    """
    recorded = dvc_hash(path)
    if recorded is None:
        return None, "untracked"
    if os.environ.get("DVC_STAGE"):
        return recorded, "committed"
    actual = dvc_md5(path)
    return actual, "committed" if actual == recorded else "modified"


def dvc_context() -> dict[str, str]:
    """Tags naming the DVC stage and experiment a command runs in (DVC sets these variables)."""
    names = {"DVC_STAGE": "masklab.dvc_stage", "DVC_EXP_NAME": "masklab.dvc_experiment",
             "DVC_EXP_BASELINE_REV": "masklab.dvc_baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}
