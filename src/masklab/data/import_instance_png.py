"""Import images plus instance-id PNGs (one per image, paired by file stem) into the masklab format.

An instance-id PNG is single-channel, 8- or 16-bit: 0 = background, every other value one object
(the output of most cell-segmentation tools and of ``masklab predict`` for instance models). The
object classes come from an optional table file (YAML or JSON)::

    <stem>: {<instance id>: <class id>, ...}       e.g.  img_001: {1: 2, 2: 1, 7: 2}

with class names from ``classes`` (a list of {id, name, [color]}; classes 1..K derived as
``class_<k>`` without it); without a table every object gets the one object class ``classes`` names (beside
background 0), or else the class ``class_name`` (id 1).
Each image becomes a sample: the image bytes copied unchanged, one object per instance id (in id
order, each with its ``instance_id``), and a semantic mask (objects painted with their class).
Every problem is collected and raised together as :class:`ImportProblems`; nothing is written then.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from masklab.console import progress
from masklab.data.check import ProblemList
from masklab.data.classes import DEFAULT_IGNORE_INDEX, ClassInfo, ClassTable, default_color
from masklab.data.images import strict_image_loading, verify_file
from masklab.data.import_folder import (
    ImportProblems,
    _Pair,
    check_split_arguments,
    pair_files,
)
from masklab.data.import_instances import (
    checked_image_size,
    instance_class_table,
    object_size_problem,
    semantic_from_objects,
)
from masklab.data.manifest import Dataset
from masklab.data.splits import DEFAULT_FRACTIONS, check_fractions
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError

# One value per pixel; "1" is a binary mask (one object), "P" a palette PNG whose indices are the ids.
_ID_MODES = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I")
TABLE_FORMAT = "{<image stem>: {<instance id>: <class id>}}"


def _integer(value: object) -> int | None:
    """An integer, or the digits of one (JSON keys are strings); None for anything else (1.5, true, 'a')."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    return None


def _read_table(path: Path) -> dict[str, dict[int, int]]:
    """The instance-class table file as {stem: {instance id: class id}}; UserError naming the bad entry."""
    if not path.is_file():
        raise UserError(f"instance_classes={path}: file does not exist; expected YAML or JSON {TABLE_FORMAT}")
    try:
        raw = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"instance_classes={path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict):
        raise UserError(f"instance_classes={path}: found a {type(raw).__name__}; expected {TABLE_FORMAT}")
    table: dict[str, dict[int, int]] = {}
    for stem, ids in raw.items():
        if not isinstance(ids, dict):
            raise UserError(f"instance_classes={path}: '{stem}' maps to {ids!r:.60}; "
                            "expected {instance id: class id}")
        entry = {}
        for key, value in ids.items():
            instance_id, class_id = _integer(key), _integer(value)
            if instance_id is None or class_id is None:
                raise UserError(f"instance_classes={path}: '{stem}': {key!r}: {value!r} is not "
                                "<instance id>: <class id> (integers)")
            if instance_id <= 0 or not 0 < class_id < DEFAULT_IGNORE_INDEX:
                raise UserError(f"instance_classes={path}: '{stem}': {key}: {value}; expected instance id >= 1 "
                                f"and class id >= 1, at most {DEFAULT_IGNORE_INDEX - 1} (0 is background, "
                                f"{DEFAULT_IGNORE_INDEX} ignore_index: class ids are 8-bit mask values)")
            entry[instance_id] = class_id
        table[str(stem)] = entry
    return table


def _class_table(classes: list[dict] | None, used: set[int], source: Path) -> ClassTable:
    """Background plus thing classes: ``classes`` (every id but 0 made a thing) or class_1..class_K."""
    if classes is not None:
        raw = {"classes": [{**c, "thing": str(c.get("id")) != "0"} for c in classes]}
        table = ClassTable.from_dict(raw, source="classes argument")
        unknown = sorted(used - set(table.ids[1:]))
        if unknown:
            raise UserError(f"instance_classes={source}: class ids {unknown} are not in classes "
                            f"(ids {table.ids[1:]}, 0 = background)")
        return table
    top = max(used, default=1)
    return ClassTable((ClassInfo(0, "background", default_color(0)),
                       *(ClassInfo(i, f"class_{i}", default_color(i), True) for i in range(1, top + 1))))


