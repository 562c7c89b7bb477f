"""``import_dataset``: bring a folder of images and masks (or per-object masks) into the dataset format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from masklab.config import to_plain
from masklab.errors import UserError

IMPORT_FORMATS = ("folder", "instance_folders")


@dataclass
class Imported:
    """The imported dataset, what was written besides it (project configs), and data-check problems."""

    dataset: Any  # masklab.data.format.Dataset
    notes: list[str] = field(default_factory=list)
    problems: list[Any] = field(default_factory=list)


def import_dataset(cfg: DictConfig) -> Imported:
    """Import with a ``data_import`` config: ``format=folder`` (images + masks folders) or
    ``format=instance_folders`` (a folder per image with one mask file per object) into ``cfg.out``;
    unless ``write_conf=false``, also write ``conf/data/<name>.yaml`` (and the source preset) in the project.
    Nothing is written when the input has errors; an existing dataset is replaced only with ``overwrite``."""
    from masklab.data.check import check_dataset
    from masklab.data.import_folder import import_folder
    from masklab.data.import_instances import import_instance_folders
    from masklab.data.project_conf import check_config_name, write_project_configs

    check_config_name(cfg.name)
    if cfg.format not in IMPORT_FORMATS:
        raise UserError(f"format={cfg.format}: unknown; expected one of {list(IMPORT_FORMATS)}")
    for key in ("images", "masks") if cfg.format == "folder" else ("images",):  # instance_folders: masks inside
        if cfg[key] is None or not Path(cfg[key]).is_dir():
            raise UserError(f"{key}={cfg[key]}: folder does not exist; format={cfg.format} needs it")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise UserError(f"{out} already exists; pass overwrite=true to replace it")
    if cfg.format == "instance_folders":
        dataset = import_instance_folders(
            Path(cfg.images), out, class_name=cfg.class_name, split_mode=cfg.split_mode,
            fractions=to_plain(cfg.fractions), seed=cfg.seed, overwrite=cfg.overwrite,
        )
    else:
        dataset = import_folder(
            Path(cfg.images), Path(cfg.masks), out,
            classes=to_plain(cfg.classes), mask_mode=cfg.mask_mode, colors=to_plain(cfg.colors), snap=cfg.snap,
            threshold=cfg.threshold, remap=to_plain(cfg.remap), ignore_index=cfg.ignore_index,
            split_mode=cfg.split_mode, fractions=to_plain(cfg.fractions), split_lists=to_plain(cfg.split_lists),
            seed=cfg.seed, overwrite=cfg.overwrite,
        )
    result = Imported(dataset)
    if cfg.get("write_conf", True):
        settings = {key: to_plain(cfg[key]) for key in cfg if key != "paths"}  # paths.output_dir needs Hydra's runtime
        result.notes = list(write_project_configs(dataset, settings, cfg.paths.data_dir, bool(cfg.overwrite)))
    result.problems = check_dataset(out)
    return result
