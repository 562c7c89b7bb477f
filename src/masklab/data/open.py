"""Open the dataset a config names: synthesize the built-in one on first use, check it, load it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.config import config_options, to_plain
from masklab.console import logger
from masklab.data.manifest import MANIFEST_FILE, Dataset, load_dataset
from masklab.errors import UserError


def synthesizes_on_first_use(data_cfg: DictConfig) -> bool:
    """Whether a missing ``data_cfg.root`` is synthesized: only for the dataset the ``synth`` settings
    were written for (``synthesize_if_missing`` names it), so a mistyped ``data.name`` is an error
    rather than a new dataset of shapes."""
    return bool(data_cfg.get("synth")) and data_cfg.get("synthesize_if_missing") == data_cfg.get("name")


def existing_datasets(data_dir: Path) -> list[str]:
    """Folders under ``data_dir`` that hold a masklab dataset (a manifest), sorted."""
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if (p / MANIFEST_FILE).is_file())


def missing_dataset_error(data_cfg: DictConfig) -> UserError:
    """One line naming the missing dataset and listing those that exist, on disk and as configs."""
    root = Path(data_cfg.root)
    on_disk = existing_datasets(root.parent)
    return UserError(
        f"dataset '{data_cfg.name}' not found: {root} does not exist. Datasets in {root.parent}: "
        f"{', '.join(on_disk) or 'none'}; data configs (data=<name>): {', '.join(config_options('data'))}. "
        f"Import one with `masklab data import name={data_cfg.name} images=<dir> masks=<dir>`")


def open_dataset(data_cfg: DictConfig, cache_dir: str | Path, check: bool = True) -> Dataset:
    """Load ``data_cfg.root``; synthesize the built-in dataset on first use (see
    :func:`synthesizes_on_first_use`); any other missing dataset is a UserError listing those that
    exist. With ``check``, run the (cached) dataset check and refuse a dataset with errors."""
    from masklab.data.check import check_cached, format_problems

    root = Path(data_cfg.root)
    if not root.exists():
        if not synthesizes_on_first_use(data_cfg):
            raise missing_dataset_error(data_cfg)
        from masklab.data.synth import synthesize

        logger(__name__).info("Dataset %s not found: synthesizing it (%d images).", root, data_cfg.synth.count)
        synthesize(root, **to_plain(data_cfg.synth))
    dataset = load_dataset(root)
    if check:
        problems = check_cached(root, Path(cache_dir) / "data_check")
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise UserError(f"dataset {root} has {len(errors)} error(s); fix them or set check_data=false:\n"
                            + format_problems(problems))
    return dataset
