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

The issues say what looks wrong and where; two scores say how likely a sample's mask is wrong (objects
registered in :data:`SCORES` by the name ``score=`` takes):

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

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from masklab.named import named, register_named

KINDS = ("missing_object", "spurious_object", "class_swap", "boundary")


@dataclass(frozen=True)
class Issue:
    """One suspected label error of a sample.

    ``label_class``: the class the mask says over the region; ``model_class``: what the model says.
    ``area``: pixels at the out-of-fold resolution; ``area_original``: at the image's own size.
    ``bbox``: x0, y0, x1, y1 (exclusive) in the image's own pixel coordinates. ``evidence``: area x
    confidence (confidently wrong px). ``detail``: ``dilated`` / ``eroded`` / ``shifted`` for boundary
    issues, else empty; ``outline``: boundary issues, the length (px) of the labelled class's outline.
    ``probability``: with ``score=learned``, the detector's probability that the region is an error (NaN
    otherwise).
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
    probability: float = float("nan")  # score=learned: the probability the region is a label error

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
    probs = np.asarray(probs, dtype=np.float32)
    _, h, w = probs.shape
    if label.shape != (h, w):
        raise ValueError(f"sample '{sample_id}': label {label.shape} and probabilities {(h, w)} differ in size")
    px = compare_pixels(probs, label, ignore_index, background, min_margin)
    scale = (original_size[0] / h, original_size[1] / w)
    issues: list[Issue] = []
    rims: dict[int, Rim] = {}  # per labelled class: its boundary regions
    for a, b, region in disputed_regions(px, background, min_area):
        kind = region_kind(px, a, b, region, background, object_share)
        if kind == "boundary":
            cls, other = (a, b) if a != background else (b, a)
            rims.setdefault(cls, Rim(np.zeros((h, w), bool), other)).add(px, a, b, region, background)
            continue
        area = int(region.sum())
        confidence = float(px.margin[region].mean())
        issues.append(Issue(sample_id, kind, a, b, area, area * (scale[0] * scale[1]), confidence, area * confidence,
                            _bbox(region, scale)))
    return issues + [rim.issue(sample_id, cls, px.label, scale) for cls, rim in sorted(rims.items())]


EIGHT = np.ones((3, 3), bool)  # 8-connectivity


@dataclass(frozen=True)
class PixelComparison:
    """A mask against the out-of-fold model, pixel by pixel, all (h, w): ``label`` the labelled class (ignored
    and unknown ids read as background), ``pred`` the model's class, ``margin`` P(pred) - P(label), ``disputed``
    the valid pixels where the model prefers another class by at least the minimum margin; ``objects``: per
    labelled class with disputed pixels (background aside), its connected objects (ndimage labels)."""

    label: np.ndarray
    pred: np.ndarray
    margin: np.ndarray
    disputed: np.ndarray
    objects: dict[int, np.ndarray]


def compare_pixels(probs: np.ndarray, label: np.ndarray, ignore_index: int | None, background: int,
                   min_margin: float) -> PixelComparison:
    """The PixelComparison of (C, h, w) float32 ``probs`` and an (h, w) ``label``."""
    from scipy import ndimage

    valid = label != ignore_index if ignore_index is not None else np.ones_like(label, bool)
    safe_label = np.where(valid & (label < probs.shape[0]), label, background)
    pred = probs.argmax(axis=0)
    margin = np.take_along_axis(probs, pred[None], 0)[0] - np.take_along_axis(probs, safe_label[None], 0)[0]
    disputed = valid & (pred != safe_label) & (margin >= min_margin)
    objects = {c: ndimage.label(safe_label == c, EIGHT)[0] for c in np.unique(safe_label[disputed]) if c != background}
    return PixelComparison(safe_label, pred, margin, disputed, objects)


def disputed_regions(px: PixelComparison, background: int, min_area: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(labelled class a, model's class b, (h, w) bool region) of each connected disputed region of at least
    ``min_area`` px, by (a, b) pair."""
    from scipy import ndimage

    pairs = np.unique(np.stack([px.label[px.disputed], px.pred[px.disputed]], axis=1), axis=0)
    for a, b in (tuple(int(v) for v in pair) for pair in pairs):
        regions, n = ndimage.label(px.disputed & (px.label == a) & (px.pred == b), EIGHT)
        for r in range(1, n + 1):
            region = regions == r
            if int(region.sum()) >= min_area:
                yield a, b, region


def region_kind(px: PixelComparison, a: int, b: int, region: np.ndarray, background: int,
                object_share: float) -> str:
    """What a disputed region labelled ``a`` and seen as ``b`` looks like: missing_object, spurious_object,
    class_swap or boundary (see the module's docstring)."""
    from scipy import ndimage

    if a == background:
        touching = ndimage.binary_dilation(region, EIGHT) & (px.label == b)
        return "boundary" if touching.any() else "missing_object"
    owners = np.unique(px.objects[a][region])
    owner = np.isin(px.objects[a], owners[owners > 0])
    owned = int(owner.sum())
    # Most of the object disputed, and the model sees (almost) none of it as class a (a core under 10%): a wrong
    # object. Where it sees a core, the outline was drawn far too wide instead.
    core = int((owner & (px.pred == a)).sum())
    whole = int(region.sum()) >= object_share * owned and core < 0.1 * owned
    return ("class_swap" if b != background else "spurious_object") if whole else "boundary"


