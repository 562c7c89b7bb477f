"""Writing a dataset: :class:`DatasetWriter` builds it in a temporary folder and moves it into place when complete."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from masklab.data.classes import CLASSES_FILE, ClassTable
from masklab.data.errors import DatasetFormatError, short_repr
from masklab.data.manifest import (
    MANIFEST_FILE,
    POOL_SPLIT,
    ROW_FIELDS,
    SPLIT_NAME_RULE,
    STATUSES,
    Dataset,
    Sample,
    is_valid_split,
    load_dataset,
    manifest_text,
)
from masklab.data.objects import OBJECTS_DIR
from masklab.data.rle import encode_rle
from masklab.data.sample_files import MAX_FILE_NAME_BYTES, file_sha256, safe_name
from masklab.errors import UserError
from masklab.files import recover_folder, replace_folder

OBJECT_STORAGES = ("rle", "png")


def _object_json(records: list[dict[str, Any]]) -> str:
    """One object per line: readable, and a hand edit shows up as a one-line diff."""
    if not records:
        return "[]\n"
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"



def _checked_objects(
    sample_id: str, objects: Sequence[Mapping[str, Any]], shape: tuple[int, int]
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Validate objects given to DatasetWriter.add: [(JSON record without its mask, (H, W) bool mask)]."""
    out = []
    for k, obj in enumerate(objects):
        where = f"sample '{sample_id}' object {k}"
        if "mask" not in obj or "class_id" not in obj:
            raise DatasetFormatError(
                f"{where}: keys {sorted(obj)}; expected class_id, mask and optional other keys")
        pixels = np.asarray(obj["mask"]) != 0
        if pixels.shape != shape:
            raise DatasetFormatError(f"{where}: mask shape {pixels.shape}; expected {shape} (image)")
        if not pixels.any():
            raise DatasetFormatError(f"{where}: mask is empty; expected at least one pixel")
        class_id = obj["class_id"]
        if not isinstance(class_id, int | np.integer) or isinstance(class_id, bool):
            raise DatasetFormatError(f"{where}: class_id {class_id!r} is not an integer")
        record = {key: v for key, v in obj.items() if key != "mask"}
        record["class_id"] = int(class_id)
        if "iscrowd" in obj:
            if obj["iscrowd"] not in (0, 1) or isinstance(obj["iscrowd"], bool):
                raise DatasetFormatError(f"{where}: iscrowd {obj['iscrowd']!r}; expected 0 or 1")
            record["iscrowd"] = int(obj["iscrowd"])
        json.dumps(record)  # other keys must be JSON values; fail before anything is written
        out.append((record, pixels))
    return out


