"""The one internal dataset format: ``data/<name>/{classes.yaml, manifest.jsonl, images/, masks/, objects/}``.

Importers write it through :class:`DatasetWriter`; everything downstream reads it through
:func:`load_dataset` (rows) and :func:`read_image`, :func:`read_mask`, :func:`read_objects` (pixels).
Nothing else in masklab touches these files directly.

Format v2 (a v1 dataset is a valid v2 dataset): a manifest row may also hold ``objects`` (a JSON
file of instance objects, overlaps allowed), any split name (``pool`` = unlabeled images), ``fold``,
``status`` and any other key, which every rewrite keeps verbatim (:attr:`Sample.extra`).
v1 synthetic datasets keep their ``instances/`` 16-bit instance-id maps; :func:`read_objects`
reads both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from masklab.errors import UserError
from masklab.files import atomic_write

CLASSES_FILE = "classes.yaml"
MANIFEST_FILE = "manifest.jsonl"
OBJECTS_DIR = "objects"
# The longest file name (bytes, not characters) common file systems accept.
MAX_FILE_NAME_BYTES = 255
# The splits training and evaluation read; a dataset may hold any other split name as well.
SPLITS = ("train", "val", "test")
# Images without labels, waiting to be selected for labeling (active learning).
POOL_SPLIT = "pool"
STATUSES = ("labeled", "unlabeled", "needs_review", "fixed")
DEFAULT_IGNORE_INDEX = 255
# A split name becomes part of file names, metric keys and CLI overrides: keep it a plain word.
_SPLIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
SPLIT_NAME_RULE = "a letter, then up to 63 letters, digits or '_' (e.g. train, val, test, pool, fold_3)"


class DatasetFormatError(UserError):
    """A dataset on disk does not follow the masklab format; the message names the file."""


def is_valid_split(name: object) -> bool:
    """Whether ``name`` can be a split name (see ``SPLIT_NAME_RULE``)."""
    return isinstance(name, str) and _SPLIT_NAME.fullmatch(name) is not None


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


@dataclass
class Sample:
    """One manifest row. Paths are relative to the dataset root; width and height in pixels.

    mask: semantic mask (pixel = class id). objects: JSON file of instance objects (read them with
    :func:`read_objects`). instances/instance_classes: v1 instance-id map and {instance id: class id}.
    fold: cross-validation fold. status: one of ``STATUSES`` (absent means labeled unless the split
    is ``pool``). extra: every other key of the row, written back unchanged.
    """

    id: str
    image: str
    mask: str | None
    split: str
    width: int
    height: int
    image_sha256: str
    mask_sha256: str | None = None
    instances: str | None = None
    instance_classes: dict[str, int] = field(default_factory=dict)
    objects: str | None = None
    objects_sha256: str | None = None
    fold: int | None = None
    status: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Sample:
        """Build from a manifest row; unknown keys go to ``extra``. Values are not validated here
        (``data check`` reports bad ones), so any row that parses can be written back as it was."""
        if not isinstance(row, Mapping):
            raise TypeError(f"row is {type(row).__name__}; expected a JSON object")
        known = {k: v for k, v in row.items() if k in _ROW_FIELDS}
        known.setdefault("mask", None)
        return cls(**known, extra={k: v for k, v in row.items() if k not in _ROW_FIELDS})

    def to_row(self) -> dict[str, Any]:
        """The manifest row: known fields in declaration order, unset ones (None, {}) left out, then
        ``extra`` in its own order. A row written by v1 code comes back byte for byte."""
        clash = sorted(set(self.extra) & set(_ROW_FIELDS))
        if clash:
            raise ValueError(f"sample '{self.id}': extra keys {clash} are manifest fields; set the fields instead")
        row = {name: getattr(self, name) for name in _ROW_FIELDS}
        row = {k: (dict(v) if isinstance(v, dict) else v) for k, v in row.items() if v is not None and v != {}}
        return {**row, **self.extra}

    @property
    def labeled(self) -> bool:
        """False for images waiting for labels: split ``pool`` or status ``unlabeled``."""
        return self.split != POOL_SPLIT and self.status != "unlabeled"

    @property
    def has_target(self) -> bool:
        """Whether any label is stored: semantic mask, instance objects or a v1 instance map."""
        return bool(self.mask or self.objects or self.instances)


_ROW_FIELDS = tuple(f.name for f in fields(Sample) if f.name != "extra")
REQUIRED_FIELDS = ("id", "image", "split", "width", "height", "image_sha256")
# The JSON types of the fields reading a dataset relies on, and how to say them (fold and status values are
# `data check`'s business: a wrong one does not stop a row from being read).
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    **dict.fromkeys(("id", "image", "split", "image_sha256"), ((str,), "a string")),
    **dict.fromkeys(("width", "height"), ((int,), "an integer (px)")),
    **dict.fromkeys(("mask", "mask_sha256", "instances", "objects", "objects_sha256"),
                    ((str, type(None)), "a string or null")),
    "instance_classes": ((dict,), "an object {instance id: class id (integer)}"),
}


def row_problems(row: object) -> list[tuple[str, str]]:
    """(found, expected) for each reason ``row`` (a parsed manifest line) cannot be read as a sample: not a
    JSON object, required fields missing, a field of the wrong JSON type; empty when it can."""
    if not isinstance(row, Mapping):
        kind = {list: "array", str: "string", bool: "true/false", type(None): "null"}.get(type(row), "number")
        return [(f"a JSON {kind}", "a JSON object")]
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    found = [(f"missing {missing}", f"the fields {list(REQUIRED_FIELDS)}")] if missing else []
    for name, (types, expected) in _FIELD_TYPES.items():
        if name not in row:
            continue
        value = row[name]
        if isinstance(value, dict) and dict in types:  # instance_classes: the class ids too
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
        else:
            ok = isinstance(value, types) and not isinstance(value, bool)
        if not ok:
            found.append((f"{name} {_short(value)}", f"{name} {expected}"))
    return found


@dataclass
class Dataset:
    """A dataset loaded from disk: root folder, class table and manifest rows."""

    root: Path
    name: str
    class_table: ClassTable
    samples: list[Sample]

    def split(self, split: str) -> list[Sample]:
        return [s for s in self.samples if s.split == split]

    def labeled(self, split: str) -> list[Sample]:
        """Samples of ``split`` that carry labels (training and evaluation skip images awaiting labels)."""
        return [s for s in self.samples if s.split == split and s.labeled]

    @property
    def split_names(self) -> list[str]:
        """Split names present, standard ones (train, val, test) first, others in order of appearance."""
        present = list(dict.fromkeys(s.split for s in self.samples))
        return [s for s in SPLITS if s in present] + [s for s in present if s not in SPLITS]

    @property
    def manifest_hash(self) -> str:
        return file_sha256(self.root / MANIFEST_FILE)


def summary(dataset: Dataset) -> str:
    """One line: where, how many samples per split (any split name), which classes."""
    counts = Counter(s.split for s in dataset.samples)
    splits = ", ".join(f"{k} {counts[k]}" for k in dataset.split_names)
    classes = ", ".join(f"{c.id}={c.name}" for c in dataset.class_table.classes)
    return f"{dataset.root}: {len(dataset.samples)} samples ({splits}); classes {classes}"


def safe_name(sample_id: str) -> str:
    """The file stem of a sample id: ``/`` (allowed in ids) becomes ``__`` (one rule for every per-sample file)."""
    return sample_id.replace("/", "__")


def file_exists(path: Path) -> bool:
    """Whether ``path`` is a file; False, not an OSError, for a name the file system cannot hold (too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_class_table(root: Path) -> ClassTable:
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing; a masklab dataset needs classes.yaml (run `masklab data import`)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetFormatError(f"{path}: not readable as UTF-8 YAML ({type(exc).__name__}: {exc})") from exc
    return ClassTable.from_dict(raw, str(path))


def load_dataset(root: str | Path) -> Dataset:
    """Read classes.yaml and manifest.jsonl of a dataset folder (no pixel data is read)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(
            f"{root}: dataset folder does not exist; create it with `masklab data synth` or `masklab data import`"
        )
    table = load_class_table(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing manifest")
    return Dataset(root, root.name, table, read_manifest(root))


def manifest_lines(data: bytes) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of each non-blank line of manifest.jsonl content; text None: the line is not UTF-8.

    Lines end at ``\\n`` only: ``str.splitlines`` also splits at characters a JSON string may hold (U+2028),
    and decoding line by line lets one damaged row be reported without hiding the others."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield lineno, None
            continue
        if line.strip():
            yield lineno, line


def read_manifest(root: str | Path) -> list[Sample]:
    """The rows of ``<root>/manifest.jsonl``; raises DatasetFormatError naming the line of a bad row."""
    path = Path(root) / MANIFEST_FILE
    samples = []
    for lineno, line in manifest_lines(path.read_bytes()):
        if line is None:
            raise DatasetFormatError(f"{path}:{lineno}: bad manifest row (bytes that are not UTF-8)")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}:{lineno}: bad manifest row (invalid JSON: {exc})") from exc
        bad = row_problems(row)
        if bad:
            raise DatasetFormatError(f"{path}:{lineno}: bad manifest row: found {bad[0][0]}; expected {bad[0][1]}")
        samples.append(Sample.from_row(row))
    return samples


def manifest_text(samples: Sequence[Sample]) -> str:
    """manifest.jsonl content: one JSON row per sample."""
    return "\n".join(json.dumps(s.to_row()) for s in samples) + "\n"


def write_manifest(root: str | Path, samples: Sequence[Sample]) -> Path:
    """Replace ``<root>/manifest.jsonl`` atomically (extra keys of every row kept)."""
    text = manifest_text(samples)
    return atomic_write(Path(root) / MANIFEST_FILE, lambda tmp: tmp.write_text(text))


def read_image(path: Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, whatever its mode on disk (L, RGBA, P, I;16).

    The stored pixel grid is used as is; an EXIF orientation tag is NOT applied, because masks
    are stored on that same grid. `data check` warns about such tags so a user can decide.
    16-bit images are min-max scaled per image to 0..255.
    """
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            span = max(arr.max() - arr.min(), 1e-12)
            arr = ((arr - arr.min()) / span * 255).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """Read a class-index mask as (H, W) uint8 (the file is a single-channel PNG)."""
    with Image.open(path) as im:
        return np.asarray(im)


def read_instances(path: Path) -> np.ndarray:
    """Read an instance-id map as (H, W) int32 (16-bit PNG, 0 = no instance)."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int32)


# ----------------------------------------------------------------------------- instance objects

# PIL modes that hold one value per pixel; anything else is not a per-object mask.
_SINGLE_CHANNEL = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I")


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


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) mask (nonzero = object) -> compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as coco_mask

    if mask.ndim != 2:
        raise ValueError(f"object mask has shape {mask.shape}; expected (H, W)")
    rle = coco_mask.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _rle_run_lengths(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString, in Python).

    pycocotools trusts its input: a string whose runs do not add up to H*W decodes to
    uninitialised memory instead of failing, so every string is parsed and checked here first.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("string ends inside a run length")
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[pos]!r} at {pos} is outside '0'..'o'")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # sign bit of the last 5-bit group
        if len(runs) > 2:
            value += runs[-2]  # runs after the second are stored as differences
        runs.append(value)
    return runs


def decode_rle(rle: object) -> np.ndarray:
    """Compressed COCO RLE ``{"size": [H, W], "counts": str}`` -> (H, W) bool; ValueError if malformed."""
    from pycocotools import mask as coco_mask

    if not isinstance(rle, Mapping) or set(rle) != {"size", "counts"}:
        raise ValueError(f"{_short(rle)} is not {{'size': [H, W], 'counts': str}}")
    size, counts = rle["size"], rle["counts"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"size {_short(size)} is not [H, W] of positive ints")
    if not isinstance(counts, str):
        raise ValueError(f"counts is {type(counts).__name__}; expected a compressed RLE string")
    runs = _rle_run_lengths(counts)
    if any(r < 0 for r in runs) or sum(runs) != size[0] * size[1]:
        raise ValueError(
            f"run lengths add up to {sum(runs)} (smallest {min(runs, default=0)}); H*W is {size[0] * size[1]}"
        )
    return coco_mask.decode({"size": size, "counts": counts.encode("ascii")}).astype(bool)


# A PNG's last chunk: length 0, type IEND, and the CRC of that type (the same in every PNG).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# Where the end chunk is looked for: some tools append bytes after it, never this many.
_PNG_TAIL = 1 << 16


def verify_file(path: Path) -> None:
    """Pillow's structural check (chunk CRCs, missing end); load() alone accepts a PNG cut after its pixels.

    Pillow stops at the type of a PNG's IEND chunk, so a PNG cut or damaged in its last bytes (an interrupted
    copy) would pass: its end chunk is checked here too."""
    with Image.open(path) as im:
        im.verify()
        png = im.format == "PNG"
    if png:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - _PNG_TAIL))
            if _PNG_END not in fh.read():
                raise ValueError("broken PNG file: the IEND end chunk is cut or damaged")


def read_object_png(path: Path) -> np.ndarray:
    """A per-object PNG as (H, W) bool (nonzero = object); ValueError when it is not single-channel."""
    verify_file(path)  # chunk CRCs and end: these files carry no checksum in the manifest
    with Image.open(path) as im:
        im.load()  # full decode: a truncated file fails here
        if im.mode not in _SINGLE_CHANNEL:
            raise ValueError(f"mode {im.mode}; expected a single-channel PNG (nonzero = object)")
        return np.asarray(im) != 0


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_object(root: Path, objects_file: str, index: int, obj: object) -> ObjectRecord:
    """Decode entry ``index`` of an objects file; raises ObjectError naming the file at fault."""
    where = f"object {index}"
    expected = "{class_id: int, mask: {rle: {size, counts}} or {png: path}, [iscrowd: 0|1]}"
    if not isinstance(obj, Mapping):
        raise ObjectError(objects_file, "bad object", f"{where} is {_short(obj)}", expected)
    class_id, mask, iscrowd = obj.get("class_id"), obj.get("mask"), obj.get("iscrowd", 0)
    if not isinstance(class_id, int) or isinstance(class_id, bool):
        raise ObjectError(objects_file, "bad object", f"{where}: class_id {_short(class_id)}", "an integer class id")
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        raise ObjectError(objects_file, "bad object", f"{where}: iscrowd {_short(iscrowd)}", "0 or 1")
    if not isinstance(mask, Mapping) or len(mask) != 1 or not set(mask) <= {"rle", "png"}:
        raise ObjectError(objects_file, "bad object", f"{where}: mask {_short(mask)}", "{rle: ...} or {png: path}")
    extra = {k: v for k, v in obj.items() if k not in ("class_id", "mask", "iscrowd")}
    if "rle" in mask:
        try:
            pixels = decode_rle(mask["rle"])
        except ValueError as exc:
            raise ObjectError(objects_file, "bad RLE", f"{where}: {exc}", "a compressed COCO RLE of H*W px") from exc
        return ObjectRecord(class_id, int(iscrowd), pixels, extra, objects_file)
    png = mask["png"]
    if not isinstance(png, str) or not png or Path(png).is_absolute() or ".." in Path(png).parts:
        raise ObjectError(objects_file, "bad object", f"{where}: png {_short(png)}", "a path inside the dataset")
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


def read_objects(root: str | Path, sample: Sample) -> ObjectSet:
    """The instance objects of ``sample``: class_ids (N,) int64, masks (N, H, W) bool, iscrowd (N,) uint8.

    Reads the v2 ``objects`` file, or else a v1 ``instances`` id map (one object per id, in id
    order); a sample with neither has no objects (N = 0). Raises ObjectError for an object that
    cannot be decoded or does not match the image size from the manifest.
    """
    root = Path(root)
    h, w = sample.height, sample.width
    if sample.objects:
        entries = read_objects_file(root, sample.objects)
        records = [decode_object(root, sample.objects, k, o) for k, o in enumerate(entries)]
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


def _object_json(records: list[dict[str, Any]]) -> str:
    """One object per line: readable, and a hand edit shows up as a one-line diff."""
    if not records:
        return "[]\n"
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"


OBJECT_STORAGES = ("rle", "png")


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


class DatasetWriter:
    """Builds a dataset in a temporary folder and moves it into place only when complete.

    An existing dataset is never replaced unless ``overwrite=True``; a failed import leaves
    nothing behind.
    """

    def __init__(self, root: str | Path, class_table: ClassTable, overwrite: bool = False):
        self.root = Path(root)
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
        clash = sorted(set(extra) & set(_ROW_FIELDS))
        if clash:
            raise DatasetFormatError(
                f"sample '{sample_id}': extra keys {clash} are manifest fields; use the arguments")
        json.dumps(extra)  # fail now, not at commit, on values JSON cannot hold
        has_target = mask is not None or instances is not None or objects is not None
        labeled = split != POOL_SPLIT and status != "unlabeled"
        if has_target != labeled:
            raise DatasetFormatError(
                f"sample '{sample_id}' (split {split}, status {status}): "
                + ("labeled but has no mask or objects" if labeled else "unlabeled but has a mask or objects")
            )
        safe = safe_name(sample_id)
        if safe in self._files:
            raise DatasetFormatError(
                f"sample ids '{sample_id}' and '{self._files[safe]}' would share the file name '{safe}'")
        suffixes = (image.suffix.lower() if isinstance(image, Path) else ".png", ".png", ".json")
        longest = max(len(f"{safe}{suffix}".encode()) for suffix in suffixes)
        if longest > MAX_FILE_NAME_BYTES:  # the id's folders are flattened into one name: it can outgrow them
            raise DatasetFormatError(
                f"sample {_short(sample_id)}: its file names (the id, '/' as '__', a suffix) would be {longest} "
                f"bytes long; expected at most {MAX_FILE_NAME_BYTES} bytes, a file system's limit (shorten the id "
                "or file name)")
        # Everything is validated before the first file is written: a refused sample leaves nothing behind.
        if isinstance(image, Path):
            with Image.open(image) as im:
                width, height = im.size
        else:
            height, width = image.shape[:2]
        if mask is not None and mask.shape[:2] != (height, width):
            raise DatasetFormatError(
                f"sample '{sample_id}': mask is {mask.shape[1]}x{mask.shape[0]}, image {width}x{height}")
        checked = None if objects is None else _checked_objects(sample_id, objects, (height, width))
        self._ids.add(sample_id)
        self._files[safe] = sample_id
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
        rel_objects = None if checked is None else self._write_objects(safe, checked, object_storage)
        sample = Sample(
            id=sample_id,
            image=rel_img,
            mask=rel_mask,
            split=split,
            width=int(width),
            height=int(height),
            image_sha256=file_sha256(self.tmp / rel_img),
            mask_sha256=file_sha256(self.tmp / rel_mask) if rel_mask else None,
            instances=rel_inst,
            instance_classes={str(k): int(v) for k, v in (instance_classes or {}).items()},
            objects=rel_objects,
            objects_sha256=file_sha256(self.tmp / rel_objects) if rel_objects else None,
            fold=fold,
            status=status,
            extra=extra,
        )
        self.samples.append(sample)
        return sample

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
        old = None
        if self.root.exists():
            old = self.root.with_name(f".{self.root.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.root, old)
        os.replace(self.tmp, self.root)
        if old is not None:
            shutil.rmtree(old)
        return load_dataset(self.root)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
