"""Helpers shared by commands: showing configs, Hydra's run folder, committing a new data version."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.config import to_plain
from masklab.console import logger, result
from masklab.errors import UserError

log = logger(__name__)


def print_config(cfg: DictConfig, title: str) -> None:
    """Show the composed, resolved config as a rich tree (one branch per top-level group) on stderr, unless
    quiet: it says what is about to run, it is not the result (the run folder keeps it in .hydra/config.yaml)."""
    import logging

    import yaml
    from rich.syntax import Syntax
    from rich.tree import Tree

    from masklab.console import console_level, stderr_console

    if console_level() > logging.INFO:
        return

    tree = Tree(f"[bold]{title}[/bold]")
    for key, value in cfg.items():
        branch = tree.add(f"[bold cyan]{key}[/bold cyan]")
        plain = to_plain(value)
        text = yaml.safe_dump(plain, sort_keys=False) if isinstance(plain, dict | list) else str(plain)
        branch.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    stderr_console().print(tree)


def hydra_output_dir() -> str:
    """The run folder Hydra made for this command (``hydra.runtime.output_dir``): edges only."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def hydra_single_run() -> bool:
    """Whether this command runs as one job (not one of a -m/--multirun sweep's): the other ranks of a DDP training
    re-run the command line, and a sweep job's is not its own (the job after would also wait for ranks that left)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.RUN


def commit_data_version(root: Path) -> None:
    """``dvc commit`` the dataset folder when DVC tracks it (else say how to start tracking it): the
    manifest or masks changed on purpose, and this is the new data version."""
    import subprocess
    import sys

    from masklab.data.versioning import dvc_hash

    if dvc_hash(root) is None:
        log.info("DVC does not track %s: `dvc add %s` records this data version.", root, root)
        return
    # Commit at once: a `dvc repro` before it would check the recorded (older) version back out.
    done = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", str(root)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"`dvc commit {root}` failed: {done.stderr.strip() or done.stdout.strip()}")
    result(f"dvc commit {root}: new data version {dvc_hash(root)}. Next: `dvc repro`, then `dvc metrics diff`.",
           __name__)
