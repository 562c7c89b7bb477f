"""Import a folder of images plus a folder of masks into the masklab dataset format.

Every input problem (missing pair, size mismatch, unreadable file, unmapped mask value, ...)
is collected first and raised together as :class:`ImportProblems`; nothing is written then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from masklab.console import progress
from masklab.data.check import Problem, ProblemList
from masklab.data.classes import ClassTable, default_color
from masklab.data.images import strict_image_loading, verify_file
from masklab.data.manifest import SPLITS, Dataset
from masklab.data.sample_files import safe_name
from masklab.data.splits import DEFAULT_FRACTIONS, check_fractions, random_splits
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_MODES = ("index", "binary", "rgb", "auto")
SNAPS = ("none", "threshold", "nearest")
SPLIT_MODES = ("random", "subfolders", "lists", "none")
# Folder names people actually use for splits in "subfolders" mode.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IGNORE = "ignore"
# Derived index classes beyond this almost always mean a greyscale/interpolated mask, not class ids.
MAX_DERIVED_CLASSES = 64
# With snap="nearest", a colour this far (RGB distance) from every palette colour and from every
# blend of two palette colours, covering this share of a mask, is a missing class, not JPEG noise.
FAR_COLOR_DISTANCE = 64.0
FAR_COLOR_SHARE = 0.01
_SINGLE_CHANNEL = ("L", "P", "I;16", "I;16B", "I;16L", "I", "1")


class ImportProblems(UserError):
    """All problems found in an import's input; the message lists one per line."""

    def __init__(self, problems: list[Problem], source: str):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) importing {source}; nothing was written:\n{lines}")


@dataclass
class _Pair:
    id: str
    image: Path
    mask: Path
    split: str | None = None


# ----------------------------------------------------------------------------- arguments


def _parse_int_key(key: object, what: str) -> int:
    try:
        return int(key)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise UserError(f"{what}: key {key!r} is not an integer") from None


def _parse_remap(remap: Mapping | None, ignore_index: int) -> dict[int, int]:
    """{source: class id | "ignore"} -> {source: target value}; string keys from YAML/CLI are accepted."""
    out: dict[int, int] = {}
    for key, target in (remap or {}).items():
        src = _parse_int_key(key, "remap")
        if isinstance(target, str) and target.strip().lower() == IGNORE:
            out[src] = ignore_index
        else:
            try:
                out[src] = int(target)
            except (TypeError, ValueError):
                raise UserError(f"remap: target {target!r} for {src} is neither a class id nor 'ignore'") from None
    return out


def _parse_colors(colors: Mapping | None, ignore_index: int) -> dict[tuple[int, int, int], int]:
    """{class id | "ignore": [r, g, b]} -> {(r, g, b): value}."""
    out: dict[tuple[int, int, int], int] = {}
    for key, rgb in (colors or {}).items():
        value = ignore_index if str(key).strip().lower() == IGNORE else _parse_int_key(key, "colors")
        try:
            color = tuple(int(c) for c in rgb)
        except (TypeError, ValueError):
            raise UserError(f"colors: {key}: {rgb!r} is not [r, g, b]") from None
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise UserError(f"colors: {key}: {list(color)} is not three values 0..255")
        if color in out and out[color] != value:
            raise UserError(f"colors: {list(color)} is given for both {out[color]} and {key}")
        out[color] = value  # type: ignore[index]
    return out


# ----------------------------------------------------------------------------- pairing and splits


def scan_images(folder: Path, recursive: bool, problems: ProblemList) -> dict[str, Path | None]:
    """Map relative path stem -> file for every image-like file; a stem present twice is a problem (-> None)."""
    found: dict[str, list[Path]] = {}
    files: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    for f in sorted(files):
        rel = f.relative_to(folder)
        if not f.is_file() or f.suffix.lower() not in IMAGE_EXTS or any(p.startswith(".") for p in rel.parts):
            continue
        found.setdefault(rel.with_suffix("").as_posix(), []).append(f)
    for stem, paths in found.items():
        if len(paths) > 1:
            problems.error(
                folder / stem, "duplicate stem", ", ".join(p.name for p in paths), "one file per stem (which one?)"
            )
    return {stem: paths[0] if len(paths) == 1 else None for stem, paths in found.items()}


