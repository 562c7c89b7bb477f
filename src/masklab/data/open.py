"""Open the dataset a config names: synthesize the built-in one on first use, check it, load it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.config import to_plain
from masklab.data.format import Dataset, load_dataset
from masklab.errors import UserError


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
