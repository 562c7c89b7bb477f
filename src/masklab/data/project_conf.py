"""The configs an import leaves in the user's project, so the data can be used by name at once.

``masklab data import name=roads ...`` writes ``conf/data/roads.yaml`` (``masklab train data=roads``)
and ``conf/source/roads.yaml`` (how to import it again: ``masklab data import source=roads``, or
``source: roads`` in params.yaml for the DVC pipeline's ``prepare`` stage). A config of that name
that already exists, the project's or masklab's own, is kept: the user may have edited it.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from masklab.data.classes import CLASSES_FILE
from masklab.data.manifest import Dataset
from masklab.errors import UserError
from masklab.files import atomic_write
from masklab.project import PACKAGE_CONF_DIR, PROJECT_CONF, project_root

# What models downsample by (smp encoders: 5 stages of 2x): sizes must be multiples of it.
SIZE_MULTIPLE = 32
# Short side aimed at: enough detail for most segmentation data at CPU-friendly cost.
TARGET_SHORT_SIDE = 256
DEFAULT_BATCH_SIZE = 8
# A config name is a file name and a Hydra option: no path separators, no spaces.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Keys of the data_import config that are how-to-import settings (the rest: where, whether to replace).
NOT_SOURCE_KEYS = frozenset({"task_name", "paths", "hydra", "out", "overwrite", "write_conf"})
PATH_KEYS = ("images", "masks", "annotations", "instance_classes")


def check_config_name(name: str) -> None:
    """Refuse a dataset name that cannot be a file and option name (``conf/data/<name>.yaml``)."""
    if not NAME_PATTERN.fullmatch(str(name)):
        raise UserError(f"name={name!r}: expected letters, digits, '_', '-' or '.' (it names data/<name> and "
                         f"conf/data/<name>.yaml)")


def suggest_image_size(sizes: Iterable[tuple[int, int]]) -> int | list[int]:
    """A training size for images of ``sizes`` ((height, width) px each): the median image's aspect
    ratio, its short side brought to ``TARGET_SHORT_SIDE`` or below (never upscaled past the median),
    both sides multiples of ``SIZE_MULTIPLE``. An int when square, else ``[height, width]``."""
    sizes = list(sizes)
    if not sizes:
        raise ValueError("no image sizes to derive data.image_size from")
    height = statistics.median(h for h, _ in sizes)
    width = statistics.median(w for _, w in sizes)
    short = min(height, width)
    side = max(SIZE_MULTIPLE, int(min(TARGET_SHORT_SIDE, short) // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    other = max(SIZE_MULTIPLE, round(side * max(height, width) / short / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    if side == other:
        return side
    return [side, other] if height <= width else [other, side]


def _portable(path: str | Path) -> str:
    """``path`` relative to the project root when inside it (so a clone finds it), else absolute."""
    absolute = Path(path).resolve()
    root = project_root()
    return os.path.relpath(absolute, root) if absolute.is_relative_to(root) else str(absolute)


def _yaml_lines(values: Mapping[str, Any]) -> str:
    """One ``key: value`` line per key, nested values in flow style (``[64, 96]``), as a person writes them."""

    def one(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000)
        return text.removesuffix("\n...\n").strip()

    return "".join(f"{key}: {one(value)}\n" for key, value in values.items())


def data_config_text(dataset: Dataset, name: str, root: str, source: str) -> str:
    """``conf/data/<name>.yaml`` for ``dataset``; ``root`` as it should appear in the file."""
    sizes = [(s.height, s.width) for s in dataset.samples]
    image_size = suggest_image_size(sizes)
    classes = dataset.class_table.classes
    names = ", ".join(f"{c.id}={c.name}" for c in classes)
    median = f"{statistics.median(h for h, _ in sizes):g}x{statistics.median(w for _, w in sizes):g}"
    header = (
        f"# data={name}: written by `masklab data import` from {source} ({len(sizes)} images, median HxW {median}).\n"
        f"# Edit freely: an import of '{name}' replaces this file only with overwrite=true.\n"
        f"# {len(classes)} classes (for information; training reads {Path(dataset.root) / CLASSES_FILE}): {names}\n")
    size_note = (f"# [height, width] (or one int when square): multiples of {SIZE_MULTIPLE}, the median image's "
                 f"aspect, short side <= {TARGET_SHORT_SIDE}\n")
    return (header + _yaml_lines({"name": name, "root": root}) + size_note
            + _yaml_lines({"image_size": image_size, "batch_size": DEFAULT_BATCH_SIZE, "num_workers": 0,
                          "synth": None}))


def source_config_text(settings: Mapping[str, Any], name: str) -> str:
    """``conf/source/<name>.yaml``: the import settings, so the same import can run again."""
    values = {"name": name, **{k: v for k, v in settings.items() if k not in NOT_SOURCE_KEYS and k != "name"}}
    for key in PATH_KEYS:
        if isinstance(values.get(key), Mapping):  # e.g. annotations={train: a.json, val: b.json}
            values[key] = {k: _portable(v) for k, v in values[key].items()}
        elif values.get(key):
            values[key] = _portable(values[key])
    return ("# @package _global_\n"
            f"# source={name}: how data/{name} was imported. `masklab data import source={name}` repeats it; so does\n"
            f"# `source: {name}` in params.yaml (the DVC pipeline's prepare stage). Written by `masklab data import`.\n"
            + _yaml_lines(values))


def _write_once(group: str, name: str, text: str, overwrite: bool) -> str:
    """Write ``conf/<group>/<name>.yaml`` in the project unless a config of that name exists; say what was done."""
    path = project_root() / PROJECT_CONF / group / f"{name}.yaml"
    packaged = PACKAGE_CONF_DIR / group / f"{name}.yaml"
    if not path.exists() and packaged.exists():
        return f"{group}={name}: masklab's own {packaged.name} describes it; nothing written"
    if path.exists() and not overwrite:
        return f"{group}={name}: kept the existing {path} (overwrite=true replaces it)"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return f"wrote {path}"


def write_project_configs(dataset: Dataset, settings: Mapping[str, Any], data_dir: str | Path,
                          overwrite: bool) -> list[str]:
    """Write ``conf/data/<name>.yaml`` and ``conf/source/<name>.yaml`` for an imported ``dataset``.

    ``settings``: the resolved data_import config (name, images, masks, mask options, out);
    ``data_dir``: ``paths.data_dir``, so a dataset in its usual place keeps a portable
    ``root: ${paths.data_dir}/${data.name}``. Returns one line per file: written or kept, and why.
    """
    name = str(settings["name"])
    out = Path(settings["out"])
    usual = out.resolve() == (Path(data_dir) / name).resolve()
    root = "${paths.data_dir}/${data.name}" if usual else _portable(out)
    source = str(settings.get("images") or settings.get("source") or out)
    return [_write_once("data", name, data_config_text(dataset, name, root, source), overwrite),
            _write_once("source", name, source_config_text(settings, name), overwrite)]