def _pair(
    images: dict[str, Path | None], masks: dict[str, Path | None], split: str | None, problems: ProblemList
) -> list[_Pair]:
    """Pair by stem; stems already reported as duplicates (None) are skipped, not reported again."""
    pairs = []
    for stem in sorted(images.keys() | masks.keys()):
        image, mask = images.get(stem), masks.get(stem)
        if stem not in masks:
            problems.error(
                image or f"{stem}.*", "missing mask", "no mask with this stem", "a mask file with the same stem"
            )
        elif stem not in images:
            problems.error(
                mask or f"{stem}.*", "missing image", "no image with this stem", "an image file with the same stem"
            )
        elif image is not None and mask is not None:
            pairs.append(_Pair(stem, image, mask, split))
    return pairs


def _split_dirs(folder: Path, problems: ProblemList) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        split = SPLIT_ALIASES.get(child.name.lower())
        if child.is_dir() and split:
            out.setdefault(split, []).append(child)
        elif child.is_dir():
            problems.error(child, "unknown split folder", child.name, f"one of {sorted(SPLIT_ALIASES)}")
        elif child.suffix.lower() in IMAGE_EXTS:
            problems.error(child, "file outside split folders", child.name, "inside train/, val/ or test/")
    return out


def _pairs_subfolders(images: Path, masks: Path, problems: ProblemList) -> list[_Pair]:
    img_dirs, mask_dirs = _split_dirs(images, problems), _split_dirs(masks, problems)
    pairs: list[_Pair] = []
    for split in SPLITS:
        img_files: dict[str, Path | None] = {}
        mask_files: dict[str, Path | None] = {}
        for target, dirs in ((img_files, img_dirs.get(split, [])), (mask_files, mask_dirs.get(split, []))):
            for d in dirs:
                for stem, path in scan_images(d, recursive=True, problems=problems).items():
                    if stem in target:  # e.g. val/a.png and valid/a.png
                        problems.error(path, "duplicate stem", f"also {target[stem]}", "one file per stem")
                    else:
                        target[stem] = path
        pairs += _pair(img_files, mask_files, split, problems)
    seen: dict[str, _Pair] = {}
    for p in pairs:
        if p.id in seen:
            problems.error(p.image, "duplicate id", f"'{p.id}' in {seen[p.id].split} and {p.split}", "unique stems")
        seen[p.id] = p
    return pairs


def _read_list(path: Path, problems: ProblemList) -> list[str]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        problems.error(path, "unreadable split list", f"{type(exc).__name__}: {exc}", "a UTF-8 text file of stems")
        return []
    stems = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # Lists often carry file names ("a.png"); the stem is what pairs files.
        stems.append(line[: -len(Path(line).suffix)] if Path(line).suffix.lower() in IMAGE_EXTS else line)
    return stems


def _assign_lists(pairs: list[_Pair], split_lists: Mapping[str, Path], problems: ProblemList) -> None:
    where: dict[str, str] = {}
    for split, path in split_lists.items():
        for stem in _read_list(Path(path), problems):
            if stem in where and where[stem] != split:
                problems.error(path, "stem in two splits", f"'{stem}' in {where[stem]} and {split}",
                               "one split per stem")
            where.setdefault(stem, split)
    ids = {p.id for p in pairs}
    for stem in sorted(where.keys() - ids):
        problems.error(split_lists[where[stem]], "listed stem not found", f"'{stem}'", "an image/mask pair")
    for p in pairs:
        p.split = where.get(p.id)
        if p.split is None:
            problems.error(p.image, "stem in no split list", f"'{p.id}'", f"listed in one of {sorted(split_lists)}")


def _assign_random(pairs: list[_Pair], fractions: dict[str, float], seed: int) -> None:
    split_of = random_splits((p.id for p in pairs), fractions, seed)
    for p in pairs:
        p.split = split_of[p.id]


