"""Import "a folder per image, one mask file per object" into the masklab format.

The layout of the Kaggle Data Science Bowl 2018 nuclei set (and of many instance datasets made
with per-object annotation tools)::

    <src>/<image id>/images/<image id>.png     the image (exactly one file)
    <src>/<image id>/masks/<object id>.png     one single-channel mask per object, nonzero = object

Each image becomes a sample ``<image id>``: the image bytes are copied unchanged, the objects are
stored as compressed COCO RLE (overlaps kept), and a semantic mask (union of the objects -> class 1)
is written too, so semantic training runs on the same dataset. Every input problem is collected
first and raised together as :class:`ImportProblems`; nothing is written then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from masklab.console import progress
from masklab.data.check import Problem
from masklab.data.classes import DEFAULT_IGNORE_INDEX, ClassInfo, ClassTable, default_color
from masklab.data.images import read_object_png, strict_image_loading, verify_file
from masklab.data.import_folder import IMAGE_EXTS, ImportProblems
from masklab.data.manifest import Dataset
from masklab.data.splits import DEFAULT_FRACTIONS, check_fractions, random_splits
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError

SPLIT_MODES = ("random", "none")
LAYOUT = "<src>/<image id>/images/<one image>, <src>/<image id>/masks/<one mask per object>"


def instance_class_table(class_name: str) -> ClassTable:
    """Background (id 0) plus one instance ('thing') class, id 1."""
    return ClassTable((ClassInfo(0, "background", default_color(0)), ClassInfo(1, class_name, default_color(1), True)))


# ----------------------------------------------------------------------------- shared by the instance importers


def checked_image_size(path: Path) -> tuple[int, int]:
    """(width, height) in px of an image file after a structural check and a full decode (a truncated
    image must fail at import, not in training); raises whatever Pillow raises."""
    verify_file(path)
    with Image.open(path) as im:
        im.load()
        return im.size


def object_size_problem(pixels: int) -> tuple[str, str] | None:
    """(kind, expected) when an object of ``pixels`` px cannot be imported, else None.

    Empty objects cannot be stored; a one-pixel object is almost always a stray label (a resize or
    polygon artefact), and its mask, box and boundary are degenerate for instance metrics.
    """
    if pixels == 0:
        return "empty object", "at least 2 pixels (drop the object)"
    if pixels == 1:
        return "one-pixel object", "at least 2 pixels (drop the object or fix its outline)"
    return None


def semantic_from_objects(
    shape: tuple[int, int], objects: Sequence[tuple[int, np.ndarray]], ignore_index: int = DEFAULT_IGNORE_INDEX
) -> np.ndarray:
    """The semantic mask of instance objects: (H, W) uint8, pixel = class id of the objects covering it.

    objects: [(class id, (H, W) bool mask)]. Where objects of *different* classes overlap the pixel
    is ``ignore_index``: either class would teach a semantic model something the labels do not say.
    Overlaps within one class are simply that class.
    """
    semantic = np.zeros(shape, np.uint8)
    disputed = np.zeros(shape, bool)
    for class_id, pixels in objects:
        disputed |= pixels & (semantic != 0) & (semantic != class_id)
        semantic[pixels] = class_id
    semantic[disputed] = ignore_index
    return semantic


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                  and not f.name.startswith("."))


def _image_folders(src: Path, problems: list[Problem]) -> list[Path]:
    """The per-image folders of ``src``; a loose image file means the layout is not what we think."""
    folders = []
    for child in sorted(src.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            folders.append(child)
        elif child.suffix.lower() in IMAGE_EXTS:
            problems.append(Problem("error", str(child), "file outside image folders", child.name, LAYOUT))
    return folders


def _read_folder(folder: Path, problems: list[Problem]) -> tuple[Path, list[tuple[str, np.ndarray]]] | None:
    """(image file, [(mask file relative to the folder, (H, W) bool mask)]) of one image folder,
    or None after adding its problems."""
    found: list[Problem] = []

    def problem(file: Path, kind: str, value: str, expected: str) -> None:
        found.append(Problem("error", str(file), kind, value, expected))

    image_dir, mask_dir = folder / "images", folder / "masks"
    images = _image_files(image_dir) if image_dir.is_dir() else []
    masks = _image_files(mask_dir) if mask_dir.is_dir() else []
    if not images:
        what = "no image file" if image_dir.is_dir() else "no images/ folder"
        problem(image_dir, "missing image", what, f"one image ({'/'.join(IMAGE_EXTS)}) in {image_dir}")
    elif len(images) > 1:
        problem(image_dir, "several images", ", ".join(f.name for f in images), "exactly one image per folder")
    if not masks:
        what = "no mask file" if mask_dir.is_dir() else "no masks/ folder"
        problem(mask_dir, "no masks", what, f"one mask file per object in {mask_dir}")
    size = None
    if len(images) == 1:
        try:
            size = checked_image_size(images[0])
        except Exception as exc:
            problem(images[0], "unreadable image", f"{type(exc).__name__}: {exc}", "a readable image")
    objects = []
    for path in masks:
        try:
            pixels = read_object_png(path)
        except Exception as exc:
            problem(path, "unreadable mask", f"{type(exc).__name__}: {exc}", "a single-channel mask, nonzero = object")
            continue
        if size is not None and pixels.shape != (size[1], size[0]):
            problem(path, "size mismatch", f"{pixels.shape[1]}x{pixels.shape[0]}", f"{size[0]}x{size[1]} (image)")
        elif not pixels.any():
            problem(path, "empty mask", "no nonzero pixel", "one object (nonzero pixels); delete the file")
        elif too_small := object_size_problem(int(pixels.sum())):  # the other importers' rule: one pixel is a stray
            problem(path, too_small[0], f"{int(pixels.sum())} px", too_small[1])
        else:
            objects.append((path.relative_to(folder).as_posix(), pixels))
    problems += found
    if found or size is None:
        return None
    return images[0], objects


def import_instance_folders(
    src: str | Path,
    out: str | Path,
    *,
    class_name: str = "nucleus",
    split_mode: str = "random",
    fractions: Mapping[str, float] | None = DEFAULT_FRACTIONS,
    seed: int = 0,
    overwrite: bool = False,
) -> Dataset:
    """Import every ``<src>/<image id>/`` folder (layout in the module docstring) into ``out``.

    Writes classes background (0) and ``class_name`` (1, thing: true); per image the original
    image bytes, objects (one per mask file, in file-name order, each with its ``source_file``) and
    the semantic mask (union of the objects). split_mode "random" (seeded by ``seed``, cut by
    ``fractions``) or "none" (all train). Raises :class:`ImportProblems` listing every problem
    (nothing is written then).
    """
    src, out = Path(src), Path(out)
    if split_mode not in SPLIT_MODES:
        raise UserError(f"split_mode '{split_mode}' is not one of {list(SPLIT_MODES)}")
    fracs = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not src.is_dir():
        raise UserError(f"{src}: folder does not exist; expected {LAYOUT}")
    table = instance_class_table(class_name)
    # Opening the writer first makes "dataset exists" fail before any file is read.
    with DatasetWriter(out, table, overwrite=overwrite) as writer:
        problems: list[Problem] = []
        folders = _image_folders(src, problems)
        names = [f.name for f in folders]
        split_of = random_splits(names, fracs, seed) if split_mode == "random" else dict.fromkeys(names, "train")
        with strict_image_loading():
            for folder in progress(folders, f"Importing {src.name}"):
                item = _read_folder(folder, problems)
                if item is None or problems:  # once anything failed the import is lost; keep checking
                    continue
                image, objects = item
                semantic = semantic_from_objects(objects[0][1].shape, [(1, pixels) for _, pixels in objects])
                writer.add(
                    folder.name, image, semantic, split_of[folder.name],
                    objects=[{"class_id": 1, "mask": pixels, "source_file": rel} for rel, pixels in objects],
                )
        if not folders and not problems:
            problems.append(Problem("error", str(src), "no image folders", "no sub-folder", LAYOUT))
        if problems:
            raise ImportProblems(problems, str(src))
        return writer.commit()
