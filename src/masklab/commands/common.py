"""Helpers shared by commands: opening the configured dataset, printing configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from masklab.data.format import Dataset, load_dataset
from masklab.errors import UserError


def to_plain(node: Any) -> Any:
    """A resolved DictConfig/ListConfig as plain dicts and lists (identity for plain values)."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def open_dataset(data_cfg: DictConfig, cache_dir: str | Path, check: bool = True) -> Dataset:
    """Load ``data_cfg.root``; synthesize it first when it is missing and ``data_cfg.synth`` is set;
    with ``check``, run the (cached) dataset check and refuse a dataset with errors."""
    from masklab.data.check import check_cached, format_problems

    root = Path(data_cfg.root)
    if not root.exists() and data_cfg.get("synth"):
        from masklab.data.synth import synthesize

        print(f"Dataset {root} not found: synthesizing it ({data_cfg.synth.count} images).")
        synthesize(root, **to_plain(data_cfg.synth))
    dataset = load_dataset(root)
    if check:
        problems = check_cached(root, Path(cache_dir) / "data_check")
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise UserError(f"dataset {root} has {len(errors)} error(s); fix them or set check_data=false:\n"
                            + format_problems(problems))
    return dataset


def print_config(cfg: DictConfig, title: str) -> None:
    """Print the composed, resolved config as a rich tree (one branch per top-level group)."""
    import yaml
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree(f"[bold]{title}[/bold]")
    for key, value in cfg.items():
        branch = tree.add(f"[bold cyan]{key}[/bold cyan]")
        plain = to_plain(value)
        text = yaml.safe_dump(plain, sort_keys=False) if isinstance(plain, dict | list) else str(plain)
        branch.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    Console().print(tree)