def check_split_arguments(split_mode: str, split_lists: Mapping | None) -> None:
    """Refuse a split_mode / split_lists combination :func:`pair_files` cannot follow."""
    if split_mode not in SPLIT_MODES:
        raise UserError(f"split_mode '{split_mode}' is not one of {list(SPLIT_MODES)}")
    if split_mode == "lists" and not split_lists:
        raise UserError("split_mode='lists' needs split_lists {split: file of stems}")
    if split_lists and set(split_lists) - set(SPLITS):
        raise UserError(f"split_lists: unknown split(s) {sorted(set(split_lists) - set(SPLITS))}")


def pair_files(
    images: Path, masks: Path, split_mode: str, fractions: dict[str, float], split_lists: Mapping | None, seed: int,
    problems: ProblemList,
) -> list[_Pair]:
    """Image/mask files of two folders paired by stem, each with its split (``split_mode``: random with
    ``fractions`` and ``seed``, subfolders, lists from ``split_lists`` or none = all train); adds a
    problem for every unpaired file, duplicate stem, split-list mismatch and id collision."""
    if split_mode == "subfolders":
        pairs = _pairs_subfolders(images, masks, problems)
    else:
        pairs = _pair(scan_images(images, False, problems), scan_images(masks, False, problems), None, problems)
        if split_mode == "lists":
            _assign_lists(pairs, split_lists or {}, problems)
        elif split_mode == "random":
            _assign_random(pairs, fractions, seed)
        else:
            for p in pairs:
                p.split = "train"
    if not pairs and not problems:
        problems.error(images, "no pairs", f"no {'/'.join(IMAGE_EXTS)} files pairing with {masks}", "image/mask pairs")
    safe_names: dict[str, str] = {}
    for p in pairs:  # the writer flattens "a/b" to "a__b"; two ids must not land on one file
        safe = safe_name(p.id)
        if safe_names.get(safe, p.id) != p.id:
            problems.error(p.image, "id collision", f"'{p.id}' and '{safe_names[safe]}'", "distinct file names")
        safe_names[safe] = p.id
    return pairs


# ----------------------------------------------------------------------------- masks


def _describe(values: Iterable[tuple[object, int]], limit: int = 6) -> str:
    items = list(values)
    text = ", ".join(f"{v} ({n} px)" for v, n in items[:limit])
    return text + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def _read_raw_mask(path: Path, want_rgb: bool, want_gray: bool) -> tuple[np.ndarray, str]:
    """Mask pixels as (H, W) int32 or (H, W, 3) uint8 when it is a colour image; also its mode."""
    verify_file(path)
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if want_rgb:
            return np.asarray(im.convert("RGB")), mode
        if mode in _SINGLE_CHANNEL:
            return np.asarray(im).astype(np.int32), mode
        if want_gray or mode == "LA":
            return np.asarray(im.convert("L")).astype(np.int32), mode
        return np.asarray(im.convert("RGB")), mode


def _unique_counts(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their pixel counts; bincount for small non-negative ints (no sort)."""
    lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
    if lo >= 0 and hi < 1 << 16:
        full = np.bincount(raw.ravel(), minlength=1)
        values = np.flatnonzero(full)
        return values, full[values]
    return np.unique(raw, return_counts=True)


def _segment_distance(points: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Distance of each point to the nearest palette colour or straight blend of two palette colours."""
    best = np.min(np.linalg.norm(points[:, None, :] - palette[None, :, :], axis=2), axis=1)
    for i in range(len(palette)):
        for j in range(i + 1, len(palette)):
            a, d = palette[i], palette[j] - palette[i]
            t = np.clip((points - a) @ d / max(float(d @ d), 1e-9), 0.0, 1.0)
            best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * d), axis=1))
    return best


