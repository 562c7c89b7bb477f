"""Import COCO instance annotations (one JSON file, or one per split) plus a folder of images.

What is read from the JSON (``images``, ``annotations``, ``categories``)::

    images       {id, file_name, width, height}      file_name relative to the images folder (or absolute)
    annotations  {id, image_id, category_id, segmentation, [iscrowd]}
                 segmentation: polygons [[x1, y1, x2, y2, ...], ...], uncompressed RLE
                 {size: [H, W], counts: [int, ...]} or compressed RLE {size: [H, W], counts: str}
    categories   {id, name, [supercategory]}

Each image becomes a sample whose id is its ``file_name`` without suffix; the image bytes are
copied unchanged and ``coco_image_id`` is kept in the manifest row. Categories, sorted by their
COCO id, become classes 1..K (``thing: true``, with ``coco_id`` and ``supercategory``); class 0 is
background. Each annotation becomes an object (compressed COCO RLE, ``iscrowd`` kept, its COCO id
as ``coco_id``) in file order; a semantic mask is written too (:func:`semantic_from_objects`:
pixels where objects of different classes overlap become ``ignore_index``).

pycocotools decodes polygons and RLE but trusts its input (a wrong size or short counts give
garbage, not an error), so every value is checked here first. Every problem is collected and raised
together as :class:`ImportProblems`; nothing is written then.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from masklab.console import progress
from masklab.data.check import ProblemList
from masklab.data.classes import DEFAULT_IGNORE_INDEX, ClassInfo, ClassTable, default_color
from masklab.data.errors import short_repr
from masklab.data.images import strict_image_loading
from masklab.data.import_folder import ImportProblems
from masklab.data.import_instances import (
    checked_image_size,
    object_size_problem,
    semantic_from_objects,
)
from masklab.data.manifest import POOL_SPLIT, SPLIT_NAME_RULE, Dataset, is_valid_split
from masklab.data.rle import decode_rle
from masklab.data.sample_files import file_exists, safe_name
from masklab.data.splits import DEFAULT_FRACTIONS, check_fractions, random_splits
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError

# random: seeded fractions over all images; none: all train; files: each annotation file is a split.
SPLIT_MODES = ("random", "none", "files")
# Polygon vertices may lie on the pixel grid's outer edge (x = width) and annotation tools round
# a little beyond it; further out is a polygon drawn for another image size.
POLYGON_TOLERANCE_PX = 1.0
# How many offending values one problem line quotes.
_QUOTE = 3


@dataclass
class _Image:
    """One ``images`` entry that passed its checks, with its annotations (in file order)."""

    json_file: Path
    coco_id: int
    file_name: str
    width: int
    height: int
    split: str | None
    annotations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sample_id(self) -> str:
        """file_name without suffix (``train/a.jpg`` -> ``train/a``); the bare stem of an absolute one."""
        path = Path(self.file_name)
        return path.stem if path.is_absolute() else path.with_suffix("").as_posix()

    @property
    def where(self) -> str:
        return f"image {self.coco_id} ({self.file_name}, {self.width}x{self.height})"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _annotation_files(annotations: str | Path | Mapping[str, str | Path], split_mode: str) -> dict[Path, str | None]:
    """{JSON file: split it gives (``split_mode='files'``) or None}; UserError for arguments that do not fit."""
    if split_mode not in SPLIT_MODES:
        raise UserError(f"split_mode '{split_mode}' is not one of {list(SPLIT_MODES)} for format=coco")
    if isinstance(annotations, Mapping):
        if split_mode != "files":
            raise UserError(f"annotations= names {len(annotations)} files {sorted(annotations)}: pass "
                            f"split_mode=files (each file's images go to its split), or give one file")
        bad = [s for s in annotations if not is_valid_split(s) or s == POOL_SPLIT]
        if bad or not annotations:
            raise UserError(f"annotations: split names {bad or '(none)'}; expected {{split: file.json}} with "
                            f"split names {SPLIT_NAME_RULE}, not '{POOL_SPLIT}' (annotated images are labeled)")
        files = {Path(f): str(s) for s, f in annotations.items()}
        if len(files) != len(annotations):
            raise UserError(f"annotations: one file named for several splits: {dict(annotations)}")
    else:
        if split_mode == "files":
            raise UserError(f"split_mode=files needs annotations={{split: file.json, ...}}; found one file "
                            f"{annotations}")
        files = {Path(annotations): None}
    for path in files:
        if not path.is_file():
            raise UserError(f"annotations: {path} does not exist; expected a COCO instances JSON file")
    return files


def _read_json(path: Path, problems: ProblemList) -> dict[str, list] | None:
    """The JSON's images, annotations and categories lists, or None after adding a problem."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.error(path, "unreadable COCO JSON", f"{type(exc).__name__}: {exc}", "a COCO instances JSON file")
        return None
    if not isinstance(doc, dict):
        problems.error(path, "not a COCO file", f"a JSON {type(doc).__name__}", "an object with images, annotations, "
                     "categories")
        return None
    out = {}
    for key in ("images", "annotations", "categories"):
        value = doc.get(key)
        if not isinstance(value, list):  # image-info files (no annotations) are not labels: refuse them
            problems.error(path, "not a COCO file", f"'{key}': {short_repr(value)}", f"'{key}' a list (COCO instances)")
            return None
        out[key] = value
    return out


