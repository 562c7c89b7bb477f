"""The one internal dataset format: ``data/<name>/{classes.yaml, manifest.jsonl, images/, masks/, instances/}``.

Importers write it through :class:`DatasetWriter`; everything downstream reads it through
:func:`load_dataset`. Nothing else in masklab touches these files directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

CLASSES_FILE = "classes.yaml"
MANIFEST_FILE = "manifest.jsonl"
SPLITS = ("train", "val", "test")
DEFAULT_IGNORE_INDEX = 255


class DatasetFormatError(ValueError):
    """A dataset on disk does not follow the masklab format; the message names the file."""


@dataclass(frozen=True)
class ClassInfo:
    """One semantic class: its pixel value in masks, a name and an RGB display colour."""

    id: int
    name: str
    color: tuple[int, int, int]


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

    def palette(self) -> np.ndarray:
        """(num_classes, 3) uint8 colours indexed by class id."""
        return np.array([c.color for c in self.classes], dtype=np.uint8)

    def to_dict(self) -> dict:
        return {
            "ignore_index": self.ignore_index,
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes],
        }

    @classmethod
    def from_dict(cls, raw: dict, source: str = "classes.yaml") -> ClassTable:
        """Validate and build a table; class ids must be exactly 0..N-1 so they index tensors."""
        if not isinstance(raw, dict) or "classes" not in raw:
            raise DatasetFormatError(f"{source}: expected a mapping with a 'classes' list, found {raw!r:.80}")
        classes = []
        for i, entry in enumerate(raw["classes"]):
            try:
                cid, name = int(entry["id"]), str(entry["name"])
                color = tuple(int(v) for v in entry.get("color", default_color(cid)))
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetFormatError(f"{source}: class entry {i} is {entry!r}; expected id, name, color") from exc
            if len(color) != 3 or not all(0 <= v <= 255 for v in color):
                raise DatasetFormatError(f"{source}: class '{name}' colour {list(color)} is not three values 0..255")
            classes.append(ClassInfo(cid, name, color))  # type: ignore[arg-type]
        ids = sorted(c.id for c in classes)
        if ids != list(range(len(classes))):
            raise DatasetFormatError(f"{source}: class ids are {ids}; expected 0..{len(classes) - 1} without gaps")
        ignore = int(raw.get("ignore_index", DEFAULT_IGNORE_INDEX))
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
    """One manifest row. Paths are relative to the dataset root."""

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


@dataclass
class Dataset:
    """A dataset loaded from disk: root folder, class table and manifest rows."""

    root: Path
    name: str
    class_table: ClassTable
    samples: list[Sample]

    def split(self, split: str) -> list[Sample]:
        return [s for s in self.samples if s.split == split]

    @property
    def manifest_hash(self) -> str:
        return file_sha256(self.root / MANIFEST_FILE)


def safe_name(sample_id: str) -> str:
    """The file stem of a sample id: ``/`` (allowed in ids) becomes ``__`` (one rule for every per-sample file)."""
    return sample_id.replace("/", "__")


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
    except yaml.YAMLError as exc:
        raise DatasetFormatError(f"{path}: not valid YAML ({exc})") from exc
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
    samples = []
    names = {f.name for f in Sample.__dataclass_fields__.values()}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            samples.append(Sample(**{k: v for k, v in row.items() if k in names}))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DatasetFormatError(f"{path}:{lineno}: bad manifest row ({exc})") from exc
    return Dataset(root, root.name, table, samples)


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


class DatasetWriter:
    """Builds a dataset in a temporary folder and moves it into place only when complete.

    An existing dataset is never replaced unless ``overwrite=True``; a failed import leaves
    nothing behind.
    """

    def __init__(self, root: str | Path, class_table: ClassTable, overwrite: bool = False):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root}: dataset already exists; pass overwrite=true to replace it")
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
    ) -> Sample:
        """Add one sample.

        image: (H, W, 3) uint8 array written as PNG, or a path whose bytes are copied unchanged
        (never re-encoded lossy). mask: (H, W) class ids, written as 8-bit PNG.
        instances: (H, W) instance ids (0 = none), written as 16-bit PNG.
        """
        if sample_id in self._ids:
            raise ValueError(f"duplicate sample id '{sample_id}'")
        if split not in SPLITS:
            raise ValueError(f"sample '{sample_id}': split '{split}' is not one of {list(SPLITS)}")
        self._ids.add(sample_id)
        safe = safe_name(sample_id)
        if safe in self._files:
            raise ValueError(f"sample ids '{sample_id}' and '{self._files[safe]}' would share the file name '{safe}'")
        self._files[safe] = sample_id
        if isinstance(image, Path):
            rel_img = f"images/{safe}{image.suffix.lower()}"
            shutil.copyfile(image, self.tmp / rel_img)
            with Image.open(image) as im:
                width, height = im.size
        else:
            rel_img = f"images/{safe}.png"
            Image.fromarray(image).save(self.tmp / rel_img)
            height, width = image.shape[:2]
        rel_mask = None
        if mask is not None:
            if mask.shape[:2] != (height, width):
                raise ValueError(
                    f"sample '{sample_id}': mask is {mask.shape[1]}x{mask.shape[0]}, image {width}x{height}"
                )
            rel_mask = f"masks/{safe}.png"
            Image.fromarray(mask.astype(np.uint8), mode="L").save(self.tmp / rel_mask)
        rel_inst = None
        if instances is not None:
            (self.tmp / "instances").mkdir(exist_ok=True)
            rel_inst = f"instances/{safe}.png"
            Image.fromarray(instances.astype(np.uint16)).save(self.tmp / rel_inst)
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
        )
        self.samples.append(sample)
        return sample

    def commit(self, class_table: ClassTable | None = None) -> Dataset:
        """Write classes.yaml and the manifest, then atomically move the folder into place.

        ``class_table`` replaces the one given at construction (importers that derive classes
        from the masks know them only after reading every mask).
        """
        if class_table is not None:
            self.class_table = class_table
        (self.tmp / CLASSES_FILE).write_text(yaml.safe_dump(self.class_table.to_dict(), sort_keys=False))
        rows = [json.dumps({k: v for k, v in asdict(s).items() if v not in (None, {})}) for s in self.samples]
        (self.tmp / MANIFEST_FILE).write_text("\n".join(rows) + "\n")
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
