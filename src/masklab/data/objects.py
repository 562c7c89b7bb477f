"""Instance objects of a sample: the ``objects/<id>.json`` files (RLE or per-object PNG masks) and v1 instance maps,
read as an :class:`ObjectSet`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masklab.data.errors import DatasetFormatError, short_repr
from masklab.data.images import read_instances, read_object_png
from masklab.data.manifest import Sample
from masklab.data.paths import PATH_RULE, LinkCheck, path_problem
from masklab.data.rle import decode_rle
from masklab.data.sample_files import file_exists

OBJECTS_DIR = "objects"


@dataclass
class ObjectSet:
    """The instance objects of one sample, in file order.

    class_ids: (N,) int64. masks: (N, H, W) bool, overlaps allowed. iscrowd: (N,) uint8 (1 = a
    crowd region, 0 otherwise). extra: N dicts with each object's other keys, verbatim.
    """

    class_ids: np.ndarray
    masks: np.ndarray
    iscrowd: np.ndarray
    extra: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.class_ids)

    @classmethod
    def empty(cls, height: int, width: int) -> ObjectSet:
        """No objects on a (height, width) image."""
        return cls(np.zeros(0, np.int64), np.zeros((0, height, width), bool), np.zeros(0, np.uint8), [])


@dataclass
class ObjectRecord:
    """One decoded object: mask (H, W) bool plus where it came from (``file``: the JSON or PNG)."""

    class_id: int
    iscrowd: int
    mask: np.ndarray
    extra: dict[str, Any]
    file: str


class ObjectError(DatasetFormatError):
    """One object that cannot be read; ``file``, ``kind``, ``found``, ``expected`` feed `data check`."""

    def __init__(self, file: str, kind: str, found: str, expected: str):
        self.file, self.kind, self.found, self.expected = file, kind, found, expected
        super().__init__(f"{file}: {kind}: found {found}; expected {expected}")


def decode_object(root: Path, objects_file: str, index: int, obj: object, *, check: bool = False) -> ObjectRecord:
    """Decode entry ``index`` of an objects file; raises ObjectError naming the file at fault.

    check: check an RLE string's runs (:func:`masklab.data.rle.check_rle`) before decoding it, as `data check`
    does; reading a checked dataset trusts them.
    """
    where = f"object {index}"
    expected = "{class_id: int, mask: {rle: {size, counts}} or {png: path}, [iscrowd: 0|1]}"
    if not isinstance(obj, Mapping):
        raise ObjectError(objects_file, "bad object", f"{where} is {short_repr(obj)}", expected)
    class_id, mask, iscrowd = obj.get("class_id"), obj.get("mask"), obj.get("iscrowd", 0)
    if not isinstance(class_id, int) or isinstance(class_id, bool):
        raise ObjectError(objects_file, "bad object", f"{where}: class_id {short_repr(class_id)}",
                          "an integer class id")
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        raise ObjectError(objects_file, "bad object", f"{where}: iscrowd {short_repr(iscrowd)}", "0 or 1")
    if not isinstance(mask, Mapping) or len(mask) != 1 or not set(mask) <= {"rle", "png"}:
        raise ObjectError(objects_file, "bad object", f"{where}: mask {short_repr(mask)}", "{rle: ...} or {png: path}")
    extra = {k: v for k, v in obj.items() if k not in ("class_id", "mask", "iscrowd")}
    if "rle" in mask:
        try:
            pixels = decode_rle(mask["rle"], check=check)
        except ValueError as exc:
            raise ObjectError(objects_file, "bad RLE", f"{where}: {exc}", "a compressed COCO RLE of H*W px") from exc
        return ObjectRecord(class_id, int(iscrowd), pixels, extra, objects_file)
    png = mask["png"]
    why = path_problem(png) if isinstance(png, str) else "not a string"
    if why is None:
        leads = LinkCheck(root).escape_one(png)  # (no scan of the folder: objects are read one sample at a time)
        why = None if leads is None else f"a symlink path to {leads}, outside {root}"
    if why is not None:
        raise ObjectError(objects_file, "bad object", f"{where}: png {short_repr(png)} ({why})", PATH_RULE)
    if not file_exists(root / png):
        raise ObjectError(png, "missing file", "no such file", f"mask of {where} in {objects_file}")
    try:
        pixels = read_object_png(root / png)
    except Exception as exc:
        found = f"{type(exc).__name__}: {exc}"
        raise ObjectError(png, "unreadable object mask", found, "a single-channel PNG") from exc
    return ObjectRecord(class_id, int(iscrowd), pixels, extra, png)


def read_objects_file(root: Path, objects_file: str) -> list[object]:
    """The raw entries of an objects JSON file (a list); raises ObjectError when missing or not a list."""
    path = Path(root) / objects_file
    if not file_exists(path):
        raise ObjectError(objects_file, "missing file", "no such file", "a JSON list of objects")
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ObjectError(objects_file, "unreadable objects", f"{type(exc).__name__}: {exc}", "a JSON list") from exc
    if not isinstance(entries, list):
        raise ObjectError(objects_file, "unreadable objects", f"a JSON {type(entries).__name__}", "a JSON list")
    return entries


def read_objects(root: str | Path, sample: Sample, *, check: bool = False) -> ObjectSet:
    """The instance objects of ``sample``: class_ids (N,) int64, masks (N, H, W) bool, iscrowd (N,) uint8.

    Reads the v2 ``objects`` file, or else a v1 ``instances`` id map (one object per id, in id
    order); a sample with neither has no objects (N = 0). Raises ObjectError for an object that
    cannot be decoded or does not match the image size from the manifest. RLE strings are decoded by
    pycocotools as `data check` found them (training checks a dataset first); ``check`` checks each one's
    runs again (:func:`masklab.data.rle.check_rle`), for objects no check has vetted.
    """
    root = Path(root)
    h, w = sample.height, sample.width
    if sample.objects:
        entries = read_objects_file(root, sample.objects)
        records = [decode_object(root, sample.objects, k, o, check=check) for k, o in enumerate(entries)]
        for k, r in enumerate(records):
            if r.mask.shape != (h, w):
                raise ObjectError(r.file, "size mismatch", f"object {k}: {r.mask.shape[1]}x{r.mask.shape[0]}",
                                  f"{w}x{h} (manifest)")
        if not records:
            return ObjectSet.empty(h, w)
        return ObjectSet(
            np.array([r.class_id for r in records], np.int64),
            np.stack([r.mask for r in records]),
            np.array([r.iscrowd for r in records], np.uint8),
            [r.extra for r in records],
        )
    if sample.instances:
        ids = read_instances(root / sample.instances)
        classes = {int(k): int(v) for k, v in sample.instance_classes.items()}
        present = sorted(set(np.unique(ids).tolist()) - {0})
        missing = [i for i in present if i not in classes]
        if missing:
            raise ObjectError(sample.instances, "unknown instance classes", f"ids {missing} without a class",
                              "every instance id in instance_classes")
        if not present:
            return ObjectSet.empty(h, w)
        return ObjectSet(
            np.array([classes[i] for i in present], np.int64),
            np.stack([ids == i for i in present]),
            np.zeros(len(present), np.uint8),
            [{} for _ in present],
        )
    return ObjectSet.empty(h, w)