# ----------------------------------------------------------------------------- categories


def _categories(path: Path, entries: list, problems: ProblemList) -> dict[int, tuple[str, str | None]] | None:
    """{COCO category id: (name, supercategory)} of one file, or None after adding its problems."""
    cats: dict[int, tuple[str, str | None]] = {}
    ok = True
    for k, c in enumerate(entries):
        if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str) and c["name"]
                and isinstance(c.get("supercategory", ""), str)):
            problems.error(path, "bad category", f"categories[{k}]: {short_repr(c)}",
                         "{id: int, name: non-empty str, [supercategory: str]}")
            ok = False
        elif c["id"] in cats:
            problems.error(path, "duplicate category id", f"id {c['id']} ('{cats[c['id']][0]}' and '{c['name']}')",
                         "each category id once")
            ok = False
        else:
            cats[c["id"]] = (c["name"], c.get("supercategory"))
    if ok and not cats:
        problems.error(path, "no categories", "an empty categories list", "at least one category")
        return None
    return cats if ok else None


def _class_table(cats: dict[int, tuple[str, str | None]], source: Path, problems: ProblemList) -> ClassTable | None:
    """Background (0) plus one thing class per category, sorted by COCO id -> class ids 1..K."""
    names = ["background"] + [cats[i][0] for i in sorted(cats)]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        problems.error(source, "duplicate class name", f"{clashes}",
                     "distinct category names, none 'background' (class 0 is background)")
        return None
    if len(cats) >= DEFAULT_IGNORE_INDEX:
        problems.error(source, "too many categories", str(len(cats)), f"at most {DEFAULT_IGNORE_INDEX - 1} "
                     "(class ids are 8-bit mask values)")
        return None
    classes = [ClassInfo(0, "background", default_color(0))]
    for class_id, coco_id in enumerate(sorted(cats), start=1):
        name, supercategory = cats[coco_id]
        classes.append(ClassInfo(class_id, name, default_color(class_id), True, coco_id, supercategory))
    return ClassTable(tuple(classes))


# ----------------------------------------------------------------------------- images and annotations


