"""masklab's Hydra launchers: hydra-submitit-launcher's SLURM and local launchers, with masklab's checks.

masklab's ``hydra/launcher=submitit_slurm`` and ``submitit_local`` presets (``masklab/conf/hydra/launcher/``) name
these classes. They launch as the plugin does; :mod:`masklab.jobs` adds the checks before submitting
and the report after (one line per failure, the job's exit status). Hydra instantiates a launcher only from the
``hydra_plugins`` package, hence this module. Hydra's plugin scan imports it for every masklab command: it
imports nothing of masklab at import time, and defines nothing when the team extra (the plugin) is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _LocalBase
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SlurmBase
except ImportError:  # hydra-submitit-launcher is not installed (`pip install 'masklab[team]'`)
    _LocalBase = _SlurmBase = None


class _MasklabJobs:
    """What both launchers add: :func:`masklab.jobs.launch_jobs` around the submission (in this
    process) and :func:`masklab.jobs.run_job` around each job (in the job's process)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from masklab.jobs import launch_jobs

        return launch_jobs(self, super().launch, job_overrides, initial_job_idx)  # type: ignore[misc]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from masklab.jobs import run_job

        return run_job(super().__call__, *args, **kwargs)  # type: ignore[misc]


if _SlurmBase is not None and _LocalBase is not None:

    class SlurmLauncher(_MasklabJobs, _SlurmBase):
        """SLURM jobs through sbatch (``hydra/launcher=submitit_slurm``)."""

    class LocalLauncher(_MasklabJobs, _LocalBase):
        """Jobs as processes on this machine, run at the same time (``hydra/launcher=submitit_local``)."""
