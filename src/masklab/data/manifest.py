"""The manifest (``manifest.jsonl``, a row per sample) and the dataset it describes: :class:`Sample` rows,
:class:`Dataset`, :func:`load_dataset`, reading and writing the rows."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from masklab.data.classes import ClassTable, load_class_table
from masklab.data.errors import DatasetFormatError, short_repr
from masklab.data.paths import PATH_RULE, LinkCheck, path_problem
from masklab.data.sample_files import file_sha256
from masklab.files import atomic_write, recover_folder

MANIFEST_FILE = "manifest.jsonl"
# The splits training and evaluation read; a dataset may hold any other split name as well.
SPLITS = ("train", "val", "test")
# Images without labels, waiting to be selected for labeling (active learning).
POOL_SPLIT = "pool"
STATUSES = ("labeled", "unlabeled", "needs_review", "fixed")
# A split name becomes part of file names, metric keys and CLI overrides: keep it a plain word.
_SPLIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
SPLIT_NAME_RULE = "a letter, then up to 63 letters, digits or '_' (e.g. train, val, test, pool, fold_3)"


def is_valid_split(name: object) -> bool:
    """Whether ``name`` can be a split name (see ``SPLIT_NAME_RULE``)."""
    return isinstance(name, str) and _SPLIT_NAME.fullmatch(name) is not None


@dataclass
class Sample:
    """One manifest row. Paths are relative to the dataset root; width and height in pixels.

    mask: semantic mask (pixel = class id). objects: JSON file of instance objects (read them with
    :func:`masklab.data.objects.read_objects`). instances/instance_classes: v1 instance-id map and
    {instance id: class id}.
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
        known = {k: v for k, v in row.items() if k in ROW_FIELDS}
        known.setdefault("mask", None)
        return cls(**known, extra={k: v for k, v in row.items() if k not in ROW_FIELDS})

    def to_row(self) -> dict[str, Any]:
        """The manifest row: known fields in declaration order, unset ones (None, {}) left out, then
        ``extra`` in its own order. A row written by v1 code comes back byte for byte."""
        clash = sorted(set(self.extra) & set(ROW_FIELDS))
        if clash:
            raise ValueError(f"sample '{self.id}': extra keys {clash} are manifest fields; set the fields instead")
        row = {name: getattr(self, name) for name in ROW_FIELDS}
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


ROW_FIELDS = tuple(f.name for f in fields(Sample) if f.name != "extra")
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
# The fields that name a file of the dataset (masklab.data.paths: they must stay inside it).
PATH_FIELDS = ("image", "mask", "instances", "objects")


def row_problems(row: object, links: LinkCheck | None = None) -> list[tuple[str, str]]:
    """(found, expected) for each reason ``row`` (a parsed manifest line) cannot be read as a sample: not a
    JSON object, required fields missing, a field of the wrong JSON type, a path that leaves the dataset folder
    (absolute or with ``..``; with ``links``, the dataset's :class:`LinkCheck`, a symlink leading out of it
    too); empty when it can."""
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
            found.append((f"{name} {short_repr(value)}", f"{name} {expected}"))
        elif name in PATH_FIELDS and isinstance(value, str):
            why = path_problem(value)
            if why is None and links is not None:
                leads = links.escape(value)
                why = None if leads is None else f"a symlink path to {leads}, outside {links.root}"
            if why is not None:
                found.append((f"{name} {short_repr(value)} ({why})", f"{name} {PATH_RULE}"))
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


def load_dataset(root: str | Path) -> Dataset:
    """Read classes.yaml and manifest.jsonl of a dataset folder (no pixel data is read)."""
    root = Path(root)
    if not root.is_dir() and not recover_folder(root):
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
    links = LinkCheck(root)
    for lineno, line in manifest_lines(path.read_bytes()):
        if line is None:
            raise DatasetFormatError(f"{path}:{lineno}: bad manifest row (bytes that are not UTF-8)")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}:{lineno}: bad manifest row (invalid JSON: {exc})") from exc
        bad = row_problems(row, links)
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