class _MaskConverter:
    """Turns one mask file into a class-index array; returns problems instead of raising."""

    def __init__(
        self,
        mode: str,
        snap: str,
        threshold: int,
        remap: dict[int, int],
        colors: dict[tuple[int, int, int], int],
        ignore_index: int,
        allowed: set[int] | None,
    ):
        self.mode, self.snap, self.threshold = mode, snap, threshold
        self.remap, self.colors, self.ignore = remap, colors, ignore_index
        self.allowed = allowed  # None: classes are derived from what the masks contain

    def __call__(self, path: Path, problems: ProblemList) -> np.ndarray | None:
        raw, pil_mode = _read_raw_mask(path, self.mode == "rgb", self.mode == "binary" and self.snap == "threshold")
        if self.mode == "rgb":
            return self._rgb(path, raw, problems)
        jpeg = path.suffix.lower() in (".jpg", ".jpeg")
        if self.mode == "index" and jpeg:
            problems.error(
                path,
                "lossy mask",
                "JPEG index mask (compression noise changes class ids)",
                "PNG class ids; for JPEG use mask_mode='binary' snap='threshold' or mask_mode='rgb' snap='nearest'",
            )
            return None
        if raw.ndim == 3:
            if not (np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])):
                problems.error(
                    path,
                    "colour mask",
                    f"mode {pil_mode} with differing channels",
                    "single-channel values (use mask_mode='rgb' with colors, or snap='threshold' for binary)",
                )
                return None
            raw = raw[..., 0].astype(np.int32)  # grey stored as RGB: all channels carry the same value
        values, counts = _unique_counts(raw)
        lut = np.zeros(len(values), dtype=np.int64)
        unmapped: list[tuple[object, int]] = []
        for k, v in enumerate(int(v) for v in values):
            if v in self.remap:
                lut[k] = self.remap[v]
            elif self.mode == "index":
                lut[k] = v
            elif self.snap == "threshold":
                lut[k] = int(v >= self.threshold)
            elif v in (0, 1, 255):
                lut[k] = int(v != 0)
            else:
                unmapped.append((v, int(counts[k])))
        if unmapped:
            hint = "; JPEG masks need snap='threshold'" if jpeg else ""
            unmapped.sort(key=lambda vn: -vn[1])
            problems.error(path, "mask value not binary", _describe(unmapped), f"0 and 255 (or 0 and 1){hint}")
            return None
        if (
            self.mode == "binary"
            and self.snap != "threshold"
            and {1, 255} <= {int(v) for v in values} - self.remap.keys()
        ):
            problems.error(path, "ambiguous binary mask", "both 1 and 255 present", "{0,255} or {0,1}")
            return None
        if not self._valid(path, lut, counts, problems):
            return None
        if values[0] >= 0 and values[-1] < 1 << 16:  # dense lookup table: much faster than searching
            full = np.zeros(int(values[-1]) + 1, dtype=np.uint8)
            full[values] = lut
            return full[raw]
        return lut.astype(np.uint8)[np.searchsorted(values, raw)]

    def _rgb(self, path: Path, raw: np.ndarray, problems: ProblemList) -> np.ndarray | None:
        if raw.ndim == 2:  # grey or palette mask given in rgb mode: compare as grey colours
            raw = np.repeat(raw[..., None], 3, axis=2).astype(np.uint8)
        packed = (raw[..., 0].astype(np.int32) << 16) | (raw[..., 1].astype(np.int32) << 8) | raw[..., 2]
        values, inverse, counts = np.unique(packed, return_inverse=True, return_counts=True)
        rgb = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], axis=1)
        palette = np.array(list(self.colors), dtype=np.float64).reshape(-1, 3)
        ids = np.array(list(self.colors.values()), dtype=np.int64)
        lut = np.zeros(len(values), dtype=np.int64)
        known = np.array([tuple(c) in self.colors for c in rgb.tolist()], dtype=bool)
        lut[known] = [self.colors[tuple(c)] for c in rgb[known].tolist()]
        unknown = np.flatnonzero(~known)
        if len(unknown) and self.snap == "nearest" and len(palette):
            pts = rgb[unknown].astype(np.float64)
            lut[unknown] = ids[np.argmin(np.linalg.norm(pts[:, None, :] - palette[None], axis=2), axis=1)]
            far = np.flatnonzero(_segment_distance(pts, palette) > FAR_COLOR_DISTANCE)
            # JPEG spreads one region over many near-identical colours, so judge the far pixels together.
            if counts[unknown[far]].sum() >= FAR_COLOR_SHARE * packed.size:
                top = far[np.argsort(-counts[unknown[far]], kind="stable")]
                problems.error(
                    path,
                    "colour far from palette",
                    f"{int(counts[unknown[far]].sum())} px, e.g. "
                    + _describe((tuple(rgb[unknown[i]].tolist()), int(counts[unknown[i]])) for i in top),
                    f"a colour in colors {[list(c) for c in self.colors]} (missing class?)",
                )
                return None
        elif len(unknown):
            problems.error(
                path,
                "unknown mask colour",
                _describe((tuple(rgb[i].tolist()), int(counts[i])) for i in unknown),
                f"one of {[list(c) for c in self.colors]}"
                + ("; JPEG masks need snap='nearest'" if path.suffix.lower() in (".jpg", ".jpeg") else ""),
            )
            return None
        lut = np.array([self.remap.get(int(v), int(v)) for v in lut], dtype=np.int64)
        if not self._valid(path, lut, counts, problems):
            return None
        return lut.astype(np.uint8)[inverse.reshape(packed.shape)]

    def _valid(self, path: Path, lut: np.ndarray, counts: np.ndarray, problems: ProblemList) -> bool:
        """Check the target values (with their pixel counts) before any pixel is mapped."""
        total: dict[int, int] = {}
        for v, n in zip(lut.tolist(), counts.tolist()):
            total[v] = total.get(v, 0) + n
        if self.allowed is not None:
            bad = [(v, n) for v, n in sorted(total.items()) if v not in self.allowed]
            expected = f"class ids {sorted(self.allowed - {self.ignore})} or ignore {self.ignore} (or remap it)"
        else:
            bad = [(v, n) for v, n in sorted(total.items()) if not 0 <= v <= 255]
            expected = "8-bit class ids 0..255 (remap them)"
        if bad:
            problems.error(path, "mask value not mapped to a class", _describe(bad), expected)
        return not bad


