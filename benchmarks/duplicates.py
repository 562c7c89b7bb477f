"""Near-duplicate search on real images with planted copies: recall per kind of copy and how many other pairs
each threshold adds, for pHash alone, the weight-free thumbnail embedding and (optional) a trained encoder.

    python benchmarks/duplicates.py [--datasets kvasir_seg dsb2018] [--copies 40] [--model kvasir_seg=<checkpoint>]

Each dataset's originals are split train/test 80/20; for ``--copies`` originals per kind a copy goes into the
other split (a planted leak): resized to half size, re-encoded as JPEG quality 70, cropped to 95% and to 90%
of each side at a random offset. Reads ../shared (MASKLAB_SHARED); writes under --workdir.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("resized", "jpeg70", "crop95", "crop90")
SOURCES = {"kvasir_seg": ("kvasir_seg/images", "*.jpg"),
           "dsb2018": ("dsb2018_nuclei_256/stage1_train", "*/images/*.png")}
THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3)


def copy_of(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    if kind == "resized":
        return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BILINEAR)
    if kind == "jpeg70":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=70)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    share = 0.95 if kind == "crop95" else 0.90
    w, h = int(image.width * share), int(image.height * share)
    x, y = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
    return image.crop((x, y, x + w, y + h))


def build(name: str, folder: Path, copies: int, seed: int) -> tuple[Path, dict[tuple[str, str], str]]:
    """A dataset of the source's images plus planted copies; {(original id, copy id): kind}."""
    from masklab.data.classes import ClassInfo, ClassTable
    from masklab.data.writer import DatasetWriter

    sub, pattern = SOURCES[name]
    files = sorted((Path(os.environ.get("MASKLAB_SHARED", "../shared")) / "datasets" / sub).glob(pattern))
    rng = np.random.default_rng(seed)
    root = folder / name
    planted: dict[tuple[str, str], str] = {}
    table = ClassTable((ClassInfo(0, "background", (0, 0, 0)),))
    picked = rng.choice(len(files), size=min(len(files), copies * len(KINDS)), replace=False)
    with DatasetWriter(root, table, overwrite=True) as writer:
        splits = {}
        for k, path in enumerate(files):
            with Image.open(path) as image:
                size = image.size
            splits[k] = "test" if rng.random() < 0.2 else "train"
            writer.add(f"{name}-{k:04d}", path, np.zeros(size[::-1], np.uint8), splits[k])
        for j, k in enumerate(picked):
            kind = KINDS[j % len(KINDS)]
            copy = np.asarray(copy_of(Image.open(files[k]).convert("RGB"), kind, rng))
            copy_id = f"{name}-{k:04d}-{kind}"
            writer.add(copy_id, copy, np.zeros(copy.shape[:2], np.uint8), "train" if splits[k] == "test" else "test")
            planted[(f"{name}-{k:04d}", copy_id)] = kind
        writer.commit()
    return root, planted


def score(pairs, planted: dict[tuple[str, str], str], keep) -> dict:
    """Recall per kind and the number of other pairs among the ``keep`` (boolean Series) rows of ``pairs``."""
    kept = pairs[keep]
    found = {tuple(sorted(p)) for p in zip(kept["id_a"], kept["id_b"])}
    recall = {kind: float(np.mean([tuple(sorted(p)) in found for p, k in planted.items() if k == kind]))
              for kind in KINDS}
    planted_keys = {tuple(sorted(p)) for p in planted}
    return {"recall": recall, "other_pairs": len(found - planted_keys)}


def run(name: str, a: argparse.Namespace) -> dict:
    from masklab.data.duplicates import DuplicateRules
    from masklab.data.manifest import load_dataset
    from masklab.workflows import find_duplicates, make_embedder

    root, planted = build(name, Path(a.workdir) / "data", a.copies, a.seed)
    dataset = load_dataset(root)
    out = {"samples": len(dataset.samples), "planted": len(planted)}
    models = dict(item.split("=", 1) for item in a.model)
    embedders = [("thumbnail", make_embedder())] + ([("model", make_embedder(model=models[name]))]
                                                    if name in models else [])
    loose = DuplicateRules(max_hash_bits=16, max_distance=max(THRESHOLDS), neighbours=10)
    for label, embedder in embedders:
        start = time.perf_counter()
        found = find_duplicates(dataset, embedder, loose, cache_dir=Path(a.workdir) / "cache")
        seconds = time.perf_counter() - start
        pairs = found.pairs
        # What find_duplicates reports at max_distance=t: pHash within its default bits, or embeddings within t.
        by_hash = pairs["hash_bits"] <= DuplicateRules().max_hash_bits
        out[label] = {"seconds": round(seconds, 1),
                      "distance": {str(t): score(pairs, planted, by_hash | (pairs["distance"] <= t))
                                   for t in THRESHOLDS}}
        out.setdefault("phash", {str(b): score(pairs, planted, pairs["hash_bits"] <= b) for b in (2, 4, 6, 8, 12)})
    for label in ("phash", *(e[0] for e in embedders)):
        rows = out[label] if label == "phash" else out[label]["distance"]
        title = label if label == "phash" else f"{label} (or pHash <= 4 bits)"
        print(f"{name} {title}: threshold  " + "  ".join(f"{k:>7}" for k in KINDS) + "  other pairs")
        for t, r in rows.items():
            print(f"{'':>{len(name) + len(title) + 2}} {t:>9}  " + "  ".join(f"{r['recall'][k]:7.2f}" for k in KINDS)
                  + f"  {r['other_pairs']:>11}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--copies", type=int, default=40, help="originals copied per kind of copy")
    parser.add_argument("--model", nargs="*", default=[], metavar="DATASET=CHECKPOINT",
                        help="a trained masklab checkpoint per dataset, whose encoder embeds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="experiments/bench-duplicates")
    a = parser.parse_args()
    results = {name: run(name, a) for name in a.datasets}
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    (Path(a.workdir) / "duplicates.json").write_text(json.dumps(results, indent=1))
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