def _checked_row_values(sample_id: str, split: str, status: str | None, fold: int | None, object_storage: str,
                        extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the manifest row values given to DatasetWriter.add; returns ``extra`` as a dict."""
    if not is_valid_split(split):
        raise DatasetFormatError(
            f"sample '{sample_id}': split {split!r} is not a valid name; expected {SPLIT_NAME_RULE}")
    if status is not None and status not in STATUSES:
        raise DatasetFormatError(f"sample '{sample_id}': status {status!r} is not one of {list(STATUSES)}")
    if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool)):
        raise DatasetFormatError(f"sample '{sample_id}': fold {fold!r} is not an integer")
    if object_storage not in OBJECT_STORAGES:
        raise DatasetFormatError(f"object_storage {object_storage!r} is not one of {list(OBJECT_STORAGES)}")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(ROW_FIELDS))
    if clash:
        raise DatasetFormatError(
            f"sample '{sample_id}': extra keys {clash} are manifest fields; use the arguments")
    json.dumps(extra)  # fail now, not at commit, on values JSON cannot hold
    return extra


def _check_labeling(sample_id: str, split: str, status: str | None, has_target: bool) -> None:
    """A labeled sample must have a target (mask, instances or objects), an unlabeled one (split pool or status
    unlabeled) none."""
    labeled = split != POOL_SPLIT and status != "unlabeled"
    if has_target != labeled:
        raise DatasetFormatError(
            f"sample '{sample_id}' (split {split}, status {status}): "
            + ("labeled but has no mask or objects" if labeled else "unlabeled but has a mask or objects")
        )


def _image_size(image: np.ndarray | Path) -> tuple[int, int]:
    """(width, height) of an image array or file (only its header is read)."""
    if isinstance(image, Path):
        with Image.open(image) as im:
            return im.size
    height, width = image.shape[:2]
    return width, height


class DatasetWriter:
    """Builds a dataset in a temporary folder and moves it into place only when complete.

    An existing dataset is never replaced unless ``overwrite=True``; a failed import leaves
    nothing behind.
    """

    def __init__(self, root: str | Path, class_table: ClassTable, overwrite: bool = False):
        self.root = Path(root)
        recover_folder(self.root)
        if self.root.exists() and not overwrite:
            raise UserError(f"{self.root}: dataset already exists; pass overwrite=true to replace it")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.class_table = class_table
        self.overwrite = overwrite
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", dir=self.root.parent))
        for sub in ("images", "masks"):
            (self.tmp / sub).mkdir()
        self.samples: list[Sample] = []
        self._ids: set[str] = set()
        self._files: dict[str, str] = {}

    def add(
        self,
        sample_id: str,
        image: np.ndarray | Path,
        mask: np.ndarray | None,
        split: str,
        instances: np.ndarray | None = None,
        instance_classes: dict[int, int] | None = None,
        *,
        objects: Sequence[Mapping[str, Any]] | None = None,
        object_storage: str = "rle",
        fold: int | None = None,
        status: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Sample:
        """Add one sample.

        image: (H, W, 3) uint8 array written as PNG, or a path whose bytes are copied unchanged
        (never re-encoded lossy). mask: (H, W) class ids, written as 8-bit PNG.
        instances: (H, W) instance ids (0 = none), written as 16-bit PNG (v1).
        objects: instance objects ``{"class_id": int, "mask": (H, W) bool, ["iscrowd": 0|1], other keys}``
        (overlaps allowed), stored as compressed COCO RLE in objects/<id>.json, or with
        ``object_storage="png"`` as one PNG per object under objects/<id>/. split: any split name
        (``pool`` = unlabeled). fold, status and extra (other row keys) go into the manifest row.
        An unlabeled sample (split pool or status unlabeled) must have no target, a labeled one some.
        """
        if sample_id in self._ids:
            raise DatasetFormatError(f"duplicate sample id '{sample_id}'")
        extra = _checked_row_values(sample_id, split, status, fold, object_storage, extra)
        _check_labeling(sample_id, split, status, mask is not None or instances is not None or objects is not None)
        safe = self._free_file_stem(sample_id, image)
        width, height = _image_size(image)
        if mask is not None and mask.shape[:2] != (height, width):
            raise DatasetFormatError(
                f"sample '{sample_id}': mask is {mask.shape[1]}x{mask.shape[0]}, image {width}x{height}")
        checked = None if objects is None else _checked_objects(sample_id, objects, (height, width))
        # Everything is validated before the first file is written: a refused sample leaves nothing behind.
        self._ids.add(sample_id)
        self._files[safe] = sample_id
        rel_img, rel_mask, rel_inst = self._write_pixels(safe, image, mask, instances)
        rel_objects = None if checked is None else self._write_objects(safe, checked, object_storage)
        sample = Sample(
            id=sample_id, image=rel_img, mask=rel_mask, split=split, width=int(width), height=int(height),
            image_sha256=file_sha256(self.tmp / rel_img), mask_sha256=self._sha256(rel_mask), instances=rel_inst,
            instance_classes={str(k): int(v) for k, v in (instance_classes or {}).items()}, objects=rel_objects,
            objects_sha256=self._sha256(rel_objects), fold=fold, status=status, extra=extra)
        self.samples.append(sample)
        return sample

    def _free_file_stem(self, sample_id: str, image: np.ndarray | Path) -> str:
        """The file stem of ``sample_id`` (:func:`safe_name`); refused when another sample's id has the same
        stem or a file name of the sample would be longer than a file system takes."""
        safe = safe_name(sample_id)
        if safe in self._files:
            raise DatasetFormatError(
                f"sample ids '{sample_id}' and '{self._files[safe]}' would share the file name '{safe}'")
        suffixes = (image.suffix.lower() if isinstance(image, Path) else ".png", ".png", ".json")
        longest = max(len(f"{safe}{suffix}".encode()) for suffix in suffixes)
        if longest > MAX_FILE_NAME_BYTES:  # the id's folders are flattened into one name: it can outgrow them
            raise DatasetFormatError(
                f"sample {short_repr(sample_id)}: its file names (the id, '/' as '__', a suffix) would be {longest} "
                f"bytes long; expected at most {MAX_FILE_NAME_BYTES} bytes, a file system's limit (shorten the id "
                "or file name)")
        return safe

    def _write_pixels(
        self, safe: str, image: np.ndarray | Path, mask: np.ndarray | None, instances: np.ndarray | None
    ) -> tuple[str, str | None, str | None]:
        """Write images/<safe>.<suffix>, masks/<safe>.png and instances/<safe>.png (those given); their paths."""
        if isinstance(image, Path):
            rel_img = f"images/{safe}{image.suffix.lower()}"
            shutil.copyfile(image, self.tmp / rel_img)
        else:
            rel_img = f"images/{safe}.png"
            Image.fromarray(image).save(self.tmp / rel_img)
        rel_mask = None
        if mask is not None:
            rel_mask = f"masks/{safe}.png"
            Image.fromarray(mask.astype(np.uint8), mode="L").save(self.tmp / rel_mask)
        rel_inst = None
        if instances is not None:
            (self.tmp / "instances").mkdir(exist_ok=True)
            rel_inst = f"instances/{safe}.png"
            Image.fromarray(instances.astype(np.uint16)).save(self.tmp / rel_inst)
        return rel_img, rel_mask, rel_inst

    def _sha256(self, rel: str | None) -> str | None:
        """Checksum of a written file (None for none)."""
        return file_sha256(self.tmp / rel) if rel else None

    def _write_objects(self, safe: str, objects: list[tuple[dict[str, Any], np.ndarray]], storage: str) -> str:
        """Write objects/<safe>.json (and objects/<safe>/<k>.png for PNG storage); returns its path."""
        records = []
        for k, (record, pixels) in enumerate(objects):
            if storage == "png":
                rel_png = f"{OBJECTS_DIR}/{safe}/{k}.png"
                (self.tmp / rel_png).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.astype(np.uint8) * 255, mode="L").save(self.tmp / rel_png)
                stored: dict[str, Any] = {"png": rel_png}
            else:
                stored = {"rle": encode_rle(pixels)}
            # Key order class_id, iscrowd, mask, then the caller's other keys.
            records.append({**{key: record[key] for key in ("class_id", "iscrowd") if key in record}, "mask": stored,
                            **{key: v for key, v in record.items() if key not in ("class_id", "iscrowd")}})
        rel = f"{OBJECTS_DIR}/{safe}.json"
        (self.tmp / OBJECTS_DIR).mkdir(exist_ok=True)
        (self.tmp / rel).write_text(_object_json(records))
        return rel

    def commit(self, class_table: ClassTable | None = None) -> Dataset:
        """Write classes.yaml and the manifest, then atomically move the folder into place.

        ``class_table`` replaces the one given at construction (importers that derive classes
        from the masks know them only after reading every mask).
        """
        if class_table is not None:
            self.class_table = class_table
        (self.tmp / CLASSES_FILE).write_text(yaml.safe_dump(self.class_table.to_dict(), sort_keys=False))
        (self.tmp / MANIFEST_FILE).write_text(manifest_text(self.samples))
        # A crash at any moment leaves the previous dataset or this one under the name (tests/test_dataset_writer)
        replace_folder(self.tmp, self.root)
        return load_dataset(self.root)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