def _detect_mode(pairs: list[_Pair], colors: Mapping | None, snap: str) -> tuple[str, ProblemList]:
    """mask_mode='auto': rgb when colors are given, binary when every mask holds only 0/255, else index."""
    problems = ProblemList()
    if colors:
        return "rgb", problems
    if snap == "threshold":
        return "binary", problems
    seen: set[int] = set()
    for p in pairs:
        try:
            raw, _ = _read_raw_mask(p.mask, want_rgb=False, want_gray=False)
        except Exception:
            continue  # reported with every other unreadable file in the main pass
        if raw.ndim == 3 and not (
            np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 1], raw[..., 2])
        ):
            problems.error(p.mask, "colour mask", "RGB mask with mask_mode='auto'", "colors={class_id: [r, g, b]}")
            continue
        seen.update(int(v) for v in np.unique(raw))
    return ("binary" if seen and seen <= {0, 255} and 255 in seen else "index"), problems


# ----------------------------------------------------------------------------- import


def _derived_table(max_value: int, colors: dict[tuple[int, int, int], int], ignore_index: int) -> dict:
    color_of = {v: c for c, v in colors.items() if v != ignore_index}
    n = max(2, max_value + 1, max(color_of, default=0) + 1)
    return {
        "ignore_index": ignore_index,
        "classes": [
            {
                "id": i,
                "name": "background" if i == 0 else f"class_{i}",
                "color": list(color_of.get(i, default_color(i))),
            }
            for i in range(n)
        ],
    }


def check_mask_mode(mask_mode: str, snap: str) -> None:
    """Refuse a mask_mode or snap :class:`MaskRules` does not know, or a combination that does not fit."""
    if mask_mode not in MASK_MODES:
        raise UserError(f"mask_mode '{mask_mode}' is not one of {list(MASK_MODES)}")
    if snap not in SNAPS:
        raise UserError(f"snap '{snap}' is not one of {list(SNAPS)}")
    if snap == "threshold" and mask_mode not in ("binary", "auto"):
        raise UserError(f"snap='threshold' needs mask_mode='binary', not '{mask_mode}'")
    if snap == "nearest" and mask_mode not in ("rgb", "auto"):
        raise UserError(f"snap='nearest' needs mask_mode='rgb', not '{mask_mode}'")