def _read_ids(path: Path, problems: ProblemList) -> np.ndarray | None:
    """(H, W) int64 instance ids of one mask file, or None after adding a problem."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        problems.error(path, "lossy mask", "JPEG instance-id mask (compression changes ids)", "a PNG or TIFF")
        return None
    try:
        verify_file(path)
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            ids = np.asarray(im).astype(np.int64) if mode in _ID_MODES else None
    except Exception as exc:
        problems.error(path, "unreadable mask", f"{type(exc).__name__}: {exc}", "a single-channel instance-id PNG")
        return None
    if ids is None:
        problems.error(path, "colour instance mask", f"mode {mode}",
                     "a single-channel PNG of instance ids (8- or 16-bit, 0 = background)")
    return ids


def import_instance_pngs(
    images: str | Path,
    masks: str | Path,
    out: str | Path,
    *,
    instance_classes: str | Path | None = None,
    classes: list[dict] | None = None,
    class_name: str = "object",
    split_mode: str = "random",
    fractions: Mapping[str, float] | None = DEFAULT_FRACTIONS,
    split_lists: Mapping[str, str | Path] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Dataset:
    """Import ``images`` and the instance-id PNGs in ``masks`` (paired by stem) into ``out``.

    instance_classes: the table file (module docstring), with ``classes`` naming its class ids;
    without it every object is class ``class_name`` (id 1). split_mode as for format=folder:
    random (``fractions``, ``seed``), subfolders, lists (``split_lists``) or none. Raises
    :class:`ImportProblems` listing every problem (nothing is written then).
    """
    images, masks, out = Path(images), Path(masks), Path(out)
    check_split_arguments(split_mode, split_lists)
    fracs = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    for folder, key in ((images, "images"), (masks, "masks")):
        if not folder.is_dir():
            raise UserError(f"{key}={folder}: folder does not exist")
    table_file = None if instance_classes is None else Path(instance_classes)
    id_classes, class_table = _classes(table_file, classes, class_name)

    with DatasetWriter(out, class_table, overwrite=overwrite) as writer:
        problems = ProblemList()
        pairs = pair_files(images, masks, split_mode, fracs, split_lists, seed, problems)
        if id_classes is not None:
            for stem in sorted(id_classes.keys() - {p.id for p in pairs}):
                problems.error(table_file, "unknown stem", f"'{stem}'", f"the stem of an image/mask pair in {masks}")
        with strict_image_loading():
            for p in progress(sorted(pairs, key=lambda p: p.id), f"Importing {masks.name}"):
                found = _pair_objects(p, id_classes, table_file, problems)
                if found is None or problems:  # once anything failed the import is lost; keep checking
                    continue
                ids, objects = found
                semantic = semantic_from_objects(ids.shape, [(o["class_id"], o["mask"]) for o in objects],
                                                 class_table.ignore_index)
                writer.add(p.id, p.image, semantic, p.split or "train", objects=objects)
        if problems:
            raise ImportProblems(list(problems), f"{images} + {masks}")
        return writer.commit()


def _classes(table_file: Path | None, classes: list[dict] | None,
             class_name: str) -> tuple[dict[str, dict[int, int]] | None, ClassTable]:
    """The instance-class table ({stem: {instance id: class id}}, None without a table file) and the class
    table: ``classes`` naming the table's class ids; without a table, ``classes`` naming background and the one
    object class (id 1: class ids run 0..K), or else the one class ``class_name`` (id 1)."""
    if table_file is None and classes is not None:
        table = _class_table(classes, set(), Path("classes"))
        things = table.ids[1:]
        if len(things) != 1:
            raise UserError(f"classes= names {len(things)} object classes (ids {things}) and no instance_classes= "
                            "table says which object is which: name background (id 0) and the one object class, "
                            "or give instance_classes=<YAML/JSON {stem: {instance id: class id}}>")
        return None, table
    if table_file is None:
        return None, instance_class_table(class_name)
    id_classes = _read_table(table_file)
    used = {c for entry in id_classes.values() for c in entry.values()}
    return id_classes, _class_table(classes, used, table_file)


def _pair_objects(p: _Pair, id_classes: dict[str, dict[int, int]] | None, table_file: Path | None,
                  problems: ProblemList) -> tuple[np.ndarray, list[dict]] | None:
    """(instance-id map, its objects) of one image/mask pair, or None after adding problems (an image or mask
    that does not read, sizes that differ, an instance id that is too small or has no class)."""
    try:
        width, height = checked_image_size(p.image)
    except Exception as exc:
        problems.error(p.image, "unreadable image", f"{type(exc).__name__}: {exc}", "a readable image")
        width = height = None
    ids = _read_ids(p.mask, problems)
    if ids is None or width is None:
        return None
    if ids.shape != (height, width):
        problems.error(p.mask, "size mismatch", f"{ids.shape[1]}x{ids.shape[0]}", f"{width}x{height} (image)")
        return None
    objects = _objects(p.id, p.mask, ids, id_classes, table_file, problems)
    return None if objects is None else (ids, objects)


def _objects(stem: str, path: Path, ids: np.ndarray, id_classes: dict[str, dict[int, int]] | None,
             table_file: Path | None, problems: ProblemList) -> list[dict] | None:
    """One object per instance id of an (H, W) id map, in id order (class 1 without a table); None after adding
    problems."""
    values, counts = np.unique(ids[ids != 0], return_counts=True)
    found = len(problems)
    if (values < 0).any():
        problems.error(path, "negative instance id", f"ids {values[values < 0][:5].tolist()}", "ids >= 0")
    for value, count in zip(values.tolist(), counts.tolist()):
        too_small = object_size_problem(count)
        if too_small:
            problems.error(path, too_small[0], f"instance id {value}: {count} px", too_small[1])
    classes = {} if id_classes is None else id_classes.get(stem, {})
    if id_classes is not None:
        missing = [v for v in values.tolist() if v not in classes]
        if missing:
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            problems.error(path, "instance id without a class", f"ids {missing[:10]}{more}",
                         f"a class for each id under '{stem}' in {table_file}")
    if len(problems) > found:
        return None
    return [{"class_id": classes.get(v, 1), "mask": ids == v, "instance_id": v} for v in values.tolist()]
