"""`masklab pipeline check`: the metrics of a fresh `dvc repro` against the committed ones.

CPU training here is deterministic, so on the platform that produced the committed metrics
(``platform.json`` beside them: CPU model, threads, torch, ...) every metric must come back
exactly. On another platform the float summation order differs (SIMD width, thread split,
library kernels), training takes another path from its first step, and each metric may move by
up to the bound ``ACROSS_PLATFORMS`` sets for its family: region metrics (mIoU, mDice, pixel
accuracy) least, boundary IoU (a thin band of pixels) and per-class values (one class's pixels)
more. README, "Same numbers elsewhere", says how the bounds were measured.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from masklab.errors import UserError
from masklab.pipeline.outputs import METRICS_FILE, PLATFORM_FILE

# Leaf names of per-class metrics start with these (``val.iou/circle``); any other metric counts as
# a summary, so an unknown per-class family gets the stricter bound.
PER_CLASS_PREFIXES = ("iou/", "dice/", "boundary_iou/")
# The stage folders under the pipeline's output folder whose metrics.json the check compares.
CHECKED_STAGES = ("train", "evaluate")
# How many mismatching metrics a report lists per file before summarising the rest.
LISTED_MISMATCHES = 12

Value = float | int | None


@dataclass(frozen=True)
class Tolerance:
    """The largest |change| allowed per metric family; all zero means exact."""

    summary: float  # mIoU, mDice, pixel accuracy, their per-image means, best_val/mIoU
    per_class: float  # iou/<class>, dice/<class>
    boundary: float  # mBoundaryIoU, mBoundaryIoU_image
    boundary_per_class: float  # boundary_iou/<class>

    @classmethod
    def uniform(cls, bound: float) -> Tolerance:
        return cls(bound, bound, bound, bound)

    @property
    def exact(self) -> bool:
        return not any((self.summary, self.per_class, self.boundary, self.boundary_per_class))

    def allowed(self, metric: str) -> float:
        """The bound for ``metric`` (a flattened name such as ``val.iou/circle``)."""
        leaf = metric.split(".", 1)[-1]
        per_class, boundary = leaf.startswith(PER_CLASS_PREFIXES), "boundary" in leaf.lower()
        if boundary:
            return self.boundary_per_class if per_class else self.boundary
        return self.per_class if per_class else self.summary

    def describe(self) -> str:
        if self.exact:
            return "exact"
        if len({self.summary, self.per_class, self.boundary, self.boundary_per_class}) == 1:
            return f"|diff| <= {self.summary:g}"
        return (f"|diff| <= {self.summary:g}, per class {self.per_class:g}; boundary IoU {self.boundary:g}, "
                f"per class {self.boundary_per_class:g}")


EXACT = Tolerance.uniform(0.0)
# Measured on the default pipeline (docs/benchmarks.md, "Reproduction across platforms"; rerun with
# benchmarks/reproduction_spread.py): 6 runs that differ only in float summation order (two CPU
# models, 1 thread, other SIMD and oneDNN kernels). Each bound is 3 standard deviations of the
# difference between two such runs (3 * sqrt(2) * the family's largest per-metric sd), rounded up
# to 0.01. They are wide because 12 epochs end before training settles, so where it ends depends
# on the path; the same platform is exact.
ACROSS_PLATFORMS = Tolerance(summary=0.09, per_class=0.12, boundary=0.1, boundary_per_class=0.17)


@dataclass(frozen=True)
class Mismatch:
    """One metric outside what the platforms allow; ``None`` where a side lacks the metric (or it is NaN)."""

    metric: str
    committed: Value
    current: Value
    allowed: float  # 0: must be equal

    @property
    def delta(self) -> float:
        if self.committed is None or self.current is None:
            return math.inf
        return abs(float(self.current) - float(self.committed))

    def describe(self) -> str:
        rule = "must be equal (same platform)" if self.allowed == 0 else f"> tolerance {self.allowed:g}"
        delta = "" if math.isinf(self.delta) else f", |diff| {self.delta:.6f} {rule}"
        return f"{self.metric}: committed {_show(self.committed)}, here {_show(self.current)}{delta}"


@dataclass
class FileCheck:
    """One stage's metrics.json: the platform comparison and the metrics outside the allowed change."""

    path: str
    platform_recorded: bool  # the commit has a platform.json for these metrics
    differences: dict[str, tuple[str, str]]  # fingerprint key -> (committed, here)
    tolerance: Tolerance
    compared: int
    largest: tuple[str, float] | None  # the metric that moved most, and by how much
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def same_platform(self) -> bool:
        return self.platform_recorded and not self.differences

    def describe_platform(self) -> str:
        if not self.platform_recorded:
            return "the commit records no platform for these metrics, so they may differ"
        if not self.differences:
            return "same platform as the commit, so every metric must be equal"
        named = "; ".join(f"{key} {theirs!r} committed, {ours!r} here"
                          for key, (theirs, ours) in self.differences.items())
        return f"platform differs from the commit's ({named})"

    def report(self) -> list[str]:
        rule = self.tolerance.describe()
        status = "FAILED" if self.mismatches else "ok"
        if self.largest is None or self.largest[1] == 0:
            largest = "; all equal" if self.largest else ""
        else:
            largest = f"; largest |diff| {self.largest[1]:.6f} ({self.largest[0]})"
        lines = [f"{self.path}: {status}, {self.compared} metrics compared ({rule}){largest}",
                 f"  {self.describe_platform()}"]
        ordered = sorted(self.mismatches, key=lambda m: -m.delta)
        lines += [f"  {m.describe()}" for m in ordered[:LISTED_MISMATCHES]]
        if len(ordered) > LISTED_MISMATCHES:
            lines.append(f"  ... and {len(ordered) - LISTED_MISMATCHES} more")
        return lines


