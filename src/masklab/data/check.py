"""Dataset checker: reads a masklab dataset and lists every problem it finds, not just the first.

``check_dataset`` does the full pixel-level scan (and, given an :class:`ObjectStats`, counts the
instance objects it reads); ``check_cached`` skips it when nothing on disk changed since the last
scan; ``format_problems`` renders the result for a terminal.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile

from masklab.console import progress
from masklab.data.classes import CLASSES_FILE, ClassTable, load_class_table
from masklab.data.errors import DatasetFormatError
from masklab.data.fingerprints import Fingerprint, fingerprint
from masklab.data.images import verify_file
from masklab.data.manifest import (
    MANIFEST_FILE,
    SPLIT_NAME_RULE,
    STATUSES,
    Sample,
    is_valid_split,
    manifest_lines,
    row_problems,
)
from masklab.data.objects import OBJECTS_DIR, ObjectError, decode_object, read_objects_file
from masklab.data.paths import LinkCheck
from masklab.data.sample_files import file_exists, file_sha256
from masklab.files import atomic_write

Severity = Literal["error", "warning"]

# EXIF tag 0x0112; 1 means "pixels are stored upright".
_EXIF_ORIENTATION = 0x0112
_CACHE_VERSION = 3  # 3: leak warnings
# Folders whose files the manifest references (objects/ holds per-object PNGs one level down).
_DATA_DIRS = ("images", "masks", "instances", OBJECTS_DIR)


@dataclass(frozen=True)
class Problem:
    """One finding about a dataset file: what was found and what was expected instead."""

    severity: Severity
    file: str
    kind: str
    found: str
    expected: str

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.file}: {self.kind}: found {self.found}; expected {self.expected}"


class ProblemList(list[Problem]):
    """A problem list with shorthands, so each check stays one readable call (the dataset check and the
    importers, which collect every error before they give up)."""

    def error(self, file: str | Path, kind: str, found: str, expected: str) -> None:
        self.append(Problem("error", str(file), kind, found, expected))

    def warning(self, file: str | Path, kind: str, found: str, expected: str) -> None:
        self.append(Problem("warning", str(file), kind, found, expected))


@dataclass
class ObjectStats:
    """Instance objects met by a check: per split the object count of each sample that has objects
    (crowd regions included) and the crowd regions; per class id the objects."""

    per_image: dict[str, list[int]] = field(default_factory=dict)
    crowd: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)

    def add(self, split: str, class_ids: Iterable[int], iscrowd: Iterable[int]) -> None:
        """Count one sample's readable objects."""
        class_ids, iscrowd = list(class_ids), list(iscrowd)
        self.per_image.setdefault(split, []).append(len(class_ids))
        self.crowd[split] += sum(1 for c in iscrowd if c)
        self.classes.update(class_ids)

    def lines(self, table: ClassTable | None = None) -> list[str]:
        """One line per split ('val: 12 images with objects, 340 objects, 28.3 per image (min 3, median 27,
        max 71), 2 crowd regions'), then one with the objects per class; none without objects."""
        out = []
        for split, counts in self.per_image.items():
            n = np.asarray(counts)
            crowd = f", {self.crowd[split]} crowd region{'s' if self.crowd[split] != 1 else ''}" \
                if self.crowd[split] else ""
            out.append(f"objects in {split}: {len(n)} image{'s' if len(n) != 1 else ''} with objects, {int(n.sum())} "
                       f"objects, {n.mean():.1f} per image (min {int(n.min())}, median {float(np.median(n)):g}, "
                       f"max {int(n.max())}){crowd}")
        if self.classes:
            names = dict(zip(table.ids, table.names)) if table is not None else {}
            out.append("objects per class: " + ", ".join(f"{names.get(c, f'class {c}')} {n}"
                                                          for c, n in sorted(self.classes.items())))
        return out


def _count_values(values: np.ndarray, counts: np.ndarray, limit: int = 8) -> str:
    """'7 (64 px), 9 (3 px)' for the most frequent values, so messages stay one line."""
    order = np.argsort(-counts, kind="stable")
    parts = [f"{int(values[i])} ({int(counts[i])} px)" for i in order[:limit]]
    if len(values) > limit:
        parts.append(f"... {len(values) - limit} more values")
    return ", ".join(parts)


