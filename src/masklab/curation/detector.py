"""``score=learned``: a label-error detector that learns from errors it plants in the dataset's own masks.

Candidate regions of a sample (all at the out-of-fold resolution) are the connected regions where the
out-of-fold prediction and the mask disagree (one per pair of labelled and predicted class) and every labelled
object (a connected region of one foreground class). Each gets :data:`REGION_FEATURES`: its size and shape, the
out-of-fold probabilities inside it and on its rim (the labelled class's, the predicted class's, margin,
entropy), the classes involved, and the model's own agreement with the mask on that sample and on that class.

The detector learns what an error looks like from copies of the dataset's masks into which it plants errors
of its own (:data:`PLANTED_KINDS`: an object removed, a spurious object added, a class swapped, one outline
dilated or eroded, every outline dilated or eroded, an outline simplified to a polygon as a hurried annotator
draws it), compared with the same out-of-fold probabilities (the model never saw the planted copies, as it
never saw the sample). Rows: each untouched sample's candidates (label 0) and each planted copy's candidates
that overlap the planted change (label 1). A gradient-boosted classifier (scikit-learn's
``HistGradientBoostingClassifier``) learns the region label; a second one learns the sample label (the
untouched mask against its planted copies): a logistic model with non-negative weights on
:data:`SAMPLE_FEATURES` (the softmin pixel quality, the disputed shares and the region probabilities' maximum,
sum, top three and count above one half). The region classifier is cross-fitted: samples are dealt into
``groups``, and a sample's regions are scored by a model that saw neither them nor its planted copies; the
sample model, a handful of weights that cannot learn one sample by heart, is fitted once on every sample so
that all scores share one scale. Samples a user marked ``needs_review`` add their disputed regions as
positives.

Memory: the features of the candidate regions (a few dozen floats each), never the probabilities of more than
one sample. Random numbers come from one seeded generator, in sample order, so the result is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

PLANTED_KINDS = ("removed", "added", "swapped", "dilated", "eroded", "all_dilated", "all_eroded", "simplified")

REGION_FEATURES = (
    "is_object", "label_class", "pred_class", "label_is_background", "pred_is_background",
    "area", "area_share", "object_share", "bbox_fill", "compactness", "touches_border",
    "p_label_mean", "p_label_below_01", "p_label_below_05",
    "p_pred_mean", "margin_mean", "entropy_mean", "pred_is_label_share",
    "rim_p_label", "rim_entropy", "rim_label_is_label", "rim_label_is_pred", "rim_pred_is_label",
    "sample_agreement", "sample_confidence", "sample_pixel_quality", "sample_class_iou",
    "sample_objects", "sample_disputed_share", "dataset_class_iou",
)
# Directions evidence can only push one way (more disagreement is never evidence of a clean mask): the classifiers
# are held to them, so an error larger than any planted one (the dataset's own errors, labelled clean in training)
# still ranks high instead of falling where the trees saw only clean masks.
REGION_MONOTONE = {"p_label_mean": -1, "p_label_below_01": 1, "p_label_below_05": 1, "margin_mean": 1,
                   "pred_is_label_share": -1, "sample_agreement": -1, "sample_pixel_quality": -1,
                   "sample_disputed_share": 1}
SAMPLE_FEATURES = ("pixel_doubt", "disagreement", "disputed_share", "unsupported", "unlabelled", "region_max",
                   "region_sum", "region_top3", "region_above_half")
# What ``observe``'s ``evidence_of`` returns for a mask: the softmin pixel quality and the two disputed shares
# (masklab.curation.label_errors.pixel_quality and disagreement).
EVIDENCE = ("pixel_quality", "unsupported", "unlabelled")

EIGHT = np.ones((3, 3), bool)


@dataclass
class SampleView:
    """One mask against the out-of-fold probabilities, all (h, w): ``label`` class ids (ignored pixels read as
    background), ``valid`` the pixels that count, ``pred`` the model's class, ``p_max`` P(model's class),
    ``entropy`` normalised to [0, 1]; ``probs`` the (C, h, w) probabilities."""

    probs: np.ndarray
    label: np.ndarray
    valid: np.ndarray
    pred: np.ndarray
    p_max: np.ndarray
    entropy: np.ndarray

    @classmethod
    def of(cls, probs: np.ndarray, label: np.ndarray, ignore_index: int | None, background: int = 0,
           pred: np.ndarray | None = None, p_max: np.ndarray | None = None,
           entropy: np.ndarray | None = None) -> SampleView:
        """The view of (C, h, w) ``probs`` and an (h, w) ``label``; ``pred``, ``p_max`` and ``entropy`` depend
        only on the probabilities, so a planted copy passes the untouched sample's."""
        classes = probs.shape[0]
        valid = label != ignore_index if ignore_index is not None else np.ones(label.shape, bool)
        valid &= label < classes
        safe = np.where(valid, label, background).astype(np.int64)
        if pred is None:
            pred = probs.argmax(axis=0)
            p_max = probs.max(axis=0)
            clipped = np.clip(probs, 1e-6, 1.0)
            entropy = -(clipped * np.log(clipped)).sum(axis=0) / np.log(max(classes, 2))
        return cls(probs, safe, valid, pred, p_max, entropy)

    def p_of(self, classes: np.ndarray) -> np.ndarray:
        """(h, w) P(class) with a class per pixel."""
        return np.take_along_axis(self.probs, classes[None].astype(np.int64), 0)[0]