@dataclass
class CheckResult:
    """Every checked metrics file of the pipeline against revision ``rev``."""

    rev: str
    files: list[FileCheck]

    @property
    def passed(self) -> bool:
        return not any(f.mismatches for f in self.files)

    def report(self) -> str:
        head = f"masklab pipeline check against {self.rev}: {'passed' if self.passed else 'FAILED'}"
        lines = [head, *(line for f in self.files for line in f.report())]
        if not self.passed and any(f.same_platform and f.mismatches for f in self.files):
            lines.append("Same platform, different numbers: code, data or params differ from the commit "
                         "(see `dvc status`, `git status`), or a library the fingerprint does not name changed.")
        return "\n".join(lines)


def _show(value: Value) -> str:
    return "missing" if value is None else f"{value}"


def flatten_metrics(data: Mapping[str, Any], prefix: str = "") -> dict[str, Value]:
    """``{"val": {"mIoU": 0.9}}`` -> ``{"val.mIoU": 0.9}``, the names ``dvc metrics diff`` uses."""
    flat: dict[str, Value] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            flat[name] = None if value is None or math.isnan(value) else value
    return flat


def compare_metrics(committed: Mapping[str, Value], current: Mapping[str, Value],
                    tolerance: Tolerance) -> tuple[list[Mismatch], tuple[str, float] | None]:
    """Metrics whose |current - committed| exceeds what ``tolerance`` allows them, or that one side
    lacks; and the metric that moved most with its change."""
    mismatches, largest = [], None
    for name in sorted(set(committed) | set(current)):
        old, new, allowed = committed.get(name), current.get(name), tolerance.allowed(name)
        if old is None or new is None:
            both_nan = name in committed and name in current and old is None and new is None
            if not both_nan:
                mismatches.append(Mismatch(name, old, new, allowed))
            continue
        delta = abs(float(new) - float(old))
        if largest is None or delta > largest[1]:
            largest = (name, delta)
        # Stored values have 6 decimals; 1e-9 absorbs the binary error of their difference.
        if (new != old) if allowed == 0 else delta > allowed + 1e-9:
            mismatches.append(Mismatch(name, old, new, allowed))
    return mismatches, largest


def check_file(path: str, committed: Mapping[str, Any], current: Mapping[str, Any],
               committed_platform: Mapping[str, str] | None, current_platform: Mapping[str, str],
               tolerance: Tolerance = ACROSS_PLATFORMS) -> FileCheck:
    """Compare one metrics file: exactly when both platform records agree, else within ``tolerance``."""
    from masklab.platform import differences

    recorded = committed_platform is not None
    # differences(ours, theirs) -> {key: (ours, theirs)}: ours is here, theirs the commit's.
    diffs = {key: (theirs, ours) for key, (ours, theirs)
             in differences(dict(current_platform), dict(committed_platform or {})).items()} if recorded else {}
    applied = EXACT if recorded and not diffs else tolerance
    flat_old, flat_new = flatten_metrics(committed), flatten_metrics(current)
    mismatches, largest = compare_metrics(flat_old, flat_new, applied)
    return FileCheck(path, recorded, diffs, applied, len(set(flat_old) | set(flat_new)), largest, mismatches)


def committed_text(root: Path, rev: str, path: str) -> str | None:
    """The text of ``path`` (relative to ``root``) at git revision ``rev``; None when the revision lacks it."""
    try:
        subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root,
                       capture_output=True, check=True)
    except FileNotFoundError:
        raise UserError("git is not installed: the check reads the committed metrics with `git show`") from None
    except subprocess.CalledProcessError:
        raise UserError(f"{root}: '{rev}' is not a commit of this git repository") from None
    shown = subprocess.run(["git", "show", f"{rev}:./{path}"], cwd=root, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def _read_json(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(data).__name__}")
    return data


def check(root: Path, out: Path = Path("pipeline"), rev: str = "HEAD",
          tolerance: Tolerance = ACROSS_PLATFORMS) -> CheckResult:
    """Compare ``<out>/<stage>/metrics.json`` in the work tree at ``root`` with revision ``rev``'s.

    The work-tree files are what the last ``dvc repro`` wrote; run it first (in a fresh clone, after
    ``dvc pull`` of the data). Raises UserError when a file to compare is missing.
    """
    root = Path(root)
    files = []
    for stage in CHECKED_STAGES:
        metrics_path = (out / stage / METRICS_FILE).as_posix()
        platform_path = (out / stage / PLATFORM_FILE).as_posix()
        here = root / metrics_path
        if not here.is_file():
            raise UserError(f"{here} does not exist: run `dvc repro` first")
        if not (root / platform_path).is_file():
            raise UserError(f"{root / platform_path} does not exist: these metrics were written before the pipeline "
                            "recorded its platform; run `dvc repro` (`dvc repro -f` re-runs up-to-date stages)")
        old_metrics = committed_text(root, rev, metrics_path)
        if old_metrics is None:
            raise UserError(f"{rev} has no {metrics_path}: nothing committed to compare with")
        old_platform = committed_text(root, rev, platform_path)
        files.append(check_file(
            metrics_path,
            _read_json(old_metrics, f"{rev}:{metrics_path}"),
            _read_json(here.read_text(), str(here)),
            None if old_platform is None else _read_json(old_platform, f"{rev}:{platform_path}"),
            _read_json((root / platform_path).read_text(), str(root / platform_path)),
            tolerance,
        ))
    return CheckResult(rev, files)
