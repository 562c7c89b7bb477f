"""How uncertain a model is about each pixel of an image, and one number per image from those pixels.

Pixel measures of class probabilities p (C, H, W), each scaled to 0..1 (1 = most uncertain):
- entropy: -sum_c p_c log p_c / log C;
- margin: 1 - (p_first - p_second), the two most probable classes;
- least_confidence: (1 - max_c p_c) * C / (C - 1);
- bald (MC dropout, T samples (T, C, H, W)): the mutual information H[mean_t p_t] - mean_t H[p_t], divided by
  log C: what the samples disagree about, not what each is unsure of (Houlsby et al. 2011, Gal et al. 2017).
The formulas are the standard ones (baal's heuristics compute the same; baal itself is not a dependency: it
installs Jupyter). Per image:
- mean: the mean over pixels (large, uniformly unsure images first);
- top: the mean of the ``top_fraction`` most uncertain pixels (an image with one unsure object counts as
  much as one unsure everywhere);
- class_balanced: a weighted mean, each pixel weighted by 1 / (share of its predicted class among the labelled
  pixels), so uncertainty on a rare class counts as much as on a frequent one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from masklab.errors import UserError

PIXEL_MEASURES = ("entropy", "margin", "least_confidence", "bald")
AGGREGATIONS = ("mean", "top", "class_balanced")
EPS = 1e-12


def _entropy(p: np.ndarray) -> np.ndarray:
    """(…, H, W) entropy in nats of (…, C, H, W) probabilities over axis -3."""
    return -(p * np.log(np.clip(p, EPS, 1.0))).sum(axis=-3)


def pixel_uncertainty(probs: np.ndarray, measure: str) -> np.ndarray:
    """(H, W) float32 in 0..1 from (C, H, W) probabilities (or (T, C, H, W) MC samples for "bald"; the other
    measures average the samples first)."""
    if measure not in PIXEL_MEASURES:
        raise UserError(f"measure={measure}: expected one of {list(PIXEL_MEASURES)}")
    p = np.asarray(probs, np.float64)
    if measure == "bald":
        if p.ndim != 4:
            raise ValueError(f"bald needs (T, C, H, W) samples; got shape {p.shape}")
        mean = p.mean(axis=0)
        info = _entropy(mean) - _entropy(p).mean(axis=0)
        return (np.clip(info, 0.0, None) / np.log(max(p.shape[1], 2))).astype(np.float32)
    if p.ndim == 4:
        p = p.mean(axis=0)
    classes = p.shape[0]
    if classes < 2:
        return np.zeros(p.shape[1:], np.float32)
    if measure == "entropy":
        out = _entropy(p) / np.log(classes)
    elif measure == "margin":
        top2 = np.sort(p, axis=0)[-2:]
        out = 1.0 - (top2[1] - top2[0])
    else:
        out = (1.0 - p.max(axis=0)) * classes / (classes - 1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def aggregate(uncertainty: np.ndarray, how: str = "mean", top_fraction: float = 0.1,
              predicted: np.ndarray | None = None,
              class_weights: Sequence[float] | np.ndarray | None = None) -> float:
    """One image's score from its (H, W) pixel uncertainty. ``predicted``: (H, W) class ids and
    ``class_weights`` (one per class) for "class_balanced"."""
    u = np.asarray(uncertainty, np.float64).reshape(-1)
    if u.size == 0:
        return 0.0
    if how == "mean":
        return float(u.mean())
    if how == "top":
        if not 0 < top_fraction <= 1:
            raise UserError(f"top_fraction={top_fraction}: expected a share of pixels in (0, 1]")
        k = max(1, int(round(top_fraction * u.size)))
        return float(np.partition(u, u.size - k)[u.size - k:].mean())
    if how == "class_balanced":
        if predicted is None or class_weights is None:
            raise ValueError("class_balanced needs the predicted classes and the class weights")
        w = np.asarray(class_weights, np.float64)[np.asarray(predicted).reshape(-1)]
        return float((w * u).sum() / max(w.sum(), EPS))
    raise UserError(f"aggregate={how}: expected one of {list(AGGREGATIONS)}")


def class_weights(pixel_counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """(C,) weights 1 / share of each class among labelled pixels, normalised to mean 1 over the classes seen;
    a class never labelled gets the largest weight seen (it is as rare as anything we know of)."""
    counts = np.asarray(pixel_counts, np.float64)
    seen = counts > 0
    if not seen.any():
        return np.ones_like(counts)
    share = counts / counts.sum()
    w = np.where(seen, 1.0 / np.where(seen, share, 1.0), 0.0)
    w[~seen] = w[seen].max()
    return w / w[seen].mean()


@dataclass(frozen=True)
class PixelScoring:
    """How a strategy turns one pool image's class probabilities into its score: the pixel ``measure`` (one of
    PIXEL_MEASURES; "bald" reads ``mc_samples`` MC-dropout passes), then ``aggregate`` over the pixels
    (``top_fraction`` for "top"). ``seed``: torch's seed for the dropout passes and the draw of labelled masks
    that class weights are counted on."""

    measure: str
    aggregate: str = "mean"
    top_fraction: float = 0.1
    mc_samples: int = 0
    seed: int = 0

    @property
    def mc(self) -> bool:
        """Whether the measure reads MC-dropout samples (T, C, H, W) rather than one pass (C, H, W)."""
        return self.measure == "bald"

    @property
    def class_balanced(self) -> bool:
        """Whether the score needs class weights (see :func:`class_weights`)."""
        return self.aggregate == "class_balanced"

    def score(self, probs: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """(the image's score, its (H, W) float32 pixel uncertainty) from (C, H, W) probabilities, or (T, C, H, W)
        MC samples when :attr:`mc`; ``weights``: per class, for aggregate=class_balanced."""
        u = pixel_uncertainty(probs, self.measure)
        predicted = (probs.mean(axis=0) if self.mc else probs).argmax(axis=0) if weights is not None else None
        return aggregate(u, self.aggregate, self.top_fraction, predicted, weights), u
