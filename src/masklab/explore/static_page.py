"""The explorer's static front end: one self-contained HTML page of samples, masks, predictions and metrics.

:func:`write_explorer` writes ``<out_dir>/index.html`` plus full-resolution PNGs under ``<out_dir>/full/``
(:mod:`masklab.explore.static_files`). The page needs no server and no network: its data and the grid's thumbnails
(a small JPEG of the image, tiny class-index PNGs of ground truth and prediction, or outlines of instance objects)
are inline, and the overlays are drawn in the browser. The detail view loads ``full/<file>`` relative to the page;
inside the MLflow UI, whose artifact viewer runs the page in a sandboxed frame where relative files cannot load, it
asks MLflow's ``get-artifact`` endpoint instead, and when neither works it shows the thumbnail enlarged, with a note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from masklab.data.classes import ClassTable
from masklab.explore.objects import OBJECT_PALETTE, OBJECT_STATUS
from masklab.explore.pages import STATIC_PAGE, page_template, with_title
from masklab.explore.rendering import ERROR_COLORS, class_legend
from masklab.explore.samples import ExplorerSample
from masklab.explore.static_files import THUMB_SIDE, SampleFiles, safe_names, write_sample_files
from masklab.explore.tables import json_value, listing, plural, table_columns
from masklab.files import atomic_write
from masklab.report.overlay import distinct_colors

MAX_CURVE_POINTS = 400  # per training curve, evenly thinned
MAX_CHANGED = 200  # rows of summary["changed"] kept
MAX_LISTED = 20  # problems of one kind listed one by one; the rest are counted
DATA_MARK = "/*__MASKLAB_DATA__*/"


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
    summary = {} if summary is None else summary
    problems = _problem_list(summary)
    names = safe_names([s.id for s in samples])
    files = write_sample_files(samples, names, class_table, out_dir / "full", f"Writing {out_dir.name}")
    columns, found = table_columns(table, [s.id for s in samples])
    problems.extend(_group_problems([item for f in files for item in f.problems] + found + _repeated_ids(samples)))
    data = {
        "title": str(title),
        "classes": class_legend(class_table),
        "ignore_index": class_table.ignore_index,
        "error_colors": {str(k): list(v) for k, v in ERROR_COLORS.items()},
        "thumb_side": THUMB_SIDE,
        "mlflow": _mlflow(mlflow_artifact),
        "samples": _sample_data(samples, names, files),
        "view": view,
        "object_status": {str(k): {"name": name, "label": label, "color": list(rgb)}
                          for k, (name, label, rgb) in OBJECT_STATUS.items()},
        "object_colors": distinct_colors(OBJECT_PALETTE).tolist(),
        "columns": columns,
        "summary": _trim_summary(json_value({k: v for k, v in summary.items() if k != "problems"})),
        "problems": [str(p) for p in problems],
    }
    return _write_page(out_dir / "index.html", data, title)


def _problem_list(summary: dict) -> list:
    """``summary["problems"]`` as a list that problems are appended to (made one, and put back, when it is not)."""
    problems = summary.get("problems")
    if not isinstance(problems, list):
        problems = [str(p) for p in problems] if isinstance(problems, tuple) else [] if problems is None else [
            str(problems)]
        summary["problems"] = problems
    return problems


def _repeated_ids(samples: list[ExplorerSample]) -> list[tuple[str, str]]:
    """A problem naming the samples whose id an earlier sample has, if any."""
    ids = pd.Series([str(s.id) for s in samples], dtype=object)
    repeated = ids[ids.duplicated()].tolist()
    if not repeated:
        return []
    return [("dup", f"{plural(len(repeated), 'sample')} with an id that appeared before: {listing(repeated)}")]


def _sample_data(samples: list[ExplorerSample], names: list[str], files: list[SampleFiles]) -> dict[str, list]:
    """The page's samples, column by column (the page's data layout; see static_page.html)."""
    return {
        "id": [str(s.id) for s in samples],
        "split": [str(s.split) for s in samples],
        "name": names,
        "ok": [int(f.ok) for f in files],
        "w": [f.width for f in files],
        "h": [f.height for f in files],
        "img": [f.thumb for f in files],
        "gt": [f.gt for f in files],
        "pred": [f.pred for f in files],
        "gtc": [f.gt_classes for f in files],
        "pc": [f.pred_classes for f in files],
        "files": ["".join(k[0] for k in f.files) for f in files],  # i, g, p, e
        "obj": [f.objects for f in files],
        "reg": [[[int(v) for v in r[:4]] + [str(r[4])] for r in s.regions] if s.regions else None for s in samples],
    }


def _write_page(index: Path, data: dict[str, Any], title: str) -> Path:
    """The page with ``data`` inline, written atomically to ``index``."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # Inside <script>: no "</script>", "<!--" or HTML comment tricks can end it early.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    before, after = page_template(STATIC_PAGE).split(DATA_MARK, 1)
    page = with_title(before, title) + text + with_title(after, title)
    return atomic_write(index, lambda tmp: tmp.write_text(page, encoding="utf-8"))


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
