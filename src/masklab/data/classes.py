"""The class table of a dataset (``classes.yaml``): class ids, names, display colours, thing/stuff, ignore_index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from masklab.data.errors import DatasetFormatError

CLASSES_FILE = "classes.yaml"
DEFAULT_IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassInfo:
    """One class: its pixel value in masks, a name, an RGB display colour and whether it is a
    'thing' (countable objects that instance tasks separate) rather than 'stuff'. ``coco_id`` and
    ``supercategory``: the COCO category it was imported from, so an export restores it."""

    id: int
    name: str
    color: tuple[int, int, int]
    thing: bool = False
    coco_id: int | None = None
    supercategory: str | None = None


@dataclass(frozen=True)
class ClassTable:
    """All classes of a dataset plus the mask value that means 'do not score this pixel'."""

    classes: tuple[ClassInfo, ...]
    ignore_index: int = DEFAULT_IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def thing_ids(self) -> list[int]:
        """Ids of the instance ('thing') classes."""
        return [c.id for c in self.classes if c.thing]

    @property
    def object_class_ids(self) -> list[int]:
        """The classes instance objects belong to: those marked ``thing: true``; a table that marks none (a v1
        dataset with instance maps, such as the synthetic one) counts every class but background (id 0) and
        ignore."""
        return self.thing_ids or [c.id for c in self.classes if c.id not in (0, self.ignore_index)]

    def palette(self) -> np.ndarray:
        """(num_classes, 3) uint8 colours indexed by class id."""
        return np.array([c.color for c in self.classes], dtype=np.uint8)

    def to_dict(self) -> dict:
        return {
            "ignore_index": self.ignore_index,
            # "thing" and the COCO keys only when set, so a v1 classes.yaml is written back byte for byte.
            "classes": [
                {"id": c.id, "name": c.name, "color": list(c.color), **({"thing": True} if c.thing else {}),
                 **({"coco_id": c.coco_id} if c.coco_id is not None else {}),
                 **({"supercategory": c.supercategory} if c.supercategory is not None else {})}
                for c in self.classes
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict, source: str = "classes.yaml") -> ClassTable:
        """Validate and build a table; class ids must be exactly 0..N-1 so they index tensors."""
        if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list | tuple):
            raise DatasetFormatError(f"{source}: expected a mapping with a 'classes' list, found {raw!r:.80}")
        classes = []
        for i, entry in enumerate(raw["classes"]):
            try:
                if not isinstance(entry, dict):
                    raise TypeError(f"{type(entry).__name__}, not a mapping")
                cid, name = int(entry["id"]), str(entry["name"])
                color = tuple(int(v) for v in entry.get("color", default_color(cid)))
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetFormatError(f"{source}: class entry {i} is {entry!r}; expected id, name, color") from exc
            if len(color) != 3 or not all(0 <= v <= 255 for v in color):
                raise DatasetFormatError(f"{source}: class '{name}' colour {list(color)} is not three values 0..255")
            thing = entry.get("thing", False)
            if not isinstance(thing, bool):
                raise DatasetFormatError(f"{source}: class '{name}' thing is {thing!r}; expected true or false")
            coco_id, supercategory = entry.get("coco_id"), entry.get("supercategory")
            if coco_id is not None and (not isinstance(coco_id, int) or isinstance(coco_id, bool)):
                raise DatasetFormatError(f"{source}: class '{name}' coco_id is {coco_id!r}; expected an integer")
            if supercategory is not None and not isinstance(supercategory, str):
                raise DatasetFormatError(
                    f"{source}: class '{name}' supercategory is {supercategory!r}; expected a string")
            classes.append(ClassInfo(cid, name, color, thing, coco_id, supercategory))  # type: ignore[arg-type]
        ids = sorted(c.id for c in classes)
        if ids != list(range(len(classes))):
            raise DatasetFormatError(f"{source}: class ids are {ids}; expected 0..{len(classes) - 1} without gaps")
        ignore = raw.get("ignore_index", DEFAULT_IGNORE_INDEX)
        if not isinstance(ignore, int) or isinstance(ignore, bool):
            raise DatasetFormatError(f"{source}: ignore_index is {ignore!r:.40}; expected an integer (255 by default)")
        if ignore in ids:
            raise DatasetFormatError(f"{source}: ignore_index {ignore} is also a class id")
        return cls(tuple(sorted(classes, key=lambda c: c.id)), ignore)


def default_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable display colour for a class id (black for background id 0)."""
    if class_id == 0:
        return (0, 0, 0)
    base = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
    return base[(class_id - 1) % len(base)]


def load_class_table(root: Path) -> ClassTable:
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing; a masklab dataset needs classes.yaml (run `masklab data import`)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetFormatError(f"{path}: not readable as UTF-8 YAML ({type(exc).__name__}: {exc})") from exc
    return ClassTable.from_dict(raw, str(path))