def _read_manifest(root: Path, problems: ProblemList) -> list[tuple[int, Sample]]:
    """Parse manifest.jsonl leniently: every bad row becomes a problem instead of stopping the scan."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        problems.error(MANIFEST_FILE, "missing file", "no manifest.jsonl", "the dataset manifest")
        return []
    rows: list[tuple[int, Sample]] = []
    links = LinkCheck(root)
    for lineno, line in manifest_lines(path.read_bytes()):
        where = f"{MANIFEST_FILE}:{lineno}"
        if line is None:
            problems.error(where, "bad manifest row", "bytes that are not UTF-8", "one JSON object in UTF-8")
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.error(where, "bad manifest row", f"invalid JSON ({exc.msg})", "one JSON object")
            continue
        bad = row_problems(raw, links)
        for found, expected in bad:
            problems.error(where, "bad manifest row", found, expected)
        if not bad:
            rows.append((lineno, Sample.from_row(raw)))
    return rows


def _check_image(root: Path, s: Sample, problems: ProblemList,
                 prints: dict[str, Fingerprint] | None = None) -> tuple[int, int] | None:
    """Check one image file; returns its (width, height) when it could be opened. ``prints``: gets the
    image's fingerprints (for the leak check) while its pixels are decoded anyway."""
    path = root / s.image
    if not file_exists(path):
        problems.error(s.image, "missing file", "no such file", f"image of sample '{s.id}'")
        return None
    if s.image_sha256 and file_sha256(path) != s.image_sha256:
        problems.error(s.image, "checksum mismatch", "sha256 differs", "manifest sha256 (file changed since import)")
    try:
        verify_file(path)
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            try:
                orientation = im.getexif().get(_EXIF_ORIENTATION)
            except Exception:  # a broken EXIF block must not hide the pixel checks below
                orientation = None
            im.load()  # decodes every pixel: this is what catches truncated pixel data
            if prints is not None and mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
                prints[s.id] = fingerprint(im)
    except Exception as exc:
        problems.error(s.image, "unreadable image", f"{type(exc).__name__}: {exc}", "a readable image")
        return None
    if mode in ("RGBA", "LA", "PA"):
        problems.warning(s.image, "alpha channel", f"mode {mode}", "RGB or L (alpha is dropped)")
    elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        problems.warning(s.image, "high bit depth", f"mode {mode}", "8-bit (rescaled min..max per image)")
    elif mode == "P":
        problems.warning(s.image, "palette image", "mode P", "RGB or L (converted via palette)")
    elif mode not in ("RGB", "L"):
        problems.warning(s.image, "unusual image mode", f"mode {mode}", "RGB or L")
    if orientation not in (None, 1):
        problems.warning(
            s.image,
            "EXIF orientation",
            f"orientation tag {orientation}",
            "1 (pixels on disk are rotated/flipped relative to how viewers show them; masks follow the disk)",
        )
    if size != (s.width, s.height):
        problems.error(s.image, "size mismatch", f"{size[0]}x{size[1]}", f"{s.width}x{s.height} (manifest)")
    return size