@dataclass(frozen=True)
class MaskRules:
    """How import_folder turns mask files into class ids: its checked mask arguments. ``mode``: mask_mode as
    given ('auto' is resolved by :meth:`converter`); ``table``: the class table from ``classes``, or None when
    classes are derived from the masks."""

    mode: str
    snap: str
    threshold: int
    remap: dict[int, int]
    colors: dict[tuple[int, int, int], int]
    ignore_index: int
    table: ClassTable | None

    @classmethod
    def parse(cls, mask_mode: str, snap: str, threshold: int, remap: Mapping | None, colors: Mapping | None,
              ignore_index: int, classes: list[dict] | None) -> MaskRules:
        """Parse ``remap``, ``colors`` and ``classes`` (string keys from YAML/CLI accepted); UserError for values
        that do not fit the mode."""
        remap_ = _parse_remap(remap, ignore_index)
        colors_ = _parse_colors(colors, ignore_index)
        if mask_mode == "rgb" and not colors_:
            raise UserError("mask_mode='rgb' needs colors {class_id: [r, g, b]}")
        if snap == "nearest" and not colors_:
            raise UserError("snap='nearest' needs colors {class_id: [r, g, b]} to snap to")
        if classes is None and ignore_index < 2:
            raise UserError(f"ignore_index {ignore_index} collides with derived class ids 0, 1; pass classes")
        table = None
        if classes is not None:
            table = ClassTable.from_dict({"classes": classes, "ignore_index": ignore_index}, source="classes argument")
        return cls(mask_mode, snap, threshold, remap_, colors_, ignore_index, table)

    def converter(self, pairs: list[_Pair], problems: ProblemList) -> _MaskConverter:
        """The converter for these masks; mode 'auto' is resolved by reading them (what it finds odd is added to
        ``problems``)."""
        mode = self.mode
        if mode == "auto":
            mode, auto_problems = _detect_mode(pairs, self.colors, self.snap)
            problems += auto_problems
        allowed = None if self.table is None else set(self.table.ids) | {self.ignore_index}
        return _MaskConverter(mode, self.snap, self.threshold, self.remap, self.colors, self.ignore_index, allowed)


def _converted_pair(pair: _Pair, convert: _MaskConverter, problems: ProblemList) -> np.ndarray | None:
    """The class-id mask of one image/mask pair, or None after adding problems (an image that does not read, a
    mask that does not convert or whose size differs from the image's)."""
    size = None
    try:
        verify_file(pair.image)
        with Image.open(pair.image) as im:
            im.load()  # full decode: truncated images must fail here, not in training
            size = im.size
    except Exception as exc:
        problems.error(pair.image, "unreadable image", f"{type(exc).__name__}: {exc}", "a readable image")
    try:
        target = convert(pair.mask, problems)
    except Exception as exc:
        problems.error(pair.mask, "unreadable mask", f"{type(exc).__name__}: {exc}", "a readable image")
        return None
    if target is None or size is None:
        return None
    if target.shape != (size[1], size[0]):
        problems.error(pair.mask, "size mismatch", f"{target.shape[1]}x{target.shape[0]}",
                       f"{size[0]}x{size[1]} (image)")
        return None
    return target


@dataclass
class MaskValues:
    """What the converted masks hold, for deriving classes from them: how many converted, the largest class id
    (ignore_index aside) and whether any pixel is ignore_index."""

    ignore_index: int
    converted: int = 0
    max_value: int = 0
    saw_ignore: bool = False

    def add(self, target: np.ndarray) -> None:
        self.converted += 1
        is_ignore = target == self.ignore_index
        self.saw_ignore = self.saw_ignore or bool(is_ignore.any())
        if not is_ignore.all():
            self.max_value = max(self.max_value, int(target[~is_ignore].max()))