@dataclass
class Rim:
    """The boundary regions of one labelled class: their pixels, the sides they lie on (``dilated``: labelled
    beyond the model's object, ``eroded``: short of it, ``reassigned``: given to another class), their summed
    margin and the class on their other side."""

    mask: np.ndarray
    other: int
    sides: set[str] = field(default_factory=set)
    margin: float = 0.0

    def add(self, px: PixelComparison, a: int, b: int, region: np.ndarray, background: int) -> None:
        self.mask |= region
        self.sides.add("eroded" if a == background else "dilated" if b == background else "reassigned")
        self.margin += float(px.margin[region].sum())

    def issue(self, sample_id: str, cls: int, label: np.ndarray, scale: tuple[float, float]) -> Issue:
        """The class's boundary issue; its outline: the labelled class's pixels on its border."""
        from scipy import ndimage

        outline = label == cls
        length = max(int((outline & ~ndimage.binary_erosion(outline, EIGHT)).sum()), 1)
        area = int(self.mask.sum())
        sides = self.sides
        detail = "shifted" if {"dilated", "eroded"} <= sides else "dilated" if "dilated" in sides else "eroded"
        return Issue(sample_id, "boundary", int(cls), int(self.other), area, area * (scale[0] * scale[1]),
                     self.margin / area, self.margin, _bbox(self.mask, scale), detail, length)


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


def mask_evidence(probs: np.ndarray, label: np.ndarray, ignore_index: int | None = None,
                  min_area: int = 4) -> dict[str, float]:
    """A mask's evidence against (C, h, w) ``probs``: its :func:`pixel_quality` and the two shares of
    :func:`disagreement` (the per-sample columns every score reads)."""
    return {"pixel_quality": pixel_quality(probs, label, ignore_index=ignore_index),
            **disagreement(probs, label, ignore_index=ignore_index, min_area=min_area)}


SIDES = {"unsupported": ("spurious_object", "class_swap", "boundary"), "unlabelled": ("missing_object", "boundary")}


def percentile(values: np.ndarray) -> np.ndarray:
    """Each value's percentile among ``values`` (0-1], ties averaged."""
    import pandas as pd

    return pd.Series(np.asarray(values, float)).rank(pct=True).to_numpy()


def share_percentiles(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """(2, N): each share of :func:`disagreement` (keys of ``SIDES``, in order) as its percentile among the samples."""
    names = list(SIDES)
    return np.stack([percentile(columns[n]) for n in names]) if len(columns[names[0]]) else np.zeros((2, 0))


def disputed_sides(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N,) per sample the share (a key of ``SIDES``) with the higher percentile: it picks the sample's kind of
    issue, whatever the score."""
    ranks = share_percentiles(columns)
    return np.array(list(SIDES), dtype=object)[ranks.argmax(axis=0)] if ranks.size else np.array([], dtype=object)


class LabelScore(ABC):
    """How likely each sample's mask is wrong, read off per-sample ``columns`` over the whole dataset:
    ``pixel_quality`` and the two shares of :func:`disagreement`. Users choose one by ``name`` (``score=``);
    the classes are registered in :data:`SCORES`."""

    name: ClassVar[str]
    # True when the score needs the learned detector's per-sample ``error_probability`` column
    # (masklab.curation.detector), which costs a second look at every sample's regions.
    learns: ClassVar[bool] = False

    @abstractmethod
    def suspicion(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) suspicion in (0, 1]: the sample's percentile among the samples, the most suspicious 1."""


# name -> label-error score class, in the order the names are listed to users
SCORES: dict[str, type[LabelScore]] = {}


def register_score(cls: type[LabelScore]) -> type[LabelScore]:
    """Add a score class under its ``name`` (a class decorator); a second class under a taken name is a bug."""
    return register_named(SCORES, cls, "label-error score")


def label_score(name: str) -> LabelScore:
    """The score called ``name``; a UserError naming the known scores otherwise."""
    return named(SCORES, name, "score")()


@register_score
class PixelsScore(LabelScore):
    """The percentile of 1 - :func:`pixel_quality`: the most confidently contradicted pixels count."""

    name = "pixels"

    def suspicion(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return percentile(1.0 - np.asarray(columns["pixel_quality"], float))


@register_score
class ObjectsScore(LabelScore):
    """Each disputed share's percentile among the samples (the two live on different scales: a model that
    over-segments disputes many masks' ``unlabelled`` share a little, and only an unusual share is evidence),
    the higher one."""

    name = "objects"

    def suspicion(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        ranks = share_percentiles(columns)
        return ranks.max(axis=0) if ranks.size else np.zeros(0)


@register_score
class LearnedScore(LabelScore):
    """The percentile of the learned detector's ``error_probability`` (masklab.curation.detector): a classifier
    that learned from errors planted in the dataset's own masks what an error looks like against these
    out-of-fold probabilities."""

    name = "learned"
    learns = True

    def suspicion(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return percentile(np.asarray(columns["error_probability"], float))


def suspicion(columns: Mapping[str, np.ndarray], score: str | LabelScore = "pixels") -> tuple[np.ndarray, np.ndarray]:
    """(suspicion in (0, 1], side) per sample from per-sample ``columns`` over the whole dataset: the ``score``
    (an object, or the name of a registered one) and :func:`disputed_sides`."""
    chosen = label_score(score) if isinstance(score, str) else score
    return chosen.suspicion(columns), disputed_sides(columns)


def region_order(issues) -> str:
    """The issues table's column that orders a sample's regions, most likely wrong first: ``probability`` when the
    learned detector gave one, else ``evidence``."""
    return "probability" if "probability" in issues and issues["probability"].notna().any() else "evidence"


def worst_kind(evidence: dict[str, float], side: str) -> str:
    """The kind of issue with the most evidence among those ``side`` covers ("" when the sample has none
    there: the model disputes the mask, but below ``min_margin`` or in regions under ``min_area``)."""
    kinds = [k for k in SIDES[side] if evidence.get(k, 0.0) > 0]
    return max(kinds, key=lambda k: evidence[k]) if kinds else ""
