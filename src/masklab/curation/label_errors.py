"""Suspected label errors in semantic masks, from out-of-fold class probabilities.

Where the model that never trained on a sample confidently disagrees with its mask, the pixels
that disagree form regions; each region is typed by what the disagreement looks like:

- ``missing_object``: labelled background where the model sees an object of class b, and the region
  touches no labelled object of class b (a separate object nobody drew);
- ``spurious_object``: most of a labelled object (``object_share``, default half) is background to
  the model and it sees no core of the object's class inside (a blob drawn where nothing is; with a
  core, a small object drawn far too wide, it is a ``dilated`` boundary);
- ``class_swap``: most of a labelled object of class a is confidently class b (b not background);
- ``boundary``: the disagreement lies along an object's outline: the label is too large
  (``dilated``), too small (``eroded``) or both (``shifted``) there.

Each issue has its pixel area (at the out-of-fold resolution and scaled to the image's own size),
its confidence (the mean margin P(model's class) - P(labelled class) over the region) and its
evidence = area x confidence (confidently wrong pixels); a boundary issue also has the outline's
length, so evidence / length is the mean width (px) of the disputed band.

The issues say what looks wrong and where; two scores say how likely a sample's mask is wrong:

- ``pixels`` (the default): the soft minimum over the sample's pixels of P(labelled class)
  (:func:`pixel_quality`; Lad & Mueller 2023, the score cleanlab's segmentation module computes with
  ``method="softmin"``, written here because cleanlab is AGPL-3.0). The most confidently contradicted
  pixels dominate it. With a well-trained model it separates planted errors almost perfectly.
- ``objects``: two shares of the mask the model disputes (:func:`disagreement`), each turned into its
  percentile among the dataset's samples, the higher one counting. It ranks better when the model is
  weak (it disputes many clean masks pixel by pixel, but rarely a whole object); with many small
  objects per image it is worse, since some small object is always missed.

docs/benchmarks.md ("Label errors on planted noise") has both against cleanlab.

Memory: one sample's probabilities at a time; the dataset-wide statistics need only the small
per-sample evidence table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("missing_object", "spurious_object", "class_swap", "boundary")


@dataclass(frozen=True)
class Issue:
    """One suspected label error of a sample.

    ``label_class``: the class the mask says over the region; ``model_class``: what the model says.
    ``area``: pixels at the out-of-fold resolution; ``area_original``: at the image's own size.
    ``bbox``: x0, y0, x1, y1 (exclusive) in the image's own pixel coordinates. ``evidence``: area x
    confidence (confidently wrong px). ``detail``: ``dilated`` / ``eroded`` / ``shifted`` for boundary
    issues, else empty; ``outline``: boundary issues, the length (px) of the labelled class's outline.
    """

    sample_id: str
    kind: str
    label_class: int
    model_class: int
    area: int
    area_original: float
    confidence: float
    evidence: float
    bbox: tuple[int, int, int, int]
    detail: str = ""
    outline: int = 0

    @property
    def width(self) -> float:
        """Boundary issues: mean width (px) of the disputed band along the outline; 0 for other kinds."""
        return self.evidence / self.outline if self.outline else 0.0

    def row(self) -> dict:
        out = asdict(self)
        out["bbox"] = list(self.bbox)
        return out


def _bbox(mask: np.ndarray, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    sy, sx = scale
    return (int(np.floor(xs.min() * sx)), int(np.floor(ys.min() * sy)),
            int(np.ceil((xs.max() + 1) * sx)), int(np.ceil((ys.max() + 1) * sy)))


def find_issues(sample_id: str, probs: np.ndarray, label: np.ndarray, original_size: tuple[int, int],
                ignore_index: int | None = None, background: int = 0, min_area: int = 4,
                min_margin: float = 0.2, object_share: float = 0.5) -> list[Issue]:
    """Suspected label errors of one sample.

    probs: (C, h, w) class probabilities (any float dtype); label: (h, w) class ids at the same size;
    original_size: (height, width) of the image, for ``area_original`` and ``bbox``. Pixels whose
    margin is under ``min_margin`` (the model barely prefers another class) and regions under
    ``min_area`` px do not count.
    """
    from scipy import ndimage

    probs = np.asarray(probs, dtype=np.float32)
    classes, h, w = probs.shape
    if label.shape != (h, w):
        raise ValueError(f"sample '{sample_id}': label {label.shape} and probabilities {(h, w)} differ in size")
    valid = label != ignore_index if ignore_index is not None else np.ones_like(label, bool)
    safe_label = np.where(valid & (label < classes), label, background)
    pred = probs.argmax(axis=0)
    picked = np.take_along_axis(probs, pred[None], 0)[0]
    labelled = np.take_along_axis(probs, safe_label[None], 0)[0]
    margin = picked - labelled
    disputed = valid & (pred != safe_label) & (margin >= min_margin)
    scale = (original_size[0] / h, original_size[1] / w)
    pixel_area = scale[0] * scale[1]
    eight = np.ones((3, 3), bool)

    issues: list[Issue] = []
    rim: dict[int, dict[str, object]] = {}  # per labelled class: boundary regions
    objects = {c: ndimage.label(safe_label == c, eight)[0] for c in np.unique(safe_label[disputed]) if c != background}
    pairs = np.unique(np.stack([safe_label[disputed], pred[disputed]], axis=1), axis=0)  # (labelled, predicted)
    for a, b in (tuple(int(v) for v in pair) for pair in pairs):
        regions, n = ndimage.label(disputed & (safe_label == a) & (pred == b), eight)
        for r in range(1, n + 1):
            region = regions == r
            area = int(region.sum())
            if area < min_area:
                continue
            confidence = float(margin[region].mean())
            if a == background:
                touching = ndimage.binary_dilation(region, eight) & (safe_label == b)
                kind = "boundary" if touching.any() else "missing_object"
                detail = "eroded"
            else:
                owners = np.unique(objects[a][region])
                owner = np.isin(objects[a], owners[owners > 0])
                owned = int(owner.sum())
                # Most of the object disputed, and the model sees (almost) none of it as class a (a core under
                # 10%): a wrong object. Where it sees a core, the outline was drawn far too wide instead.
                core = int((owner & (pred == a)).sum())
                whole = area >= object_share * owned and core < 0.1 * owned
                kind = ("class_swap" if b != background else "spurious_object") if whole else "boundary"
                detail = "dilated" if b == background else "reassigned"
            if kind == "boundary":
                side = rim.setdefault(a if a != background else b, {"mask": np.zeros((h, w), bool), "sides": set(),
                                                                   "margin": 0.0, "other": b if a != background else a})
                side["mask"] |= region
                side["sides"].add(detail)
                side["margin"] += float(margin[region].sum())
                continue
            issues.append(Issue(sample_id, kind, a, b, area, area * pixel_area, confidence, area * confidence,
                                _bbox(region, scale)))
    for cls, side in sorted(rim.items()):
        mask = side["mask"]
        outline = safe_label == cls
        length = max(int((outline & ~ndimage.binary_erosion(outline, eight)).sum()), 1)
        area = int(mask.sum())
        sides = side["sides"]
        detail = "shifted" if {"dilated", "eroded"} <= sides else "dilated" if "dilated" in sides else "eroded"
        issues.append(Issue(sample_id, "boundary", int(cls), int(side["other"]), area, area * pixel_area,
                            float(side["margin"]) / area, float(side["margin"]), _bbox(mask, scale), detail,
                            length))
    return issues


def typical_width(issues_by_sample: Iterable[Iterable[Issue]]) -> float:
    """The median over samples of the disputed band's mean width (px) along labelled outlines: the
    boundary disagreement any sample shows (model imprecision), 0 when no sample shows any."""
    widths = []
    for issues in issues_by_sample:
        rims = [i for i in issues if i.kind == "boundary"]
        if rims:
            widths.append(sum(i.evidence for i in rims) / sum(i.outline for i in rims))
    return float(np.median(widths)) if widths else 0.0


def evidence_by_kind(issues: Iterable[Issue], width: float) -> dict[str, float]:
    """{kind: confidently wrong px of the sample} (0 where none): object kinds summed over their
    issues; boundary issues only beyond ``width`` (px, see :func:`typical_width`) along their outline."""
    out = dict.fromkeys(KINDS, 0.0)
    for issue in issues:
        if issue.kind == "boundary":
            out["boundary"] += max(0.0, issue.evidence - width * issue.outline)
        else:
            out[issue.kind] += issue.evidence
    return out


def disagreement(probs: np.ndarray, label: np.ndarray, ignore_index: int | None = None, background: int = 0,
                 min_area: int = 4, floor: float = 0.1, prior_share: float = 0.01) -> dict[str, float]:
    """The two shares of a sample's mask that the out-of-fold model disputes, each in [0, 1].

    probs: (C, h, w) class probabilities; label: (h, w) class ids at the same size.

    - ``unsupported``: of the labelled objects (connected regions of one foreground class, at least
      ``min_area`` px), the largest share the model does not see: 1 - mean P(labelled class) over the
      object. A blob drawn where nothing is, a mask grown past the object, a shifted or swapped object.
    - ``unlabelled``: the share of the model's foreground mass that the mask does not label with that
      class: an object nobody drew, an outline drawn too tight. A pixel's mass is its foreground class
      probability above ``floor`` (the diffuse low probabilities a softmax spreads over every pixel are
      not an object); ``prior_share`` of the image's pixels is added to the denominator so that a model
      that sees (almost) nothing in an empty mask is no evidence.

    Both are shares, not pixel counts, so a small object wrongly drawn counts as much as a large one.
    """
    from scipy import ndimage

    probs = np.asarray(probs, dtype=np.float32)
    classes = probs.shape[0]
    valid = label != ignore_index if ignore_index is not None else np.ones(label.shape, bool)
    eight = np.ones((3, 3), bool)
    unsupported = 0.0
    outside = inside = 0.0
    for c in range(classes):
        if c == background:
            continue
        mine = valid & (label == c)
        p = probs[c]
        mass = np.maximum(p - floor, 0.0)
        inside += float(mass[mine].sum())
        outside += float(mass[valid & ~mine].sum())
        if not mine.any():
            continue
        objects, n = ndimage.label(mine, eight)
        areas = np.bincount(objects.ravel(), minlength=n + 1)
        support = np.bincount(objects.ravel(), weights=p.ravel(), minlength=n + 1)
        big = np.flatnonzero(areas[1:] >= min_area) + 1
        if len(big):
            unsupported = max(unsupported, float(1.0 - (support[big] / areas[big]).min()))
    prior = prior_share * float(valid.sum())
    return {"unsupported": unsupported, "unlabelled": outside / (inside + outside + prior) if outside > 0 else 0.0}


def pixel_quality(probs: np.ndarray, label: np.ndarray, ignore_index: int | None = None,
                  temperature: float = 0.1) -> float:
    """The softmin over the valid pixels of P(labelled class), in [0, 1] (1: the model agrees everywhere).

    probs: (C, h, w) class probabilities; label: (h, w) class ids at the same size. Each pixel weighs
    exp(-P / ``temperature``), so a few confidently contradicted pixels pull the score down (Lad &
    Mueller 2023, "Estimating label quality and errors in semantic segmentation data via any model")."""
    probs = np.asarray(probs, dtype=np.float32)
    valid = label != ignore_index if ignore_index is not None else np.ones(label.shape, bool)
    valid &= label < probs.shape[0]
    if not valid.any():
        return 1.0
    q = np.take_along_axis(probs, np.where(valid, label, 0)[None].astype(np.int64), 0)[0][valid].astype(np.float64)
    weights = np.exp(-(q - q.min()) / temperature)  # shifted: the same ratio, no underflow to 0 / 0
    return float((q * weights).sum() / weights.sum())


SIDES = {"unsupported": ("spurious_object", "class_swap", "boundary"), "unlabelled": ("missing_object", "boundary")}
SCORES = ("pixels", "objects")


def percentile(values: np.ndarray) -> np.ndarray:
    """Each value's percentile among ``values`` (0-1], ties averaged."""
    import pandas as pd

    return pd.Series(np.asarray(values, float)).rank(pct=True).to_numpy()