def _derived_classes(seen: MaskValues, mode: str, rules: MaskRules, masks: Path,
                     problems: ProblemList) -> ClassTable | None:
    """Classes 0..largest value found, judged on every mask that converted even when others had problems; None
    without any converted mask, when other problems were found, or after adding a problem when the values do
    not look like class ids."""
    if not seen.converted:
        return None
    ignore_index = rules.ignore_index
    # {0,255} masks read as index masks would silently turn all foreground into "ignore".
    if mode == "index" and seen.saw_ignore and seen.max_value == 0 and ignore_index not in rules.remap.values():
        problems.error(
            masks,
            "masks look binary",
            f"only 0 and {ignore_index} (= ignore_index) in every mask",
            "class ids; use mask_mode='binary' or remap={255: 1}",
        )
    elif seen.max_value + 1 > MAX_DERIVED_CLASSES:
        problems.error(
            masks,
            "too many classes",
            f"values up to {seen.max_value}",
            f"at most {MAX_DERIVED_CLASSES} derived classes (greyscale or resized mask? pass classes or remap)",
        )
    elif seen.max_value >= ignore_index:
        problems.error(masks, "value hits ignore_index", f"class ids up to {seen.max_value}", f"< {ignore_index}")
    elif not problems:
        return ClassTable.from_dict(_derived_table(seen.max_value, rules.colors, ignore_index))
    return None


def import_folder(
    images: Path,
    masks: Path,
    out_root: Path,
    *,
    classes: list[dict] | None,
    mask_mode: str = "index",
    colors: dict | None = None,
    snap: str = "none",
    threshold: int = 128,
    remap: dict | None = None,
    ignore_index: int = 255,
    split_mode: str = "random",
    fractions: Mapping[str, float] | None = DEFAULT_FRACTIONS,
    split_lists: dict | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Dataset:
    """Import image/mask files paired by stem into a masklab dataset at ``out_root``.

    mask_mode: "index" (single-channel class ids), "binary" ({0,255} or {0,1}; snap="threshold"
    maps value >= threshold to 1), "rgb" (``colors`` {class id | "ignore": [r,g,b]}; snap="nearest"
    absorbs JPEG noise) or "auto". ``remap`` {source value: class id | "ignore"} is applied before
    validation (in rgb mode to the ids the colours map to). Raises :class:`ImportProblems` listing
    every problem, in which case nothing is written.
    """
    images, masks, out_root = Path(images), Path(masks), Path(out_root)
    check_mask_mode(mask_mode, snap)
    check_split_arguments(split_mode, split_lists)
    if not 0 <= ignore_index <= 255:
        raise UserError(f"ignore_index {ignore_index} does not fit an 8-bit mask")
    fracs = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    rules = MaskRules.parse(mask_mode, snap, threshold, remap, colors, ignore_index, classes)
    for folder, what in ((images, "images"), (masks, "masks")):
        if not folder.is_dir():
            raise UserError(f"{folder}: {what} folder does not exist")

    placeholder = rules.table or ClassTable.from_dict(_derived_table(1, {}, ignore_index))
    # Opening the writer first makes "dataset exists" fail before any file is read.
    with DatasetWriter(out_root, placeholder, overwrite=overwrite) as writer:
        problems = ProblemList()
        pairs = pair_files(images, masks, split_mode, fracs, split_lists, seed, problems)
        convert = rules.converter(pairs, problems)
        seen = MaskValues(ignore_index)
        with strict_image_loading():
            for p in progress(sorted(pairs, key=lambda p: p.id), f"Importing {images.name}"):
                target = _converted_pair(p, convert, problems)
                if target is None:
                    continue
                seen.add(target)
                if not problems:  # once anything failed the import is lost; keep checking, stop writing
                    writer.add(p.id, p.image, target.astype(np.uint8), p.split or "train")
        derived = None if rules.table is not None else _derived_classes(seen, convert.mode, rules, masks, problems)
        if problems:
            raise ImportProblems(list(problems), f"{images} + {masks}")
        return writer.commit(derived)