def candidates(view: SampleView, background: int, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """(disputed ids, object ids): two (h, w) int32 maps of connected candidate regions of at least ``min_area``
    px, 0 elsewhere. Disputed regions: valid pixels where the model's class differs from the label, split by
    the pair of classes; objects: connected regions of one foreground class."""
    disputed = view.valid & (view.pred != view.label)
    classes = view.probs.shape[0]
    code = np.where(disputed, view.label * classes + view.pred, -1)
    d_ids = _components((code == c for c in np.unique(code[disputed])), min_area, view.label.shape)
    o_ids = _components((view.valid & (view.label == c) for c in np.unique(view.label[view.valid])
                         if c != background), min_area, view.label.shape)
    return d_ids, o_ids


def _components(masks: Iterator[np.ndarray], min_area: int, shape: tuple[int, ...]) -> np.ndarray:
    """One ``shape`` int32 id map of the 8-connected regions of every mask of ``masks`` (disjoint), small ones
    dropped, ids 1..n (all 0 when there are none)."""
    from scipy import ndimage

    out = np.zeros(shape, np.int32)
    n = 0
    for mask in masks:
        ids, k = ndimage.label(mask, EIGHT)
        out[mask] = ids[mask] + n
        n += k
    if n == 0:
        return out
    areas = np.bincount(out.ravel(), minlength=n + 1)
    keep = areas >= min_area
    keep[0] = False
    renumber = np.zeros(n + 1, np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    return renumber[out]


@dataclass
class SampleContext:
    """What a sample's regions share: agreement (share of valid pixels where model and mask agree), mean
    confidence, softmin pixel quality, per-class IoU of model and mask on the sample, its labelled objects and
    disputed share; ``inter``/``union`` per class for the dataset-wide class IoU."""

    agreement: float
    confidence: float
    pixel_quality: float
    class_iou: np.ndarray
    objects: int
    disputed_share: float
    inter: np.ndarray
    union: np.ndarray


def sample_context(view: SampleView, o_ids: np.ndarray, pixel_quality: float) -> SampleContext:
    classes = view.probs.shape[0]
    v = view.valid
    n_valid = max(int(v.sum()), 1)
    label, pred = view.label[v], view.pred[v]
    inter = np.bincount(label[label == pred], minlength=classes).astype(float)
    union = np.bincount(label, minlength=classes) + np.bincount(pred, minlength=classes) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return SampleContext(float((label == pred).mean()) if label.size else 1.0, float(view.p_max[v].mean()) if
                         label.size else 1.0, pixel_quality, iou, int(o_ids.max()),
                         float((label != pred).sum() / n_valid), inter, union)


def region_features(view: SampleView, ids: np.ndarray, is_object: bool, context: SampleContext,
                    background: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(REGION_FEATURES)) float32 features of the regions of an id map (ids 1..n), the last column
    (dataset_class_iou) left 0 for the caller to fill; (n, 4) int32 boxes x0, y0, x1, y1."""
    from scipy import ndimage

    n = int(ids.max())
    out = np.zeros((n, len(REGION_FEATURES)), np.float32)
    if n == 0:
        return out, np.zeros((0, 4), np.int32)
    classes = view.probs.shape[0]
    flat = ids.ravel()
    inside = flat > 0
    r = flat[inside]
    area = np.bincount(r, minlength=n + 1)[1:].astype(float)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(r, weights=values.ravel()[inside], minlength=n + 1)[1:] / area

    label_counts = np.bincount(r * classes + view.label.ravel()[inside], minlength=(n + 1) * classes)
    label_class = label_counts.reshape(n + 1, classes)[1:].argmax(axis=1)
    pred_counts = np.bincount(r * classes + view.pred.ravel()[inside], minlength=(n + 1) * classes)
    pred_hist = pred_counts.reshape(n + 1, classes)[1:]
    pred_class = pred_hist.argmax(axis=1)
    region_label = np.zeros(n + 1, np.int64)
    region_label[1:] = label_class
    p_label = view.p_of(region_label[ids])  # P(the region's labelled class), meaningful inside and on the rim
    p_in = p_label.ravel()[inside]
    boxes = ndimage.find_objects(ids)
    h, w = ids.shape
    bbox_area = np.array([(b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes], float)
    border = np.array([b[0].start == 0 or b[1].start == 0 or b[0].stop == h or b[1].stop == w for b in boxes])
    edge = (ids > 0) & (ndimage.grey_erosion(ids, footprint=EIGHT) != ids)
    perimeter = np.bincount(ids[edge], minlength=n + 1)[1:].astype(float)
    # The rim: a 2 px ring around each region (where two rims meet, the larger id takes the pixel).
    grown = ndimage.grey_dilation(ids, size=(5, 5))
    rim = (ids == 0) & (grown > 0)
    rr = grown[rim]
    rim_area = np.maximum(np.bincount(rr, minlength=n + 1)[1:], 1).astype(float)

    def rim_mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(rr, weights=values[rim].astype(float), minlength=n + 1)[1:] / rim_area

    region_pred = np.zeros(n + 1, np.int64)
    region_pred[1:] = pred_class
    if is_object:
        object_share = np.ones(n)
    else:  # the share of the labelled object (same class, connected through the region) the region covers
        objects, _ = ndimage.label(view.valid & (view.label != background), EIGHT)
        sizes = np.bincount(objects.ravel())
        owner = np.zeros(n + 1, np.int64)
        owner[flat] = objects.ravel()  # a region of one labelled class lies in one object (or none: background)
        owned = np.where(owner[1:] > 0, sizes[owner[1:]], 0).astype(float)
        object_share = np.where(owned > 0, area / np.maximum(owned, 1), 0.0)
    cols = {
        "is_object": np.full(n, float(is_object)), "label_class": label_class, "pred_class": pred_class,
        "label_is_background": label_class == background, "pred_is_background": pred_class == background,
        "area": area, "area_share": area / max(int(view.valid.sum()), 1), "object_share": object_share,
        "bbox_fill": area / bbox_area, "compactness": perimeter ** 2 / (4 * np.pi * area), "touches_border": border,
        "p_label_mean": mean(p_label),
        "p_label_below_01": np.bincount(r, weights=(p_in < 0.1), minlength=n + 1)[1:] / area,
        "p_label_below_05": np.bincount(r, weights=(p_in < 0.5), minlength=n + 1)[1:] / area,
        "p_pred_mean": mean(view.p_max), "margin_mean": mean(view.p_max - p_label), "entropy_mean": mean(view.entropy),
        "pred_is_label_share": pred_hist[np.arange(n), label_class] / area,
        "rim_p_label": rim_mean(p_label), "rim_entropy": rim_mean(view.entropy),
        "rim_label_is_label": rim_mean(view.label == region_label[grown]),
        "rim_label_is_pred": rim_mean(view.label == region_pred[grown]),
        "rim_pred_is_label": rim_mean(view.pred == region_label[grown]),
        "sample_agreement": np.full(n, context.agreement), "sample_confidence": np.full(n, context.confidence),
        "sample_pixel_quality": np.full(n, context.pixel_quality), "sample_class_iou": context.class_iou[label_class],
        "sample_objects": np.full(n, context.objects), "sample_disputed_share": np.full(n, context.disputed_share),
    }
    for j, name in enumerate(REGION_FEATURES[:-1]):
        out[:, j] = cols[name]
    return out, np.array([(b[1].start, b[0].start, b[1].stop, b[0].stop) for b in boxes], np.int32)


@dataclass
class Regions:
    """Candidate regions of one mask: ``features`` (n, len(REGION_FEATURES)), ``boxes`` (n, 4) x0, y0, x1, y1 at
    the out-of-fold resolution, ``d_ids`` / ``o_ids`` the two id maps (disputed regions first, then objects, in
    the rows' order), for overlaps with a planted change; ``context`` what the regions share."""

    features: np.ndarray
    boxes: np.ndarray
    d_ids: np.ndarray
    o_ids: np.ndarray
    context: SampleContext

    def overlap(self, changed: np.ndarray) -> np.ndarray:
        """(n,) per region, the larger of its share inside ``changed`` and its IoU with it."""
        shares = []
        total = int(changed.sum())
        for ids in (self.d_ids, self.o_ids):
            n = int(ids.max())
            if n == 0:
                continue
            area = np.bincount(ids.ravel(), minlength=n + 1)[1:].astype(float)
            hit = np.bincount(ids[changed], minlength=n + 1)[1:].astype(float)
            shares.append(np.maximum(hit / area, hit / (area + total - hit)))
        return np.concatenate(shares) if shares else np.zeros(0)


def describe(view: SampleView, background: int, min_area: int, pixel_quality: float) -> Regions:
    """The candidate regions of one mask and their features (see the module docstring)."""
    d_ids, o_ids = candidates(view, background, min_area)
    context = sample_context(view, o_ids, pixel_quality)
    disputed, objects = (region_features(view, ids, is_object, context, background)
                         for ids, is_object in ((d_ids, False), (o_ids, True)))
    return Regions(np.concatenate([disputed[0], objects[0]]), np.concatenate([disputed[1], objects[1]]), d_ids,
                   o_ids, context)


def plant(label: np.ndarray, valid: np.ndarray, kind: str, rng: np.random.Generator, foreground: list[int],
          background: int, min_area: int) -> np.ndarray | None:
    """A copy of the (h, w) ``label`` with one error of ``kind`` (one of PLANTED_KINDS) on valid pixels, or None
    when the mask has nothing it applies to. The parameters are the detector's own (drawn per copy)."""
    import cv2
    from scipy import ndimage

    h, w = label.shape
    fg = valid & np.isin(label, foreground)
    objects, n = ndimage.label(fg, EIGHT)
    sizes = np.bincount(objects.ravel())[1:] if n else np.zeros(0)
    big = np.flatnonzero(sizes >= max(min_area, 8)) + 1
    out = label.copy()
    if kind == "added":
        free = valid & ~ndimage.binary_dilation(fg, EIGHT, iterations=2)
        ys, xs = np.nonzero(free)
        if not len(ys):
            return None
        i = rng.integers(len(ys))
        radius = log_uniform(rng, 0.02, 0.25) * min(h, w)
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(4, 9))))
        lengths = radius * rng.uniform(0.5, 1.0, len(angles))
        points = np.stack([xs[i] + lengths * np.cos(angles), ys[i] + lengths * np.sin(angles)], 1)
        shape = np.zeros((h, w), np.uint8)
        cv2.fillPoly(shape, [np.round(points).astype(np.int32)], 1)
        spot = (shape > 0) & free
        if spot.sum() < min_area:
            return None
        out[spot] = int(rng.choice(foreground))
        return out
    if not len(big):
        return None
    chosen = objects == int(rng.choice(big))
    current = int(np.bincount(label[chosen]).argmax())
    if kind == "removed":
        out[chosen] = background
    elif kind == "swapped":
        others = [c for c in foreground if c != current]
        if not others:
            return None
        out[chosen] = int(rng.choice(others))
    elif kind in ("dilated", "eroded", "all_dilated", "all_eroded"):
        target = fg if kind.startswith("all_") else chosen
        side = np.sqrt(sizes.mean() if kind.startswith("all_") else chosen.sum())
        r = max(1, int(round(log_uniform(rng, 0.03, 1.0) * side)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        if kind.endswith("dilated"):
            grown = cv2.dilate(target.astype(np.uint8), kernel) > 0
            ring = grown & ~target & valid & ~fg
            if kind == "dilated":
                out[ring] = current
            else:  # every object grows into the background with its own class
                nearest = ndimage.distance_transform_edt(~fg, return_distances=False, return_indices=True)
                out[ring] = label[nearest[0][ring], nearest[1][ring]]
        else:
            shrunk = cv2.erode(target.astype(np.uint8), kernel) > 0
            out[target & ~shrunk] = background
    elif kind == "simplified":
        contours, _ = cv2.findContours(chosen.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(contours, key=cv2.contourArea)
        eps = log_uniform(rng, 0.02, 0.12) * cv2.arcLength(contour, True)
        polygon = np.zeros((h, w), np.uint8)
        cv2.fillPoly(polygon, [cv2.approxPolyDP(contour, eps, True)], 1)
        drawn = polygon > 0
        out[chosen & ~drawn] = background
        out[drawn & ~fg & valid] = current
    else:
        raise ValueError(f"unknown planted kind '{kind}'")
    if int((out != label).sum()) < min_area:
        return None
    return out


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A draw between ``low`` and ``high`` uniform on a log scale: the size of a real error is not known, so every
    scale from barely visible to gross is planted about as often."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


@dataclass
class Detector:
    """Collects candidate regions of each sample and of planted copies of its mask (:meth:`observe`, one sample at
    a time), then fits and scores (:meth:`score`). ``copies``: planted copies per sample (more for small datasets:
    see :func:`copies_for`); ``groups``: cross-fitting groups."""

    background: int = 0
    min_area: int = 4
    copies: int = 2
    groups: int = 5
    seed: int = 0
    kinds: tuple[str, ...] = PLANTED_KINDS
    sample_ids: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # per sample: its regions' features
    boxes: list[np.ndarray] = field(default_factory=list)
    # per sample, per planted copy: (kind, the regions that overlap the change, every region, the copy's EVIDENCE)
    planted: list[list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=list)
    marked: list[np.ndarray] = field(default_factory=list)  # per sample: regions a user marked as wrong (1) or not
    evidence: list[np.ndarray] = field(default_factory=list)  # per sample: its mask's EVIDENCE
    inter: np.ndarray | None = None
    union: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def observe(self, sample_id: str, probs: np.ndarray, label: np.ndarray, ignore_index: int | None,
                foreground: list[int], evidence: Mapping[str, float],
                evidence_of: Callable[[np.ndarray], Mapping[str, float]], needs_review: bool = False) -> Regions:
        """Describe one sample (``probs`` (C, h, w), ``label`` (h, w) at the same size) and ``copies`` planted copies
        of its mask. ``evidence``: the EVIDENCE of ``label``; ``evidence_of(mask)``: that of another mask (a
        planted copy) against these probabilities. Returns the sample's own regions."""
        probs = np.asarray(probs, np.float32)
        view = SampleView.of(probs, label, ignore_index, self.background)
        own = describe(view, self.background, self.min_area, evidence["pixel_quality"])
        self.evidence.append(np.array([evidence[k] for k in EVIDENCE]))
        classes = probs.shape[0]
        if self.inter is None:
            self.inter, self.union = np.zeros(classes), np.zeros(classes)
        self.inter += own.context.inter
        self.union += own.context.union
        self.sample_ids.append(sample_id)
        self.rows.append(own.features)
        self.boxes.append(own.boxes)
        marked = np.zeros(len(own.features), bool)
        if needs_review:  # a user says this mask is wrong: its disputed regions are errors
            marked[: int(own.d_ids.max())] = True
        self.marked.append(marked)
        copies = []
        kinds = [k for k in self.kinds if k != "swapped" or len(foreground) > 1]
        wide = [k for k in kinds if k.startswith("all_")]
        single = [k for k in kinds if not k.startswith("all_")]
        for copy in range(self.copies):
            # Half the copies get an error of the whole mask (an annotator's habit: a brush too wide), half one
            # object's error: a sample has either, and many single-object kinds must not drown the few wide ones.
            pool = wide if copy % 2 and wide else single or wide
            kind = pool[int(self.rng.integers(len(pool)))]
            corrupted = plant(view.label, view.valid, kind, self.rng, foreground, self.background, self.min_area)
            if corrupted is None:
                continue
            corrupted = np.where(view.valid, corrupted, label)
            changed = corrupted != label
            copy_view = SampleView.of(probs, corrupted, ignore_index, self.background, view.pred, view.p_max,
                                      view.entropy)
            copy_evidence = evidence_of(corrupted)
            regions = describe(copy_view, self.background, self.min_area, copy_evidence["pixel_quality"])
            hit = regions.overlap(changed) >= 0.25
            copies.append((kind, regions.features[hit], regions.features,
                           np.array([copy_evidence[k] for k in EVIDENCE])))
        self.planted.append(copies)
        return own

    def _with_class_iou(self, features: np.ndarray) -> np.ndarray:
        out = features.copy()
        if len(out):
            iou = np.where(self.union > 0, self.inter / np.maximum(self.union, 1), 1.0)
            out[:, -1] = iou[out[:, REGION_FEATURES.index("label_class")].astype(int)]
        return out

    def score(self) -> DetectorResult:
        """Fit the cross-fitted region and sample classifiers and score every observed sample."""
        n = len(self.sample_ids)
        group = self.rng.permutation(n) % max(2, min(self.groups, n))
        own = [self._with_class_iou(f) for f in self.rows]
        width = len(REGION_FEATURES)
        hits = [[self._with_class_iou(c[1]) for c in copies] for copies in self.planted]
        every = [[self._with_class_iou(c[2]) for c in copies] for copies in self.planted]
        region = crossfit(group, [f[~m] for f, m in zip(own, self.marked)],
                          [np.concatenate([*h, f[m]]) if h or m.any() else np.zeros((0, width))
                           for h, f, m in zip(hits, own, self.marked)],
                          [[f, *e] for f, e in zip(own, every)], REGION_FEATURES, REGION_MONOTONE, self.seed)
        region_prob = [scored[0] for scored in region]
        # The sample level: each sample (0) against its planted copies (1), on the region probabilities and the
        # sample's own statistics.
        own_x = [_sample_features(self.rows[i], region_prob[i], self.evidence[i])[None] for i in range(n)]
        copy_x = [np.stack([_sample_features(e, p, c[3]) for e, p, c in zip(every[i], region[i][1:], self.planted[i])])
                  if every[i] else np.zeros((0, len(SAMPLE_FEATURES)), np.float32) for i in range(n)]
        # One fit over every sample (not cross-fitted): a linear model of a few evidence features cannot learn one
        # sample by heart, and one model keeps the scores of all samples on one scale (five group models would
        # each shift it their own way, and the ranking mixes groups).
        sample = crossfit(None, own_x, copy_x, [[x] for x in own_x], SAMPLE_FEATURES, None, self.seed)
        sample_prob = np.array([scored[0][0] for scored in sample]) if n else np.zeros(0)
        planted_counts: dict[str, int] = {}
        for copies in self.planted:
            for kind, found, *_ in copies:
                planted_counts[kind] = planted_counts.get(kind, 0) + int(len(found) > 0)
        return DetectorResult(dict(zip(self.sample_ids, sample_prob)), dict(zip(self.sample_ids, region_prob)),
                              dict(zip(self.sample_ids, self.boxes)), dict(zip(self.sample_ids, own)), planted_counts)


def crossfit(group: np.ndarray | None, negatives: list[np.ndarray], positives: list[np.ndarray],
             to_score: list[list[np.ndarray]], names: tuple[str, ...], monotone: dict[str, int] | None, seed: int,
             rounds: int = 2) -> list[list[np.ndarray]]:
    """Per sample i, the error probabilities of each (k, F) array of ``to_score[i]``, from a classifier fitted on
    the other groups' rows only: ``negatives[i]`` (label 0: the untouched mask's rows, some of which are real
    errors) and ``positives[i]`` (label 1: planted). ``group``: (N,) the samples' cross-fitting groups; None fits one
    model on every sample's rows and scores every sample with it.

    The untouched masks hold the dataset's own errors labelled clean. After the first round, rows that score
    above the median planted row are left out of the negatives (the learning-with-noisy-labels step of pruning
    the likely mislabelled and refitting), so the dataset's own errors teach the second round less that errors
    are clean."""
    width = len(names)
    stack = lambda arrays: np.concatenate(arrays) if arrays else np.zeros((0, width), np.float32)  # noqa: E731
    keep = [np.ones(len(x), bool) for x in negatives]
    out: list[list[np.ndarray]] = [[np.zeros(len(a)) for a in arrays] for arrays in to_score]
    for round_ in range(rounds):
        neg_prob = [np.zeros(len(x)) for x in negatives]
        pos_prob = [np.zeros(len(x)) for x in positives]
        everyone = np.arange(len(negatives))
        splits = [(everyone, everyone)] if group is None else \
            [(np.flatnonzero(group != g), np.flatnonzero(group == g)) for g in np.unique(group)]
        for train, held in splits:
            x = stack([negatives[i][keep[i]] for i in train] + [positives[i] for i in train])
            y = np.concatenate([np.zeros(int(keep[i].sum()), int) for i in train]
                               + [np.ones(len(positives[i]), int) for i in train])
            if len(np.unique(y)) < 2:
                continue
            model = _classifier(seed, names, monotone).fit(x, y)
            # One prediction for every held-out array at once (a call costs milliseconds however few its rows).
            arrays = [a for i in held for a in (*to_score[i], negatives[i], positives[i])]
            probs = np.split(model.predict_proba(stack(arrays))[:, 1], np.cumsum([len(a) for a in arrays])[:-1])
            k = 0
            for i in held:
                m = len(to_score[i])
                out[i], neg_prob[i], pos_prob[i] = probs[k:k + m], probs[k + m], probs[k + m + 1]
                k += m + 2
        planted = np.concatenate(pos_prob) if pos_prob else np.zeros(0)
        if round_ + 1 < rounds and len(planted):
            cut = float(np.median(planted))
            keep = [p < cut for p in neg_prob]
    return out


def _sample_features(features: np.ndarray, probs: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """SAMPLE_FEATURES of one mask from its regions' features (n, len(REGION_FEATURES)) and probabilities (n,) and
    its EVIDENCE, each on a scale where evidence grows without bound (logs of small shares), so a linear model
    extrapolates to errors larger than any planted one."""
    def col(name: str, default: float) -> float:
        return float(features[0, REGION_FEATURES.index(name)]) if len(features) else default

    top = np.clip(np.sort(probs)[::-1], 1e-4, 1 - 1e-4)
    logit = np.log(top / (1 - top))
    quality, unsupported, unlabelled = (float(v) for v in evidence)
    return np.array([-np.log(quality + 1e-3), -np.log(col("sample_agreement", 1.0) + 1e-4),
                     np.log(col("sample_disputed_share", 0.0) + 1e-4), -np.log(1 - unsupported + 1e-3),
                     -np.log(1 - unlabelled + 1e-3),
                     logit[0] if len(top) else -10.0, np.log1p(float(top.sum())),
                     float(logit[:3].mean()) if len(top) else -10.0, float((top > 0.5).sum())], np.float32)


def _classifier(seed: int, names: tuple[str, ...], monotone: dict[str, int] | None):
    """Regions: gradient-boosted trees held to ``monotone``; samples (``monotone`` None): a logistic regression on
    standardised features, which keeps ranking errors beyond the planted ones (trees are flat out there)."""
    if monotone is None:
        return EvidenceLogistic()
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=60, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
                                          l2_regularization=1.0, early_stopping=False, random_state=seed,
                                          monotonic_cst=[monotone.get(n, 0) for n in names])


class EvidenceLogistic:
    """A logistic regression on standardised evidence features whose weights are all >= 0 (L2-penalised, fitted by
    L-BFGS-B with bounds; scikit-learn's LogisticRegression takes no bounds), so a sample with more evidence of
    every kind never scores lower. Where two features carry the same evidence, the bound keeps both at a weight
    of zero or more instead of one cancelling the other."""

    def __init__(self, penalty: float = 1.0):
        self.penalty = penalty

    def fit(self, x: np.ndarray, y: np.ndarray) -> EvidenceLogistic:
        from scipy.optimize import minimize
        from scipy.special import expit

        self.mean, self.scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = (x - self.mean) / self.scale
        sign = 2.0 * np.asarray(y, float) - 1.0
        d = z.shape[1]

        def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = params[:d], params[d]
            margin = sign * (z @ w + b)
            value = np.logaddexp(0.0, -margin).sum() + 0.5 * self.penalty * w @ w
            g = -sign * expit(-margin)  # d loss / d score, per row
            return float(value), np.append(z.T @ g + self.penalty * w, g.sum())

        start = np.zeros(d + 1)
        bounds = [(0.0, None)] * d + [(None, None)]
        self.params = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x
        return self

    @property
    def weights(self) -> np.ndarray:
        """(F,) the fitted weights of the standardised features, all >= 0."""
        return self.params[:-1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        p = expit(((x - self.mean) / self.scale) @ self.params[:-1] + self.params[-1])
        return np.stack([1.0 - p, p], axis=1)


@dataclass
class DetectorResult:
    """Per sample id: ``sample`` the probability its mask is wrong; ``regions`` each candidate region's probability,
    ``boxes`` their (n, 4) boxes at the out-of-fold resolution and ``features`` their features;
    ``planted``: per planted kind, the copies whose error left a candidate region to learn from."""

    sample: dict[str, float]
    regions: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    planted: dict[str, int]


def copies_for(samples: int, least_rows: int = 600, most: int = 8) -> int:
    """Planted copies per sample: enough that ``samples`` give about ``least_rows`` positives, 2 to ``most``."""
    return int(min(most, max(2, -(-least_rows // max(samples, 1)))))
