"""The scratch project a benchmark runs in: its folder as masklab's project root and working directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def enter_scratch_project(workdir: Path) -> None:
    """Create ``workdir`` and make it the project every masklab call in this process sees (cwd and
    ``MASKLAB_ROOT``); datasets come from ../shared unless ``MASKLAB_SHARED`` says otherwise."""
    os.environ.setdefault("MASKLAB_SHARED", str(REPO.parent / "shared"))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["MASKLAB_ROOT"] = str(workdir)
    os.chdir(workdir)
