"""A self-contained HTML explorer of samples, masks, predictions and metrics.

:func:`write_explorer` writes ``<out_dir>/index.html`` plus full-resolution PNGs under ``<out_dir>/full/``.
The page needs no server and no network: its data and the grid's thumbnails (a small JPEG of the image,
tiny class-index PNGs of ground truth and prediction) are inline, and the overlays are drawn in the browser.
The detail view loads ``full/<file>`` relative to the page; inside the MLflow UI, whose artifact viewer runs the
page in a sandboxed frame where relative files cannot load, it asks MLflow's ``get-artifact`` endpoint instead,
and when neither works it shows the thumbnail enlarged, with a note.

Full-resolution files, per sample with a readable image (``<name>`` is the id made safe for a file name):
``<name>_image.png`` (RGB), ``<name>_gt.png`` / ``<name>_pred.png`` (palette PNGs whose pixel values are the
class ids, coloured by the class table, class 0 transparent) and ``<name>_error.png`` (palette PNG: 1 = false
positive, 2 = false negative, 3 = wrong class, 0 = correct or ignored, transparent).

A sample with instance objects (:class:`ExplorerObjects`, see :mod:`masklab.explore.objects`) gets,
instead of class masks, inline outline polygons of its ground-truth and predicted objects with each object's
outcome (TP / FP / FN / crowd, IoU, score, class) for thumbnails and pointer hit-testing, and RGBA overlays
``<name>_gt.png``, ``<name>_pred.png`` and ``<name>_error.png`` (predictions by outcome plus missed and crowd
ground truth): outlines in the outcome's colour, filled lightly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from masklab.console import progress
from masklab.data.classes import ClassTable
from masklab.data.images import read_image, read_mask
from masklab.explore.objects import (
    OBJECT_PALETTE,
    OBJECT_STATUS,
    object_layers,
)
from masklab.explore.pages import STATIC_PAGE, page_template, with_title
from masklab.explore.rendering import (
    ERROR_COLORS,
    class_legend,
    class_palette,
    data_uri,
    error_image,
    nearest,
    palette_image,
    plain_image_type,
    thumb_size,
)
from masklab.explore.samples import ExplorerSample
from masklab.explore.tables import json_value, listing, plural, table_columns
from masklab.files import atomic_write
from masklab.report.overlay import distinct_colors

THUMB_SIDE = 80  # longest side of the inline thumbnails, pixels
JPEG_QUALITY = 60
MAX_CURVE_POINTS = 400  # per training curve, evenly thinned
MAX_CHANGED = 200  # rows of summary["changed"] kept
MAX_LISTED = 20  # problems of one kind listed one by one; the rest are counted
DATA_MARK = "/*__MASKLAB_DATA__*/"

@dataclass
class _Prepared:
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


def write_explorer(out_dir: Path, class_table: ClassTable, samples: list[ExplorerSample], table: pd.DataFrame | None,
                   summary: dict, title: str, mlflow_artifact: dict | None = None, view: dict | None = None) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/full/*.png``; return the index path.

    ``table``: per-sample rows joined to ``samples`` by its "id" column (any other columns; None = browse a
    dataset). ``summary``: optional "headline", "per_class", "confusion", "curves", "changed", "problems".
    ``mlflow_artifact``: {"run_id", "path"} of the artifact folder this explorer will be logged to, or None.
    ``view``: what the page opens with, e.g. {"name": "Likely label errors", "note": "...", "sort": "rank",
    "dir": "asc", "overlay": "gt", "review": {"status": "needs_review", "command": "masklab data mark ..."}}:
    with "review", the person can mark samples in the page and download their ids as ``review.csv`` for
    that command.
    Bad input never raises: unreadable images get placeholder cards, and every problem found (missing files,
    masks of the wrong size, table rows without a sample and samples without a row) is appended to
    ``summary["problems"]`` (created when missing) and listed on the page. PNGs under ``full/`` that this call
    did not write (left from an earlier explorer in the same folder) are deleted.
    """
    out_dir = Path(out_dir)
    full_dir = out_dir / "full"
    full_dir.mkdir(parents=True, exist_ok=True)
    if summary is None:
        summary = {}
    problems = summary.get("problems")
    if not isinstance(problems, list):
        problems = [str(p) for p in problems] if isinstance(problems, tuple) else [] if problems is None else [
            str(problems)]
        summary["problems"] = problems

    names = _safe_names([s.id for s in samples])
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        prepared = list(progress(pool.map(lambda args: _prepare_safe(*args, class_table, full_dir),
                                          zip(samples, names)), f"Writing {out_dir.name}", total=len(samples)))
    written = {f"{name}_{kind}.png" for name, p in zip(names, prepared) for kind in p.files}
    for stale in full_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink(missing_ok=True)

    found: list[tuple[str, str]] = [item for p in prepared for item in p.problems]
    columns, table_problems = table_columns(table, [s.id for s in samples])
    found += table_problems
    ids = pd.Series([str(s.id) for s in samples], dtype=object)
    repeated = ids[ids.duplicated()].tolist()
    if repeated:
        found.append(("dup", f"{plural(len(repeated), 'sample')} with an id that appeared before: "
                             f"{listing(repeated)}"))
    problems.extend(_group_problems(found))

    data = {
        "title": str(title),
        "classes": class_legend(class_table),
        "ignore_index": class_table.ignore_index,
        "error_colors": {str(k): list(v) for k, v in ERROR_COLORS.items()},
        "thumb_side": THUMB_SIDE,
        "mlflow": _mlflow(mlflow_artifact),
        "samples": {
            "id": [str(s.id) for s in samples],
            "split": [str(s.split) for s in samples],
            "name": names,
            "ok": [int(p.ok) for p in prepared],
            "w": [p.width for p in prepared],
            "h": [p.height for p in prepared],
            "img": [p.thumb for p in prepared],
            "gt": [p.gt for p in prepared],
            "pred": [p.pred for p in prepared],
            "gtc": [p.gt_classes for p in prepared],
            "pc": [p.pred_classes for p in prepared],
            "files": ["".join(k[0] for k in p.files) for p in prepared],  # i, g, p, e
            "obj": [p.objects for p in prepared],
            "reg": [[[int(v) for v in r[:4]] + [str(r[4])] for r in s.regions] if s.regions else None
                    for s in samples],
        },
        "view": view,
        "object_status": {str(k): {"name": name, "label": label, "color": list(rgb)}
                          for k, (name, label, rgb) in OBJECT_STATUS.items()},
        "object_colors": distinct_colors(OBJECT_PALETTE).tolist(),
        "columns": columns,
        "summary": json_value({k: v for k, v in summary.items() if k != "problems"}),
        "problems": [str(p) for p in problems],
    }
    data["summary"] = _trim_summary(data["summary"])
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # Inside <script>: no "</script>", "<!--" or HTML comment tricks can end it early.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    before, after = page_template(STATIC_PAGE).split(DATA_MARK, 1)
    page = with_title(before, title) + text + with_title(after, title)
    return atomic_write(out_dir / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


def _safe_names(ids: list[str]) -> list[str]:
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


def _prepare_safe(sample: ExplorerSample, name: str, class_table: ClassTable, full_dir: Path) -> _Prepared:
    try:
        return _prepare(sample, name, class_table, full_dir)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the page still gets a placeholder card
        return _Prepared(problems=[("failed sample", f"sample {sample.id}: could not be prepared ({_why(exc)})")])


def _prepare(sample: ExplorerSample, name: str, class_table: ClassTable, full_dir: Path) -> _Prepared:
    """Thumbnails and full-resolution files of one sample; never raises (problems are recorded instead)."""
    out = _Prepared()
    sid = str(sample.id)
    try:
        image = read_image(Path(sample.image))
    except Exception as exc:  # noqa: BLE001 - any unreadable file must become a placeholder, not a crash
        kind = "missing image" if not Path(sample.image).exists() else "unreadable image"
        out.problems.append((kind, f"sample {sid}: image {sample.image} {_why(exc)}"))
        return out
    try:
        h, w = image.shape[:2]
        out.ok, out.width, out.height = True, int(w), int(h)
        tw, th = thumb_size(w, h, THUMB_SIDE)
        pil = Image.fromarray(image)
        out.thumb = data_uri(pil.resize((tw, th), Image.BOX), "JPEG", quality=JPEG_QUALITY, optimize=True)
        _write_full_image(Path(sample.image), pil, full_dir / f"{name}_image.png")
        out.files.append("image")
    except Exception as exc:  # noqa: BLE001
        out.ok = False
        out.problems.append(("unreadable image", f"sample {sid}: image {sample.image} could not be converted "
                                                 f"({_why(exc)})"))
        return out
    if sample.objects is not None:
        _prepare_objects(sample, name, class_table, full_dir, out)
        return out
    masks: dict[str, np.ndarray] = {}
    for kind, path in (("gt", sample.mask), ("pred", sample.pred)):
        if path is None:
            continue
        label = "ground truth" if kind == "gt" else "prediction"
        try:
            mask = read_mask(Path(path))
        except Exception as exc:  # noqa: BLE001
            what = "missing" if not Path(path).exists() else "unreadable"
            out.problems.append((f"{what} {label}", f"sample {sid}: {label} {path} {_why(exc)}"))
            continue
        if mask.ndim != 2 or mask.dtype != np.uint8:
            out.problems.append((f"bad {label}", f"sample {sid}: {label} {path} is not a single-channel 8-bit "
                                                  f"class-index PNG (shape {mask.shape}, {mask.dtype})"))
            continue
        if mask.shape != (h, w):
            out.problems.append((f"bad {label}", f"sample {sid}: {label} {path} is {mask.shape[1]}x{mask.shape[0]}"
                                                  f" but the image is {w}x{h}"))
            continue
        counts = np.bincount(mask.ravel(), minlength=256)
        n = class_table.num_classes
        unknown = [int(v) for v in np.flatnonzero(counts) if v >= n and v != class_table.ignore_index]
        if unknown:
            out.problems.append((f"bad {label}", f"sample {sid}: {label} {path} has values {unknown[:8]} that are "
                                                  f"neither class ids nor ignore_index {class_table.ignore_index}"))
        present = [int(v) for v in np.flatnonzero(counts[:n])]
        codes = _codes_lut(class_table)
        small = nearest(mask, tw, th)
        encoded = data_uri(_grey_palette_png(codes[small], n + 1), "PNG", optimize=True)
        try:
            palette_image(mask, class_palette(class_table)).save(full_dir / f"{name}_{kind}.png", transparency=0,
                                                                 optimize=False)
        except Exception as exc:  # noqa: BLE001
            out.problems.append((f"bad {label}", f"sample {sid}: {label} could not be written ({_why(exc)})"))
            continue
        masks[kind] = mask
        out.files.append(kind)
        if kind == "gt":
            out.gt, out.gt_classes = encoded, present
        else:
            out.pred, out.pred_classes = encoded, present
    if "gt" in masks and "pred" in masks:
        error_image(masks["gt"], masks["pred"], class_table).save(full_dir / f"{name}_error.png", transparency=0)
        out.files.append("error")
    return out


def _prepare_objects(sample: ExplorerSample, name: str, class_table: ClassTable, full_dir: Path, out: _Prepared
                     ) -> None:
    """Inline object entries and full-resolution RGBA overlays (gt, pred, error = matches) of one sample."""
    sid = str(sample.id)
    try:
        objects = sample.objects()
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


def _trim_summary(summary: dict) -> dict:
    """Bound the inline size of the summary: thin long curves, keep the first rows of "changed"."""
    curves = summary.get("curves")
    if isinstance(curves, dict):
        for key, points in curves.items():
            if isinstance(points, list) and len(points) > MAX_CURVE_POINTS:
                keep = np.unique(np.linspace(0, len(points) - 1, MAX_CURVE_POINTS).round().astype(int))
                curves[key] = [points[i] for i in keep]
    if isinstance(summary.get("changed"), list):
        summary["changed"] = summary["changed"][:MAX_CHANGED]
    return summary


def _mlflow(artifact: dict | None) -> dict | None:
    if not artifact or not artifact.get("run_id"):
        return None
    return {"run_id": str(artifact["run_id"]), "path": str(artifact.get("path") or "").strip("/")}


def _group_problems(found: list[tuple[str, str]]) -> list[str]:
    """Each problem as found, except that a kind seen more than MAX_LISTED times is counted after that."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for kind, message in found:
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] <= MAX_LISTED:
            out.append(message)
    for kind, count in seen.items():
        if count > MAX_LISTED:
            out.append(f"... and {count - MAX_LISTED} more samples with a {kind} problem")
    return out
