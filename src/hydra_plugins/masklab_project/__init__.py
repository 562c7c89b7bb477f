"""Hydra search-path plugin: the user's project ``conf/`` before masklab's packaged configs.

Hydra scans ``hydra_plugins.*`` for every app in this environment, so the plugin acts only when
the search path already holds masklab's own conf dir (a ``masklab`` command, or a compose with
masklab's configs) and leaves every other Hydra app alone. The project conf goes immediately
before masklab's entry, so a project file shadows a package option of the same name. This module
is imported by Hydra's plugin scan: keep it free of masklab's heavier imports.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

from masklab.project import PACKAGE_CONF_DIR, project_conf_dir

PROVIDER = "masklab-project"


def _local_path(path: str) -> str | None:
    """A search-path entry as a real file-system path (``file://`` or bare), None for other schemes."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif "://" in path:
        return None
    return os.path.realpath(path)


class MasklabProjectSearchPath(SearchPathPlugin):
    """Prepend ``file://<project>/conf`` right before masklab's packaged conf dir, when both exist."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        package = os.path.realpath(PACKAGE_CONF_DIR)
        entry = next((e for e in search_path.get_path() if _local_path(e.path) == package), None)
        conf = project_conf_dir()
        if entry is None or conf is None or Path(conf).resolve() == Path(package):
            return
        if any(e.provider == PROVIDER for e in search_path.get_path()):
            return  # already there (a second scan of the same search path)
        search_path.prepend(PROVIDER, f"file://{conf}", anchor=SearchPathQuery(entry.provider, entry.path))