def _check_mask(
    root: Path, s: Sample, image_size: tuple[int, int] | None, table: ClassTable | None, problems: ProblemList
) -> None:
    if not s.mask:
        return
    path = root / s.mask
    if not file_exists(path):
        problems.error(s.mask, "missing file", "no such file", f"mask of sample '{s.id}'")
        return
    if s.mask_sha256 and file_sha256(path) != s.mask_sha256:
        problems.error(s.mask, "checksum mismatch", "sha256 differs", "manifest sha256 (file changed since import)")
    try:
        verify_file(path)
        with Image.open(path) as im:
            im.load()
            mode, size = im.mode, im.size
            arr = np.asarray(im) if mode in ("L", "P", "I;16", "I;16B", "I;16L", "I") else None
    except Exception as exc:
        problems.error(s.mask, "unreadable mask", f"{type(exc).__name__}: {exc}", "a readable PNG")
        return
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        problems.error(s.mask, "mask bit depth", f"mode {mode} (16/32-bit)", "8-bit single-channel L")
    elif mode == "P":
        problems.warning(s.mask, "palette mask", "mode P", "L (palette indices are read as class ids)")
    elif mode != "L":
        problems.error(s.mask, "mask not single-channel", f"mode {mode}", "8-bit single-channel L of class ids")
    if image_size is not None and size != image_size:
        problems.error(s.mask, "size mismatch", f"{size[0]}x{size[1]}", f"{image_size[0]}x{image_size[1]} (image)")
    elif size != (s.width, s.height):
        problems.error(s.mask, "size mismatch", f"{size[0]}x{size[1]}", f"{s.width}x{s.height} (manifest)")
    if arr is not None and table is not None:
        if arr.dtype.kind == "u":  # bincount: no sort, fast on 8/16-bit masks
            full = np.bincount(arr.ravel(), minlength=1)
            values = np.flatnonzero(full)
            counts = full[values]
        else:
            values, counts = np.unique(arr, return_counts=True)
        allowed = set(table.ids) | {table.ignore_index}
        bad = np.array([int(v) not in allowed for v in values], dtype=bool)
        if bad.any():
            problems.error(
                s.mask,
                "unknown mask values",
                _count_values(values[bad], counts[bad]),
                f"class ids {table.ids} or ignore_index {table.ignore_index}",
            )


def _check_instances(root: Path, s: Sample, table: ClassTable | None, problems: ProblemList,
                     stats: ObjectStats | None = None) -> None:
    if not s.instances:
        return
    if s.objects:  # read_objects reads a v2 objects file rather than the v1 map: count that one only
        stats = None
    path = root / s.instances
    if not file_exists(path):
        problems.error(s.instances, "missing file", "no such file", f"instances of sample '{s.id}'")
        return
    try:
        verify_file(path)
        with Image.open(path) as im:
            im.load()
            size = im.size
            ids = np.unique(np.asarray(im)) if stats is not None else None
    except Exception as exc:
        problems.error(s.instances, "unreadable instances", f"{type(exc).__name__}: {exc}", "a PNG")
        return
    if ids is not None:
        present = [int(i) for i in ids if i != 0]
        stats.add(s.split, (int(s.instance_classes.get(str(i), -1)) for i in present), [0] * len(present))
    if size != (s.width, s.height):
        problems.error(s.instances, "size mismatch", f"{size[0]}x{size[1]}", f"{s.width}x{s.height} (manifest)")
    if table is not None:
        bad = {k: v for k, v in s.instance_classes.items() if v not in table.ids}
        if bad:
            problems.error(s.instances, "unknown instance classes", f"{bad}", f"class ids {table.ids}")


def _check_row_fields(where: str, s: Sample, problems: ProblemList) -> None:
    """The v2 row fields: split name, status, fold, and whether the targets fit labeled/unlabeled."""
    if not is_valid_split(s.split):
        problems.error(where, "invalid split name", repr(s.split), SPLIT_NAME_RULE)
    if s.status is not None and s.status not in STATUSES:
        problems.error(where, "unknown status", repr(s.status), f"one of {list(STATUSES)} (or no status)")
    if s.fold is not None and (not isinstance(s.fold, int) or isinstance(s.fold, bool)):
        problems.error(where, "bad fold", repr(s.fold), "an integer fold number")
    targets = [k for k in ("mask", "objects", "instances") if getattr(s, k)]
    if s.labeled and not targets:
        problems.error(
            f"sample '{s.id}'",
            "no mask",
            f"no mask and no objects in manifest row (split '{s.split}', status {s.status!r})",
            "a mask or objects file; for an image without labels split 'pool' or status 'unlabeled'",
        )
    elif not s.labeled and targets:
        problems.error(
            f"sample '{s.id}'",
            "target on unlabeled sample",
            f"{', '.join(targets)} with split '{s.split}', status {s.status!r}",
            "no target (split 'pool' / status 'unlabeled' mean not labeled yet), or a labeled split/status",
        )


