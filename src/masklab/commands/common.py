"""Helpers shared by commands: showing configs, Hydra's run folder."""

from __future__ import annotations

from omegaconf import DictConfig

from masklab.config import to_plain


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
