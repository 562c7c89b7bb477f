"""``import_dataset``: bring images with masks, per-object masks, COCO JSON or instance-id PNGs into the dataset
format; ``export_dataset``: write a dataset's objects as COCO JSON."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from masklab.config import to_plain
from masklab.errors import UserError

if TYPE_CHECKING:
    from masklab.data.export_coco import CocoExport

IMPORT_FORMATS = ("folder", "instance_folders", "coco", "instance_png")
EXPORT_FORMATS = ("coco",)
# The folders each import format reads (format=coco reads annotations= files as well).
_FOLDER_KEYS = {"folder": ("images", "masks"), "instance_folders": ("images",), "coco": ("images",),
                "instance_png": ("images", "masks")}


@dataclass
class Imported:
    """The imported dataset, what was written besides it (project configs), and data-check problems."""

    dataset: Any  # masklab.data.manifest.Dataset
    notes: list[str] = field(default_factory=list)
    problems: list[Any] = field(default_factory=list)
    # unlabeled= alone: images added in place to an existing dataset (a new data version), not a new import
    added_to_existing: bool = False


def import_dataset(cfg: DictConfig) -> Imported:
    """Import with a ``data_import`` config into ``cfg.out``: ``format=folder`` (images + masks folders),
    ``instance_folders`` (a folder per image with one mask file per object), ``coco`` (COCO JSON
    ``annotations=`` + ``images=``) or ``instance_png`` (images + instance-id PNGs); unless
    ``write_conf=false``, also write ``conf/data/<name>.yaml`` (and the source preset) in the project.
    ``unlabeled=<dir>``: its images join split ``pool`` (no labels; :mod:`masklab.data.pool`), of the new
    dataset, or, without ``images=``, of the existing dataset at ``cfg.out`` (in place).
    Nothing is written when the input has errors; an existing dataset is replaced only with ``overwrite``."""
    from masklab.data.check import check_dataset
    from masklab.data.manifest import load_dataset
    from masklab.data.project_conf import check_config_name, write_project_configs
    from masklab.files import replace_folder

    check_config_name(cfg.name)
    unlabeled = cfg.get("unlabeled")
    if cfg.images is None and unlabeled:
        return _add_unlabeled(Path(cfg.out), Path(unlabeled))
    if cfg.format not in IMPORT_FORMATS:
        raise UserError(f"format={cfg.format}: unknown; expected one of {list(IMPORT_FORMATS)}")
    for key in _FOLDER_KEYS[cfg.format]:
        if cfg[key] is None or not Path(cfg[key]).is_dir():
            raise UserError(f"{key}={cfg[key]}: folder does not exist; format={cfg.format} needs it")
    if cfg.format == "coco" and not cfg.get("annotations"):
        raise UserError("format=coco needs annotations=<file.json> (or {train: a.json, val: b.json} with "
                        "split_mode=files)")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise UserError(f"{out} already exists; pass overwrite=true to replace it (or only unlabeled=<dir>, "
                        "without images=, to add unlabelled images to it)")
    # With unlabeled=, the labelled import and the pool images go in together: built beside the dataset, then put
    # in its place in one step (files.replace_folder), so a problem with either leaves nothing behind.
    target = out.with_name(f".{out.name}.import-{os.getpid()}") if unlabeled else out
    try:
        dataset = _import_format(cfg, target)
        notes = [_pool_note(target, unlabeled)] if unlabeled else []
        if target != out:
            replace_folder(target, out)
            dataset = load_dataset(out)
    except BaseException:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
        raise
    result = Imported(dataset, notes)
    if cfg.get("write_conf", True):
        settings = {str(key): to_plain(cfg[key]) for key in cfg if key != "paths"}  # paths.output_dir: Hydra's runtime
        result.notes += list(write_project_configs(dataset, settings, cfg.paths.data_dir, bool(cfg.overwrite)))
    result.problems = check_dataset(out)
    return result


def _import_format(cfg: DictConfig, out: Path) -> Any:
    """The dataset ``cfg.format``'s importer writes at ``out`` (a Dataset)."""
    from masklab.data.import_coco import import_coco
    from masklab.data.import_folder import import_folder
    from masklab.data.import_instance_png import import_instance_pngs
    from masklab.data.import_instances import import_instance_folders

    if cfg.format == "instance_folders":
        return import_instance_folders(
            Path(cfg.images), out, class_name=cfg.class_name, split_mode=cfg.split_mode,
            fractions=to_plain(cfg.fractions), seed=cfg.seed, overwrite=cfg.overwrite,
        )
    elif cfg.format == "coco":
        return import_coco(
            to_plain(cfg.annotations), Path(cfg.images), out, split_mode=cfg.split_mode,
            fractions=to_plain(cfg.fractions), seed=cfg.seed, overwrite=cfg.overwrite,
        )
    elif cfg.format == "instance_png":
        return import_instance_pngs(
            Path(cfg.images), Path(cfg.masks), out, instance_classes=cfg.get("instance_classes"),
            classes=to_plain(cfg.classes), class_name=cfg.class_name, split_mode=cfg.split_mode,
            fractions=to_plain(cfg.fractions), split_lists=to_plain(cfg.split_lists), seed=cfg.seed,
            overwrite=cfg.overwrite,
        )
    else:
        return import_folder(
            Path(cfg.images), Path(cfg.masks), out,
            classes=to_plain(cfg.classes), mask_mode=cfg.mask_mode, colors=to_plain(cfg.colors), snap=cfg.snap,
            threshold=cfg.threshold, remap=to_plain(cfg.remap), ignore_index=cfg.ignore_index,
            split_mode=cfg.split_mode, fractions=to_plain(cfg.fractions), split_lists=to_plain(cfg.split_lists),
            seed=cfg.seed, overwrite=cfg.overwrite,
        )


