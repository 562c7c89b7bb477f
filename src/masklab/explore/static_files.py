"""The static page's files of each sample: inline thumbnails for the grid and full-resolution PNGs under
``full/`` for the detail view (``<name>`` is the sample's id made safe for a file name, :func:`safe_names`).

- ``<name>_image.png``: the image (an 8-bit RGB or grey PNG copied as it is, anything else as decoded).
- ``<name>_gt.png`` / ``<name>_pred.png``: class-index masks as palette PNGs whose pixel values are the class ids,
  coloured by the class table (:mod:`masklab.explore.rendering`), class 0 transparent; inline, tiny palette PNGs of
  the same codes in grey (the page colours them, so classes can be switched off).
- ``<name>_error.png``: the error map of ground truth and prediction (1 false positive, 2 false negative, 3 wrong
  class).
- A sample with instance objects gets inline outline polygons of its objects and RGBA overlays instead
  (:mod:`masklab.explore.objects`).

Nothing here raises on bad input: an unreadable image gives a placeholder card, and every problem is recorded as
a (kind, message) pair for the page to list.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from masklab.console import progress
from masklab.data.classes import ClassTable
from masklab.data.images import read_image, read_mask
from masklab.explore.objects import ObjectLoader, object_layers
from masklab.explore.rendering import (
    class_palette,
    data_uri,
    error_image,
    nearest,
    palette_image,
    plain_image_type,
    thumb_size,
)
from masklab.explore.samples import ExplorerSample

THUMB_SIDE = 80  # longest side of the inline thumbnails, pixels
JPEG_QUALITY = 60
MASK_LABELS = {"gt": "ground truth", "pred": "prediction"}


@dataclass
class SampleFiles:
    """What the page needs of one sample; ``ok`` is False when the image could not be read (placeholder card)."""

    ok: bool = False
    width: int = 0
    height: int = 0
    thumb: str = ""  # data URI of a JPEG
    gt: str = ""  # data URI of a palette PNG of class codes (class id; ignore and unknown values -> num_classes)
    pred: str = ""
    gt_classes: list[int] = field(default_factory=list)
    pred_classes: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # kinds written under full/: image, gt, pred, error
    objects: dict | None = None  # {"g": gt entries, "p": prediction entries or None} (objects.py)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)


def write_sample_files(samples: list[ExplorerSample], names: list[str], class_table: ClassTable, full_dir: Path,
                       what: str) -> list[SampleFiles]:
    """Each sample's files under ``full_dir`` (created), named by ``names``, a few samples at a time (``what``
    names the progress bar); PNGs there that this call did not write (left from an earlier explorer) are deleted."""
    full_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        done = list(progress(pool.map(lambda args: sample_files(*args, class_table, full_dir), zip(samples, names)),
                             what, total=len(samples)))
    written = {f"{name}_{kind}.png" for name, p in zip(names, done) for kind in p.files}
    for stale in full_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink(missing_ok=True)
    return done


def safe_names(ids: list[str]) -> list[str]:
    """File-name-safe, unique stems: the id itself when already safe, else a cleaned id plus a short hash."""
    names: list[str] = []
    used: set[str] = set()
    for sid in ids:
        sid = str(sid)
        clean = re.sub(r"[^A-Za-z0-9_-]+", "_", sid).strip("_")[:60] or "sample"
        name = clean
        if clean != sid or clean.lower() in used:
            name = f"{clean}-{hashlib.sha1(sid.encode()).hexdigest()[:8]}"
        n = 2
        while name.lower() in used:  # same id twice, or a hash clash: number it
            name = f"{clean}-{hashlib.sha1(sid.encode()).hexdigest()[:8]}-{n}"
            n += 1
        used.add(name.lower())
        names.append(name)
    return names


def sample_files(sample: ExplorerSample, name: str, class_table: ClassTable, full_dir: Path) -> SampleFiles:
    """Thumbnails and full-resolution files of one sample; never raises (problems are recorded instead)."""
    try:
        return _sample_files(sample, name, class_table, full_dir)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the page still gets a placeholder card
        return SampleFiles(problems=[("failed sample", f"sample {sample.id}: could not be prepared ({_why(exc)})")])


def _sample_files(sample: ExplorerSample, name: str, class_table: ClassTable, full_dir: Path) -> SampleFiles:
    """The steps: the image (a placeholder when it cannot be read), then its objects, or its masks and their
    error map."""
    out = SampleFiles()
    image = _image_files(sample, name, full_dir, out)
    if image is None:
        return out
    if sample.objects is not None:
        _object_files(sample.objects, str(sample.id), name, class_table, full_dir, out)
        return out
    masks = {}
    for kind, path in (("gt", sample.mask), ("pred", sample.pred)):
        mask = _mask_files(sample, kind, path, name, class_table, full_dir, out) if path is not None else None
        if mask is not None:
            masks[kind] = mask
    if "gt" in masks and "pred" in masks:
        error_image(masks["gt"], masks["pred"], class_table).save(full_dir / f"{name}_error.png", transparency=0)
        out.files.append("error")
    return out


def _image_files(sample: ExplorerSample, name: str, full_dir: Path, out: SampleFiles) -> np.ndarray | None:
    """The image's thumbnail and full-resolution file, its size in ``out``; the image, or None (a problem) when it
    cannot be read or converted."""
    sid = str(sample.id)
    try:
        image = read_image(Path(sample.image))
    except Exception as exc:  # noqa: BLE001 - any unreadable file must become a placeholder, not a crash
        kind = "missing image" if not Path(sample.image).exists() else "unreadable image"
        out.problems.append((kind, f"sample {sid}: image {sample.image} {_why(exc)}"))
        return None
    try:
        h, w = image.shape[:2]
        out.ok, out.width, out.height = True, int(w), int(h)
        pil = Image.fromarray(image)
        small = pil.resize(thumb_size(w, h, THUMB_SIDE), Image.BOX)
        out.thumb = data_uri(small, "JPEG", quality=JPEG_QUALITY, optimize=True)
        _write_full_image(Path(sample.image), pil, full_dir / f"{name}_image.png")
        out.files.append("image")
    except Exception as exc:  # noqa: BLE001
        out.ok = False
        out.problems.append(("unreadable image", f"sample {sid}: image {sample.image} could not be converted "
                                                 f"({_why(exc)})"))
        return None
    return image


def _mask_files(sample: ExplorerSample, kind: str, path: Path, name: str, class_table: ClassTable, full_dir: Path,
                out: SampleFiles) -> np.ndarray | None:
    """A class-index mask's (``kind`` gt or pred) inline codes, the classes it holds and its full-resolution PNG;
    the mask, or None (a problem) when it cannot be read, does not fit the image or cannot be written."""
    label = MASK_LABELS[kind]
    checked = _checked_mask(str(sample.id), label, Path(path), out, class_table)
    if checked is None:
        return None
    mask, counts = checked
    n = class_table.num_classes
    present = [int(v) for v in np.flatnonzero(counts[:n])]
    codes = _codes_lut(class_table)[nearest(mask, *thumb_size(out.width, out.height, THUMB_SIDE))]
    encoded = data_uri(_grey_palette_png(codes, n + 1), "PNG", optimize=True)
    try:
        palette_image(mask, class_palette(class_table)).save(full_dir / f"{name}_{kind}.png", transparency=0,
                                                             optimize=False)
    except Exception as exc:  # noqa: BLE001
        out.problems.append((f"bad {label}", f"sample {sample.id}: {label} could not be written ({_why(exc)})"))
        return None
    out.files.append(kind)
    if kind == "gt":
        out.gt, out.gt_classes = encoded, present
    else:
        out.pred, out.pred_classes = encoded, present
    return mask


def _checked_mask(sid: str, label: str, path: Path, out: SampleFiles, class_table: ClassTable
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """(mask, count of each value 0..255) of the mask at ``path`` when it is a single-channel 8-bit mask of the
    image's size, else None (a problem); values that are neither class ids nor ignore_index are a problem but the
    mask is still shown."""
    try:
        mask = read_mask(path)
    except Exception as exc:  # noqa: BLE001
        what = "missing" if not path.exists() else "unreadable"
        out.problems.append((f"{what} {label}", f"sample {sid}: {label} {path} {_why(exc)}"))
        return None
    if mask.ndim != 2 or mask.dtype != np.uint8:
        out.problems.append((f"bad {label}", f"sample {sid}: {label} {path} is not a single-channel 8-bit "
                                              f"class-index PNG (shape {mask.shape}, {mask.dtype})"))
        return None
    w, h = out.width, out.height
    if mask.shape != (h, w):
        out.problems.append((f"bad {label}", f"sample {sid}: {label} {path} is {mask.shape[1]}x{mask.shape[0]}"
                                              f" but the image is {w}x{h}"))
        return None
    counts = np.bincount(mask.ravel(), minlength=256)
    n, ignore = class_table.num_classes, class_table.ignore_index
    unknown = [int(v) for v in np.flatnonzero(counts) if v >= n and v != ignore]
    if unknown:
        out.problems.append((f"bad {label}", f"sample {sid}: {label} {path} has values {unknown[:8]} that are "
                                              f"neither class ids nor ignore_index {ignore}"))
    return mask, counts


def _object_files(load: ObjectLoader, sid: str, name: str, class_table: ClassTable, full_dir: Path,
                  out: SampleFiles) -> None:
    """Inline object entries and full-resolution RGBA overlays (gt, pred, error = matches) of one sample."""
    try:
        objects = load()
    except Exception as exc:  # noqa: BLE001 - a bad objects file or id map must not stop the page
        out.problems.append(("unreadable objects", f"sample {sid}: objects cannot be read ({_why(exc)[:240]})"))
        return
    palette = np.asarray(class_table.palette(), np.uint8).reshape(-1, 3)
    layers = object_layers(objects, out.height, out.width, palette, sid)
    out.problems.extend(("bad objects", p) for p in layers.problems)
    out.objects = {"g": layers.gt, "p": layers.pred}
    out.gt_classes, out.pred_classes = layers.gt_classes, layers.pred_classes
    for kind in ("gt", "pred", "error"):
        if kind in layers.images:
            Image.fromarray(layers.images[kind]).save(full_dir / f"{name}_{kind}.png")
            out.files.append(kind)


def _write_full_image(source: Path, pil: Image.Image, target: Path) -> None:
    """An 8-bit RGB or grey PNG is copied as is (browsers show it exactly as masklab reads it); anything else
    is written from the decoded pixels."""
    if plain_image_type(source) == "image/png":
        shutil.copyfile(source, target)
    else:
        pil.save(target, compress_level=1)


def _codes_lut(class_table: ClassTable) -> np.ndarray:
    """Mask value -> thumbnail code: class ids stay, ignore and unknown values become num_classes."""
    lut = np.full(256, class_table.num_classes, np.uint8)
    lut[: class_table.num_classes] = np.arange(class_table.num_classes, dtype=np.uint8)
    return lut


def _grey_palette_png(codes: np.ndarray, n_codes: int) -> Image.Image:
    """Palette image whose entry i is grey (i, i, i): drawn on a canvas, the red channel is the code."""
    return palette_image(codes, [v for i in range(n_codes) for v in (i, i, i)])


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "is missing"
    return f"cannot be read ({type(exc).__name__}: {str(exc)[:160]})"