def _check_objects(
    root: Path,
    s: Sample,
    image_size: tuple[int, int] | None,
    table: ClassTable | None,
    problems: ProblemList,
    referenced: set[str],
    stats: ObjectStats | None = None,
) -> None:
    """Each object: decodes, lies on the image grid, is not empty, has a known class; counted in ``stats``."""
    if not s.objects:
        return
    if s.objects_sha256 and file_exists(root / s.objects) and file_sha256(root / s.objects) != s.objects_sha256:
        problems.error(s.objects, "checksum mismatch", "sha256 differs", "manifest sha256 (file changed since import)")
    try:
        entries = read_objects_file(root, s.objects)
    except ObjectError as exc:
        problems.error(exc.file, exc.kind, exc.found, f"{exc.expected} (objects of sample '{s.id}')")
        return
    width, height = image_size or (s.width, s.height)
    against = "image" if image_size else "manifest"
    found: list[tuple[int, int]] = []  # (class id, iscrowd) of the objects that decode
    for k, entry in enumerate(entries):
        mask = entry.get("mask") if isinstance(entry, dict) else None
        png = mask.get("png") if isinstance(mask, dict) else None
        if isinstance(png, str):
            referenced.add(png)  # even when unreadable: reported once, not again as unreferenced
        try:
            obj = decode_object(root, s.objects, k, entry, check=True)
        except ObjectError as exc:
            problems.error(exc.file, exc.kind, exc.found, exc.expected)
            continue
        if obj.mask.shape != (height, width):
            size = f"{obj.mask.shape[1]}x{obj.mask.shape[0]}"
            problems.error(obj.file, "size mismatch", f"object {k}: {size}", f"{width}x{height} ({against})")
            continue
        found.append((obj.class_id, obj.iscrowd))
        area = int(obj.mask.sum())
        if area == 0:
            problems.error(obj.file, "empty object", f"object {k}: 0 px", "at least one pixel (drop the object)")
        elif area == 1:
            problems.warning(obj.file, "one-pixel object", f"object {k}: 1 px", "an object of more than one pixel")
        if table is not None:
            if obj.class_id not in table.ids:
                problems.error(s.objects, "unknown object class", f"object {k}: class_id {obj.class_id}",
                               f"class ids {table.ids}")
            elif obj.class_id == 0:
                problems.warning(s.objects, "background object class", f"object {k}: class_id 0",
                                 f"an object class (thing classes: {table.thing_ids})")
    if stats is not None:
        stats.add(s.split, (c for c, _ in found), (crowd for _, crowd in found))


def check_dataset(root: Path, stats: ObjectStats | None = None) -> list[Problem]:
    """Read every file of a masklab dataset and return all problems found (empty list: clean); the instance
    objects read on the way are counted into ``stats`` when given."""
    root = Path(root)
    problems = ProblemList()
    if not root.is_dir():
        return [Problem("error", str(root), "missing dataset", "no such folder", "a masklab dataset folder")]
    table: ClassTable | None = None
    try:
        table = load_class_table(root)
    except DatasetFormatError as exc:
        problems.error(CLASSES_FILE, "bad classes file", str(exc), "valid classes.yaml")
    rows = _read_manifest(root, problems)

    ids = Counter(s.id for _, s in rows)
    for sid, n in sorted(ids.items()):
        if n > 1:
            lines = [str(no) for no, s in rows if s.id == sid]
            problems.error(
                MANIFEST_FILE, "duplicate id", f"'{sid}' {n} times (lines {', '.join(lines)})", "unique sample ids"
            )

    referenced: set[str] = set()
    prints: dict[str, Fingerprint] = {}
    # Someone may have set Pillow's global LOAD_TRUNCATED_IMAGES; truncated files must still fail here.
    load_truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            # Pillow warns about e.g. odd EXIF blocks; the problems below say what matters.
            warnings.simplefilter("ignore")
            for lineno, s in progress(rows, f"Checking {root.name}"):
                referenced.update(p for p in (s.image, s.mask, s.instances, s.objects) if isinstance(p, str))
                _check_row_fields(f"{MANIFEST_FILE}:{lineno}", s, problems)
                size = _check_image(root, s, problems, prints)
                _check_mask(root, s, size, table, problems)
                _check_objects(root, s, size, table, problems, referenced, stats)
                _check_instances(root, s, table, problems, stats)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated

    for split, severity in (("train", "error"), ("val", "warning")):
        if not any(s.split == split for _, s in rows):
            problems.append(
                Problem(
                    severity, MANIFEST_FILE, "empty split", f"no '{split}' samples", f"at least one '{split}' sample"
                )
            )

    for rel in _data_files(root):
        if rel not in referenced:
            problems.warning(rel, "unreferenced file", "not in manifest", "listed in manifest")
    _check_leaks([s for _, s in rows if ids[s.id] == 1], prints, problems)
    return list(problems)