def _add_unlabeled(out: Path, unlabeled: Path) -> Imported:
    """``unlabeled=`` without ``images=``: add its images to the existing dataset at ``out`` (split pool)."""
    from masklab.data.check import check_dataset
    from masklab.data.manifest import MANIFEST_FILE, load_dataset

    if not (out / MANIFEST_FILE).is_file():
        raise UserError(f"unlabeled={unlabeled} without images=: adds images to an existing dataset, and {out} holds "
                        "none; import the labelled images with images=<dir> (unlabeled= may come along)")
    note = _pool_note(out, unlabeled)
    return Imported(load_dataset(out), [note], check_dataset(out), added_to_existing=True)


def _pool_note(out: Path, unlabeled: str | Path) -> str:
    """Add ``unlabeled``'s images to the dataset at ``out`` (:func:`masklab.data.pool.add_unlabeled`, which checks
    every image before it writes anything); a line saying what it did."""
    from masklab.data.pool import add_unlabeled

    done = add_unlabeled(out, unlabeled)
    kept = f"; {len(done.skipped)} already there" if done.skipped else ""
    return f"added {len(done.added)} unlabelled image(s) from {unlabeled} to split pool{kept}"


def export_dataset(cfg: DictConfig) -> CocoExport:
    """Export with a ``data_export`` config: the dataset ``cfg.data`` (labeled samples of ``cfg.split``, or
    all) as ``format=coco`` JSON at ``cfg.out``, written atomically; an existing file is replaced only
    with ``overwrite``. file_name entries are relative to ``<dataset>/images`` unless ``absolute_paths``."""
    from masklab.data.export_coco import export_coco
    from masklab.data.open import open_dataset

    if cfg.format not in EXPORT_FORMATS:
        raise UserError(f"format={cfg.format}: unknown; expected one of {list(EXPORT_FORMATS)}")
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    return export_coco(dataset.root, cfg.out, split=cfg.split, absolute_paths=bool(cfg.absolute_paths),
                       overwrite=bool(cfg.overwrite))