def _images(path: Path, entries: list, split: str | None, problems: ProblemList) -> dict[int, _Image]:
    """{COCO image id: image} of one file; bad and duplicate entries become problems."""
    out: dict[int, _Image] = {}
    duplicates: dict[int, list[str]] = {}
    for k, im in enumerate(entries):
        if not (isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)
                and im["file_name"].strip() and _is_int(im.get("width")) and _is_int(im.get("height"))
                and im["width"] > 0 and im["height"] > 0):
            problems.error(path, "bad image entry", f"images[{k}]: {short_repr(im)}",
                         "{id: int, file_name: str, width: int > 0, height: int > 0}")
            continue
        if "\x00" in im["file_name"] or Path(im["file_name"]).name in ("", ".", ".."):
            problems.error(path, "bad image file name", f"images[{k}]: file_name {short_repr(im['file_name'])}",
                         "the path of an image file, relative to images= (or absolute)")
            continue
        if im["id"] in out:
            duplicates.setdefault(im["id"], [out[im["id"]].file_name]).append(im["file_name"])
            continue
        out[im["id"]] = _Image(path, im["id"], im["file_name"], im["width"], im["height"], split)
    for image_id, names in duplicates.items():
        problems.error(path, "duplicate image id", f"id {image_id} for {len(names)} images ({', '.join(names)})",
                     "each image id once")
    for image_id in duplicates:
        del out[image_id]  # which one the annotations mean is unknown
    return out


def _attach_annotations(path: Path, entries: list, images: dict[int, _Image], categories: set[int],
                        problems: ProblemList) -> None:
    """Check each annotation's fields and attach it to its image (segmentations are checked per image)."""
    seen: set[int] = set()
    duplicates: set[int] = set()
    for k, ann in enumerate(entries):
        if not (isinstance(ann, dict) and _is_int(ann.get("id")) and _is_int(ann.get("image_id"))
                and _is_int(ann.get("category_id")) and "segmentation" in ann):
            problems.error(path, "bad annotation", f"annotations[{k}]: {short_repr(ann)}",
                         "{id: int, image_id: int, category_id: int, segmentation, [iscrowd: 0|1]}")
            continue
        where = f"annotation {ann['id']} (image {ann['image_id']})"
        if ann["id"] in seen:
            duplicates.add(ann["id"])
        seen.add(ann["id"])
        ok = True
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
            problems.error(path, "bad iscrowd", f"{where}: iscrowd {short_repr(ann['iscrowd'])}", "0 or 1")
            ok = False
        if ann["category_id"] not in categories:
            problems.error(path, "unknown category id", f"{where}: category_id {ann['category_id']}",
                         f"one of the categories' ids {sorted(categories)}")
            ok = False
        if ann["image_id"] not in images:
            problems.error(path, "unknown image id", f"{where}: image_id {ann['image_id']}",
                         "the id of an entry in images (missing, or reported above as bad or duplicate)")
            ok = False
        if ok:
            images[ann["image_id"]].annotations.append(ann)
    for ann_id in sorted(duplicates):
        problems.error(path, "duplicate annotation id", f"id {ann_id}", "each annotation id once")


def _polygon_problems(polygons: list, image: _Image, where: str) -> list[tuple[str, str, str]]:
    """(kind, found, expected) for polygons pycocotools would rasterize wrongly or not at all."""
    found = []
    w, h, tol = image.width, image.height, POLYGON_TOLERANCE_PX
    if not polygons:
        return [("empty segmentation", f"{where}: []", "at least one polygon or an RLE")]
    for p, poly in enumerate(polygons):
        if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
            found.append(("bad polygon", f"{where} polygon {p}: {short_repr(poly)}",
                          "[x1, y1, x2, y2, ...] of numbers"))
        elif len(poly) % 2:
            found.append(("bad polygon", f"{where} polygon {p}: {len(poly)} coordinates (odd)", "x, y pairs"))
        elif len(poly) < 6:
            found.append(("polygon with fewer than 3 points", f"{where} polygon {p}: {len(poly) // 2} point(s) "
                          f"{short_repr(poly)}", "at least 3 points"))
        else:
            xy = np.asarray(poly, np.float64).reshape(-1, 2)
            out = np.flatnonzero((xy[:, 0] < -tol) | (xy[:, 0] > w + tol) | (xy[:, 1] < -tol) | (xy[:, 1] > h + tol))
            if len(out):
                points = ", ".join(f"point {i} ({xy[i, 0]:g}, {xy[i, 1]:g})" for i in out[:_QUOTE])
                more = f" and {len(out) - _QUOTE} more" if len(out) > _QUOTE else ""
                found.append(("polygon outside image", f"{where} polygon {p}: {points}{more}",
                              f"x in 0..{w}, y in 0..{h} (+-{tol:g} px) for {image.where}"))
    return found


