"""Synthetic multi-class shapes dataset: textured shapes on noisy backgrounds, with occlusion.

Each class is a shape kind with its own texture, so a model must use both outline and
texture; colours vary per object so colour alone does not separate the classes. Every
sample is generated from its own seed (``seed`` and the sample index), so sample *i* is
the same whatever ``count`` is.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from masklab.data.classes import ClassInfo, ClassTable, default_color
from masklab.data.manifest import Dataset
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError

SHAPES = ("circle", "rectangle", "triangle", "ellipse", "star", "cross")


def synth_class_table(num_shapes: int) -> ClassTable:
    """Background (id 0) plus ``num_shapes`` shape classes, ids 1..num_shapes."""
    if not 1 <= num_shapes <= len(SHAPES):
        raise UserError(f"num_shapes={num_shapes}; expected 1..{len(SHAPES)} (shapes: {', '.join(SHAPES)})")
    classes = [ClassInfo(0, "background", default_color(0))]
    classes += [ClassInfo(i + 1, SHAPES[i], default_color(i + 1)) for i in range(num_shapes)]
    return ClassTable(tuple(classes))


def _shape_mask(kind: str, size: int, cx: int, cy: int, r: int, angle: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) bool mask of one shape centred at (cx, cy) with radius r pixels."""
    canvas = np.zeros((size, size), np.uint8)
    if kind == "circle":
        cv2.circle(canvas, (cx, cy), r, 1, -1)
    elif kind == "ellipse":
        cv2.ellipse(canvas, (cx, cy), (r, max(2, int(r * rng.uniform(0.35, 0.6)))), np.degrees(angle), 0, 360, 1, -1)
    else:
        if kind == "rectangle":
            t = np.array([np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4]) + angle
            radii = np.full(4, r)
        elif kind == "triangle":
            t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + angle
            radii = np.full(3, r)
        elif kind == "star":
            t = np.arange(10) * np.pi / 5 + angle
            radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        elif kind == "cross":
            w = 0.33
            pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
                   (-w, -w)]
            pts_arr = np.array(pts) * r
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            poly = (pts_arr @ rot.T + [cx, cy]).round().astype(np.int32)
            cv2.fillPoly(canvas, [poly], 1)
            return canvas.astype(bool)
        else:  # pragma: no cover - guarded by synth_class_table
            raise ValueError(kind)
        poly = np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1).round().astype(np.int32)
        cv2.fillPoly(canvas, [poly], 1)
    return canvas.astype(bool)


def _texture(class_id: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float texture in [-1, 1] that is characteristic of a class."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(4, 7)
    kind = class_id % 4
    if kind == 1:
        return np.sin(xx * 2 * np.pi / period)  # vertical stripes
    if kind == 2:
        return np.sign(np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period))  # checker
    if kind == 3:
        return np.sin((xx + yy) * 2 * np.pi / period)  # diagonal stripes
    return np.zeros((size, size), np.float32)  # flat


def synth_sample(
    index: int, seed: int, num_shapes: int, size: int, max_objects: int = 6, noise: float = 12.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """Generate sample ``index``: image (H, W, 3) uint8, mask (H, W) uint8 class ids,
    instances (H, W) uint16 instance ids (0 = none) and {instance id: class id}."""
    rng = np.random.default_rng([seed, index])
    # Smooth random background: a colour gradient plus low-frequency blobs.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, size=3)
    grad = rng.uniform(-40, 40, size=(2, 3))
    image = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    low = cv2.resize(rng.normal(0, 18, size=(4, 4, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = image + low
    mask = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint16)
    inst_classes: dict[int, int] = {}
    n_objects = int(rng.integers(1, max_objects + 1))
    for inst_id in range(1, n_objects + 1):
        cls = int(rng.integers(1, num_shapes + 1))
        r = int(rng.uniform(0.07, 0.22) * size)
        cx, cy = (int(v) for v in rng.integers(0, size, size=2))
        shape = _shape_mask(SHAPES[cls - 1], size, cx, cy, max(r, 3), float(rng.uniform(0, np.pi)), rng)
        if not shape.any():
            continue
        colour = rng.uniform(30, 225, size=3)
        tex = _texture(cls, size, rng)[..., None] * rng.uniform(25, 45)
        image[shape] = (colour + tex)[shape]
        # Later objects occlude earlier ones in the mask, instance map and image alike.
        mask[shape] = cls
        instances[shape] = inst_id
        inst_classes[inst_id] = cls
    visible = set(np.unique(instances).tolist()) - {0}
    inst_classes = {k: v for k, v in inst_classes.items() if k in visible}
    image = image + rng.normal(0, noise, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask, instances, inst_classes


def synthesize(
    out_root: str | Path,
    count: int = 200,
    size: int = 96,
    num_shapes: int = 3,
    seed: int = 0,
    fractions: dict[str, float] | None = None,
    max_objects: int = 6,
    noise: float = 12.0,
    overwrite: bool = False,
) -> Dataset:
    """Write a synthetic dataset of ``count`` samples of ``size`` x ``size`` px to ``out_root``."""
    fractions = dict(fractions or {"train": 0.8, "val": 0.2, "test": 0.0})
    if count < 2 or size < 16:
        raise UserError(f"count={count}, size={size}; expected count >= 2 and size >= 16")
    bounds = np.cumsum([fractions.get(s, 0.0) for s in ("train", "val", "test")])
    if not np.isclose(bounds[-1], 1.0):
        raise UserError(f"split fractions {fractions} sum to {bounds[-1]:.3f}; expected 1")
    table = synth_class_table(num_shapes)
    with DatasetWriter(out_root, table, overwrite=overwrite) as writer:
        for i in range(count):
            image, mask, inst, inst_classes = synth_sample(i, seed, num_shapes, size, max_objects, noise)
            pos = (i + 0.5) / count
            split = ("train", "val", "test")[int(np.searchsorted(bounds, pos))]
            writer.add(f"synth_{i:05d}", image, mask, split, instances=inst, instance_classes=inst_classes)
        return writer.commit()
