"""Boundary IoU under its three void conventions (``evaluation.boundary_ignore=exclude|raw|hide``) on real data.

Kvasir-SEG and the ISBI membranes have no void: the three conventions must give the same figures there. Kvasir-SEG
with its black image borders marked void (pixels darker than ``--dark`` on every channel, in regions touching the
image border, grown by 2 px) is a void-bearing case: there they differ, and by how much is the figure.

The models are eval_resolution.py's (each dataset's preset with cut epochs), trained in the same ``--workdir``
unless already there. Scores are at original resolution on the held-out split.

    python benchmarks/boundary_void.py [--workdir DIR] [--out results.json]

Run it on an idle machine (it trains unless the checkpoints exist).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from eval_resolution import PRESETS, prepare
from scipy import ndimage
from scratch import REPO, enter_scratch_project

CONVENTIONS = ("exclude", "raw", "hide")
HEADLINES = ("mIoU", "mBoundaryIoU", "mBoundaryIoU_image")


def border_void(image: np.ndarray, dark: int) -> np.ndarray:
    """(H, W) bool: the dark regions that touch the image border, grown by 2 px."""
    labels, _ = ndimage.label(image.max(axis=2) < dark)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return ndimage.binary_dilation(np.isin(labels, edge[edge > 0]), iterations=2)


def with_void(dataset, split: str, root: Path, dark: int):
    """A copy of ``split`` of ``dataset`` at ``root`` whose masks are void (ignore_index) on the black borders."""
    from masklab.data.images import read_image, read_mask
    from masklab.data.manifest import load_dataset
    from masklab.data.writer import DatasetWriter

    if not root.is_dir():
        void = dataset.class_table.ignore_index
        with DatasetWriter(root, dataset.class_table) as writer:
            for s in dataset.labeled(split):
                image = read_image(dataset.root / s.image)
                mask = read_mask(dataset.root / s.mask).copy()
                mask[border_void(image, dark)] = void
                writer.add(s.id, image, mask, split)
            writer.commit()
    return load_dataset(root)


def void_share(dataset, split: str) -> float:
    """The share of ``split``'s mask pixels that are void."""
    from masklab.data.images import read_mask

    masks = [read_mask(dataset.root / s.mask) for s in dataset.labeled(split)]
    return sum(int((m == dataset.class_table.ignore_index).sum()) for m in masks) / sum(m.size for m in masks)


def scores(dataset, ckpt: Path, split: str, name: str) -> dict[str, dict[str, float]]:
    from masklab.workflows import evaluate_checkpoint

    out = {}
    for convention in CONVENTIONS:
        result = evaluate_checkpoint(ckpt, dataset, split, Path("eval") / name / convention,
                                     options={"device": "cpu", "boundary_ignore": convention})
        out[convention] = {k: result.headline(k) for k in HEADLINES}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-eval-resolution")
    p.add_argument("--dark", type=int, default=20, help="a pixel is black below this on every channel (0-255)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    enter_scratch_project(a.workdir)
    results = {}
    for name in ("membrane", "kvasir_seg"):
        preset, epochs, split = PRESETS[name]
        dataset, ckpt = prepare(name, epochs, retrain=False)
        cases = {name: dataset}
        if name == "kvasir_seg":
            cases[f"{name}+black-border-void"] = with_void(dataset, split, Path("data") / "kvasir_seg_void", a.dark)
        for case, data in cases.items():
            results[case] = {"preset": preset, "epochs": epochs, "split": split,
                             "void_share": void_share(data, split),
                             **scores(data, ckpt, split, case)}
            for convention in CONVENTIONS:
                print(f"{case:<30} {convention:<8} " + " ".join(f"{h} {results[case][convention][h]:.4f}"
                                                            for h in HEADLINES), flush=True)
            if a.out:
                a.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