def _check_leaks(samples: list[Sample], prints: dict[str, Fingerprint], problems: ProblemList) -> None:
    """Warn about each image that is an exact or near copy (pHash within 4 bits: resized, re-encoded) of an
    image in another split: a model would be tested on what it trained on."""
    from masklab.data.duplicates import DuplicateRules, duplicate_pairs

    samples = [s for s in samples if s.id in prints]
    pairs = duplicate_pairs([s.id for s in samples], [s.split for s in samples], prints, DuplicateRules())
    image = {s.id: s.image for s in samples}
    for row in pairs[pairs["leak"]].itertuples(index=False):
        what = "an exact copy" if row.kind == "exact" else f"a near copy (perceptual hashes {row.hash_bits} bits apart)"
        problems.warning(image[row.id_b], "leak across splits",
                         f"{row.split_b} sample '{row.id_b}' is {what} of {row.split_a} sample '{row.id_a}'",
                         "each image in one split only (`masklab curate duplicates` lists every pair)")


def _data_files(root: Path) -> list[str]:
    """Every file under the data folders, as dataset-relative POSIX paths, sorted."""
    files = []
    for sub in _DATA_DIRS:
        folder = root / sub
        if folder.is_dir():
            files += [f.relative_to(root).as_posix() for f in folder.rglob("*") if f.is_file()]
    return sorted(files)


def _dataset_key(root: Path) -> str:
    """Hash of everything a check depends on: manifest and classes content plus file sizes/mtimes."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}".encode())
    for name in (MANIFEST_FILE, CLASSES_FILE):
        path = root / name
        h.update(name.encode())
        h.update(file_sha256(path).encode() if path.is_file() else b"<missing>")
    for rel in _data_files(root):
        st = (root / rel).stat()
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def check_cached(root: Path, cache_dir: Path) -> list[Problem]:
    """Like :func:`check_dataset`, but reuses the stored result while the dataset files are unchanged."""
    root = Path(root).resolve()
    cache_dir = Path(cache_dir)
    if not root.is_dir():
        return check_dataset(root)
    key = _dataset_key(root)
    # One cache file per dataset folder, overwritten when stale, so the cache does not grow.
    cache_file = cache_dir / f"check-{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}.json"
    if cache_file.is_file():
        try:
            raw = json.loads(cache_file.read_bytes())
            if isinstance(raw, dict) and raw.get("key") == key:
                return [Problem(**p) for p in raw["problems"]]
        except (ValueError, KeyError, TypeError):  # ValueError: not UTF-8, not JSON
            pass  # a corrupt cache is just a miss
    problems = check_dataset(root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": key, "root": str(root), "problems": [asdict(p) for p in problems]}, indent=1)
    atomic_write(cache_file, lambda tmp: tmp.write_text(text))
    return problems


def format_problems(problems: ProblemList) -> str:
    """Table-like text: errors first, then warnings, followed by counts per severity and kind."""
    if not problems:
        return "no problems found"
    ordered = sorted(problems, key=lambda p: 0 if p.severity == "error" else 1)  # stable: keeps file order
    header = ("severity", "file", "kind", "found", "expected")
    rows = [header] + [(p.severity, p.file, p.kind, p.found, p.expected) for p in ordered]
    # Long file/kind cells would push everything right; cap the aligned columns and let the rest run on.
    widths = [min(max(len(r[i]) for r in rows), cap) for i, cap in enumerate((8, 48, 26, 40))]
    lines = []
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(4)] + [r[4]]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  --------")
    n_err = sum(p.severity == "error" for p in problems)
    n_warn = len(problems) - n_err
    kinds = Counter((p.severity, p.kind) for p in ordered)
    summary = ", ".join(f"{kind} x{n}" for (_, kind), n in kinds.items())
    lines.append("")
    lines.append(f"{n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''} ({summary})")
    return "\n".join(lines)
