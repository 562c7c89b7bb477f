"""The user's project: the folder masklab runs in, and its own ``conf/``.

A project is the working directory (or ``$MASKLAB_ROOT`` when set, as for ``paths.root_dir``).
Its ``conf/`` is searched before masklab's packaged configs, and its root is importable, so a
``conf/model/<name>.yaml`` whose ``_target_`` names a module of the project works like a built-in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_CONF = "conf"
# masklab's own configs, shipped inside the package; searched after the project's conf/.
PACKAGE_CONF_DIR = Path(__file__).parent / "conf"


def project_root() -> Path:
    """The project folder: ``$MASKLAB_ROOT`` if set, else the current directory (absolute)."""
    return Path(os.environ.get("MASKLAB_ROOT") or ".").resolve()


def project_conf_dir() -> Path | None:
    """``<project>/conf`` when it exists (searched before the package's configs), else None."""
    conf = project_root() / PROJECT_CONF
    return conf if conf.is_dir() else None


def make_project_importable() -> None:
    """Put the project root on ``sys.path`` so ``_target_: my_models.Net`` imports from the project."""
    root = str(project_root())
    if root not in sys.path:
        sys.path.insert(0, root)