def suspicion(columns: dict[str, np.ndarray], score: str = "pixels") -> tuple[np.ndarray, np.ndarray]:
    """(suspicion in (0, 1], side) per sample from per-sample ``columns`` over the whole dataset:
    ``pixel_quality`` and the two shares of :func:`disagreement` (keys of ``SIDES``).

    ``score="pixels"``: the percentile of 1 - pixel quality. ``score="objects"``: each share's percentile
    among the samples (the two live on different scales: a model that over-segments disputes many masks'
    ``unlabelled`` share a little, and only an unusual share is evidence), the higher one. ``side`` is
    the share with the higher percentile either way (it picks the sample's kind of issue)."""
    if score not in SCORES:
        raise ValueError(f"score={score!r}; expected one of {SCORES}")
    names = list(SIDES)
    ranks = np.stack([percentile(columns[n]) for n in names]) if len(columns[names[0]]) else np.zeros((2, 0))
    sides = np.array(names, dtype=object)[ranks.argmax(axis=0)] if ranks.size else np.array([], dtype=object)
    if score == "pixels":
        return percentile(1.0 - np.asarray(columns["pixel_quality"], float)), sides
    return ranks.max(axis=0) if ranks.size else np.zeros(0), sides


def worst_kind(evidence: dict[str, float], side: str) -> str:
    """The kind of issue with the most evidence among those ``side`` covers ("" when the sample has none
    there: the model disputes the mask, but below ``min_margin`` or in regions under ``min_area``)."""
    kinds = [k for k in SIDES[side] if evidence.get(k, 0.0) > 0]
    return max(kinds, key=lambda k: evidence[k]) if kinds else ""