def _rle_problem(rle: dict, image: _Image, where: str) -> tuple[str, str, str] | None:
    """(kind, found, expected) for an RLE that does not describe exactly this image's H*W pixels."""
    size, counts = rle.get("size"), rle.get("counts")
    if set(rle) != {"size", "counts"} or not (isinstance(counts, str) or isinstance(counts, list)):
        return "bad RLE", f"{where}: {short_repr(rle)}", "{size: [H, W], counts: str or list of ints}"
    if size != [image.height, image.width]:
        return ("RLE size mismatch", f"{where}: size {short_repr(size)}",
                f"[{image.height}, {image.width}] ([height, width] of {image.where})")
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            bad = [c for c in counts if not (_is_int(c) and c >= 0)][:_QUOTE]
            return "bad RLE", f"{where}: counts hold {short_repr(bad)}", "run lengths: integers >= 0"
        if sum(counts) != image.height * image.width:
            return ("bad RLE", f"{where}: run lengths add up to {sum(counts)}",
                    f"{image.height * image.width} (H*W of {image.where})")
    return None


def _decode(ann: dict, image: _Image) -> tuple[np.ndarray | None, list[tuple[str, str, str]]]:
    """(H, W) bool mask of one annotation, or None with its problems (kind, found, expected)."""
    from pycocotools import mask as coco_mask

    where = f"annotation {ann['id']} (image {image.coco_id})"
    seg = ann["segmentation"]
    h, w = image.height, image.width
    if isinstance(seg, list):
        found = _polygon_problems(seg, image, where)
        if found:
            return None, found
        pixels = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(seg, h, w)))
    elif isinstance(seg, dict):
        problem = _rle_problem(seg, image, where)
        if problem:
            return None, [problem]
        if isinstance(seg["counts"], list):
            pixels = coco_mask.decode(coco_mask.frPyObjects(seg, h, w))
        else:
            try:
                pixels = decode_rle(seg, check=True)  # checks the string's runs add up to H*W
            except ValueError as exc:
                return None, [("bad RLE", f"{where}: {exc}", f"a compressed COCO RLE of {h}x{w} px")]
    else:
        return None, [("bad segmentation", f"{where}: {short_repr(seg)}", "polygons (a list) or an RLE (an object)")]
    pixels = np.asarray(pixels) != 0
    too_small = object_size_problem(int(pixels.sum()))
    if too_small:
        return None, [(too_small[0], f"{where}: {int(pixels.sum())} px after decoding", too_small[1])]
    return pixels, []


# ----------------------------------------------------------------------------- import


def _image_objects(path: Path, image: _Image, class_of: dict[int, int], problems: ProblemList) -> list[dict] | None:
    """The objects of one image for DatasetWriter.add (its annotations decoded, in file order, with classes
    ``class_of`` {COCO category id: class id}), or None after adding a problem about the image file; each
    annotation that does not decode adds its problems and is left out."""
    if not file_exists(path):  # also a name longer than the file system takes
        problems.error(path, "missing image file", "no such file", f"the file of {image.where} in {image.json_file}")
        return None
    try:
        width, height = checked_image_size(path)
    except Exception as exc:
        problems.error(path, "unreadable image", f"{type(exc).__name__}: {exc}", "a readable image")
        return None
    if (width, height) != (image.width, image.height):
        problems.error(path, "image size mismatch", f"{width}x{height} (file)",
                     f"{image.width}x{image.height} ({image.where} in {image.json_file})")
        return None
    objects = []
    for ann in image.annotations:
        pixels, found = _decode(ann, image)
        for kind, value, expected in found:
            problems.error(image.json_file, kind, value, expected)
        if pixels is not None and ann["category_id"] in class_of:
            objects.append({"class_id": class_of[ann["category_id"]], "mask": pixels,
                            "iscrowd": int(ann.get("iscrowd", 0)), "coco_id": ann["id"]})
    return objects




