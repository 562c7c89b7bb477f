"""`masklab init <dir> [--force]`: lay out a new project (conf/, data/, experiments/, tests/, DVC files).

The files come from ``masklab/project_template/`` (package data). A template name starting with
``dot-`` becomes a dotfile (``dot-gitignore`` -> ``.gitignore``): packaging globs skip dotfiles.
Existing files are never replaced, and a folder that is not empty is refused unless ``--force``.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from masklab.console import logger, result
from masklab.errors import UserError
from masklab.files import atomic_write

USAGE = ("usage: masklab init <dir> [--force]\n"
         "Creates a masklab project in <dir>: conf/ (your configs, searched before masklab's), data/, experiments/,\n"
         "tests/, dvc.yaml, params.yaml, .gitignore, README.md. --force (or force=true) adds the missing files to a\n"
         "folder that is not empty; existing files are always kept.")
# Folders a project starts with, besides those the template's files create.
FOLDERS = ("conf/data", "conf/model", "conf/source", "data", "experiments")
DOT_PREFIX = "dot-"


def template_files(folder: Traversable | None = None, prefix: str = "") -> dict[str, Traversable]:
    """Relative destination path -> template file, for every file of the project template."""
    folder = folder or files("masklab").joinpath("project_template")
    found: dict[str, Traversable] = {}
    for item in folder.iterdir():
        if item.name == "__pycache__":
            continue
        name = "." + item.name[len(DOT_PREFIX):] if item.name.startswith(DOT_PREFIX) else item.name
        if item.is_dir():
            found.update(template_files(item, f"{prefix}{name}/"))
        else:
            found[f"{prefix}{name}"] = item
    return found


def init_project(target: Path, force: bool = False) -> tuple[list[str], list[str]]:
    """Create the project layout in ``target``; returns (files written, existing files kept), relative paths."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder; expected a new or empty folder for the project")
    if target.is_dir() and not force:
        present = sorted(p.name for p in target.iterdir())
        if present:
            shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
            raise UserError(f"{target}: folder is not empty (holds {shown}); expected a new or empty folder. "
                            "--force adds the missing project files and keeps every existing one")
    written, kept = [], []
    for rel, source in sorted(template_files().items()):
        dest = target / rel
        if dest.exists():
            kept.append(rel)
            continue
        data = source.read_bytes()
        atomic_write(dest, lambda tmp, data=data: tmp.write_bytes(data))
        written.append(rel)
    for folder in FOLDERS:
        (target / folder).mkdir(parents=True, exist_ok=True)
    return written, kept


def main(args: list[str]) -> None:
    """Entry point from ``masklab init ...`` (a plain command: it composes no config)."""
    if not args or any(a in ("-h", "--help", "help") for a in args):
        print(USAGE)
        return
    force = any(a in ("--force", "force=true") for a in args)
    rest = [a for a in args if a not in ("--force", "force=true", "force=false")]
    try:
        if len(rest) != 1 or rest[0].startswith("-"):
            raise UserError(f"arguments {rest}: expected one folder (and --force)\n{USAGE}")
        target = Path(rest[0])
        written, kept = init_project(target, force)
    except UserError as exc:
        print(f"masklab init: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    result(f"Created the masklab project {target}: {len(written)} file(s)"
           + (f"; kept {len(kept)} existing: {', '.join(kept)}" if kept else ""), __name__)
    logger(__name__).info("Next: cd %s && masklab data import name=<name> images=<dir> masks=<dir> (see %s)",
                          target, target / "README.md")