def import_coco(
    annotations: str | Path | Mapping[str, str | Path],
    images: str | Path,
    out: str | Path,
    *,
    split_mode: str = "random",
    fractions: Mapping[str, float] | None = DEFAULT_FRACTIONS,
    seed: int = 0,
    overwrite: bool = False,
) -> Dataset:
    """Import COCO instance annotations (see the module docstring) with their images into ``out``.

    annotations: one COCO JSON file, or ``{split: file}`` with ``split_mode="files"`` (every file
    must list the same categories). images: the folder ``file_name`` is relative to. split_mode
    "random" (seeded by ``seed``, cut by ``fractions``), "none" (all train) or "files". Raises
    :class:`ImportProblems` listing every problem (nothing is written then).
    """
    images, out = Path(images), Path(out)
    files = _annotation_files(annotations, split_mode)
    fracs = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not images.is_dir():
        raise UserError(f"images={images}: folder does not exist; expected the folder of the COCO file_names")
    placeholder = ClassTable((ClassInfo(0, "background", default_color(0)),))
    # Opening the writer first makes "dataset exists" fail before any file is read.
    with DatasetWriter(out, placeholder, overwrite=overwrite) as writer:
        problems = ProblemList()
        table, by_sample = _read_files(files, problems)
        class_of = {} if table is None else {c.coco_id: c.id for c in table.classes if c.coco_id is not None}
        split_of = (random_splits(by_sample, fracs, seed) if split_mode == "random"
                    else {i: image.split or "train" for i, image in by_sample.items()})
        with strict_image_loading():
            for sample_id, image in progress(sorted(by_sample.items()), f"Importing {images.name}"):
                path = images / image.file_name
                objects = _image_objects(path, image, class_of, problems)
                if objects is None or problems or table is None:  # once anything failed the import is lost
                    continue
                semantic = semantic_from_objects((image.height, image.width),
                                                 [(o["class_id"], o["mask"]) for o in objects], table.ignore_index)
                writer.add(sample_id, path, semantic, split_of[sample_id], objects=objects,
                           extra={"coco_image_id": image.coco_id})
        if not by_sample and not problems:
            problems.error(", ".join(map(str, files)), "no images", "an empty images list", "at least one image")
        if problems:
            raise ImportProblems(list(problems), ", ".join(map(str, files)))
        return writer.commit(table)


def _read_files(files: dict[Path, str | None], problems: ProblemList) -> tuple[ClassTable | None, dict[str, _Image]]:
    """The class table and {sample id: image with its annotations} of every annotation file."""
    categories: dict[int, tuple[str, str | None]] | None = None
    first: Path | None = None
    by_sample: dict[str, _Image] = {}
    by_safe: dict[str, _Image] = {}
    for path, split in files.items():
        doc = _read_json(path, problems)
        if doc is None:
            continue
        cats = _categories(path, doc["categories"], problems)
        if cats is not None and categories is None:
            categories, first = cats, path
        elif cats is not None and cats != categories:
            problems.error(path, "categories differ", short_repr(sorted(cats.items()), 200),
                         f"the categories of {first}: {short_repr(sorted((categories or {}).items()), 200)}")
        images = _images(path, doc["images"], split, problems)
        _attach_annotations(path, doc["annotations"], images, set(cats or {}), problems)
        for image in images.values():
            other = by_sample.get(image.sample_id) or by_safe.get(safe_name(image.sample_id))
            if other is not None:
                problems.error(path, "duplicate image file name", f"{image.where} and {other.where} in "
                             f"{other.json_file}", "one images entry per file (the sample id is file_name "
                             "without suffix)")
                continue
            by_sample[image.sample_id] = by_safe[safe_name(image.sample_id)] = image
    table = None if categories is None or first is None else _class_table(categories, first, problems)
    return table, by_sample
