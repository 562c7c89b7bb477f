"""Label-error ranking on planted noise: masklab's typed issues against cleanlab's softmin pixel scores, on the
same out-of-fold predictions; then fix the top suspects and measure how much of the damage that undoes.

    python benchmarks/label_errors.py [--datasets dsb2018_semantic kvasir_seg] [--loop NAME ...] [--size 96]
                                      [--folds 3] [--epochs 8] [--noise 0.1] [--seed 0] [--workdir DIR]
                                      [--reuse-cv] [--out FILE.json]

Needs the benchmark extra (``pip install -e .[bench]``: cleanlab is AGPL-3.0, so never a run-time
dependency) and ../shared/datasets. Per dataset:

1. import it with masklab's importer (its own split: train / val / test); ``dsb2018_semantic`` is DSB 2018's
   nuclei as one class against background (membrane's 30 images give 2-3 planted errors: too few to rank);
   ``synthetic`` (masklab's shapes, not a real dataset) is the only one with two or more foreground classes,
   so the only one where class swaps are planted;
2. copy it and plant noise in ``--noise`` of the train + val samples (seeded): ``erased_object`` (one
   connected object set to background), ``spurious_blob`` (an ellipse of a foreground class drawn on
   background), ``dilated`` / ``eroded`` (the foreground grown or shrunk by ~4% of the image side),
   ``shifted`` (the mask translated by ~6% of the side), ``class_swap`` (one object relabelled as
   another foreground class; only where a dataset has two or more). The planted ids and types go to
   ``planted.json``; ``data record-edits`` records the new masks;
3. ``cv`` on the noisy copy (``--folds``, the dataset's preset at ``--size`` px for ``--epochs``);
4. rank with ``find_label_errors`` (masklab: ``score=pixels``, the default, ``score=objects`` and
   ``score=learned``) and ``cleanlab.segmentation.rank.get_label_quality_scores`` (softmin) on the same
   out-of-fold probabilities and masks (at the model's resolution); report AUPRC, precision@k and recall@k
   (k = the number planted), overall and per noise type (a type's positives against the clean samples), the
   learned ranking's time against the pixel ranking's (same files, same process), and region-level precision
   and recall: a planted region (a connected region of changed pixels) is found when a reported region's box
   overlaps its box with IoU >= 0.25 (Rottmann & Reese's component protocol, with boxes: the issues table keeps
   boxes, not masks); reported regions are every typed issue (``objects``) or the issues whose learned
   probability is at least 0.5 (``learned``);
5. close the loop: restore the ``--loop-score`` ranking's top-k suspects from the clean copy (what a person
   does after review), train ``--loop-seeds`` times each on the noisy, the fixed and the clean data with the
   same settings and report test mIoU (mean and standard deviation over the training seeds) and the share of
   the noisy-to-clean gap the fix recovered. A dataset without a test split (membrane) gets noise and
   cross-validation on train only and is scored on its (clean) val split.

What the learned detector plants while it learns (masklab.curation.detector.PLANTED_KINDS) differs from the noise
here: its own seed (``--seed`` + 1000), per-object radii drawn relative to each object rather than 4% of the image
side, polygons rather than ellipses for added objects, and no shifted masks at all: ``shifted`` is the kind held
out of its training, reported on its own row. ``--summary seed1.json seed2.json ...`` prints the tables over
seeds (means, and the learned score against cleanlab's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scratch import REPO, enter_scratch_project

PRESETS = {"membrane": "unet-resnet18_membrane-256", "kvasir_seg": "unet-resnet18_kvasir_seg-160",
           "dsb2018_semantic": "unet-resnet18_kvasir_seg-160",  # DSB: the same UNet recipe on nuclei vs background
           "synthetic": "unet-resnet18_synthetic-96"}  # not real: the only one with 2+ foreground classes (class swap)
TYPES = ("erased_object", "spurious_blob", "dilated", "eroded", "shifted", "class_swap")


def plant(mask: np.ndarray, kind: str, rng: np.random.Generator, foreground: list[int]) -> np.ndarray | None:
    """A corrupted copy of ``mask`` (H, W) class ids, or None when ``kind`` cannot apply to it."""
    import cv2
    from scipy import ndimage

    h, w = mask.shape
    side = min(h, w)
    fg = np.isin(mask, foreground)
    out = mask.copy()
    if kind in ("erased_object", "class_swap"):
        labels, n = ndimage.label(fg)
        if n == 0:
            return None
        sizes = np.bincount(labels.ravel())[1:]
        big = np.flatnonzero(sizes >= max(16, 0.001 * h * w)) + 1
        if not len(big):
            return None
        chosen = labels == rng.choice(big)
        if kind == "erased_object":
            out[chosen] = 0
        else:
            current = int(np.bincount(mask[chosen]).argmax())
            others = [c for c in foreground if c != current]
            if not others:
                return None
            out[chosen] = rng.choice(others)
        return out
    if kind == "spurious_blob":
        free = ~ndimage.binary_dilation(fg, iterations=max(2, side // 50))
        ys, xs = np.nonzero(free)
        if not len(ys):
            return None
        i = rng.integers(len(ys))
        axes = (int(rng.uniform(0.04, 0.1) * side), int(rng.uniform(0.04, 0.1) * side))
        blob = np.zeros((h, w), np.uint8)
        cv2.ellipse(blob, (int(xs[i]), int(ys[i])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        out[(blob > 0) & free] = int(rng.choice(foreground))
        return out
    if not fg.any():
        return None
    if kind in ("dilated", "eroded"):
        r = max(2, round(0.04 * side))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        grown = (cv2.dilate if kind == "dilated" else cv2.erode)(mask, kernel)
        changed = grown != mask
        if not changed.any():
            return None
        out[changed] = grown[changed]
        return out
    if kind == "shifted":
        d = max(3, round(0.06 * side))
        dy, dx = (int(v) for v in rng.choice([-d, d], size=2))
        return np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    raise ValueError(kind)


def plant_noise(root: Path, share: float, seed: int, splits: list[str]) -> dict[str, str]:
    """Corrupt ``share`` of the masks of ``splits`` of the dataset at ``root`` in place; {id: type}."""
    from PIL import Image

    from masklab.data.edits import record_mask_edits
    from masklab.data.images import read_mask
    from masklab.data.manifest import load_dataset

    dataset = load_dataset(root)
    foreground = [c for c in dataset.class_table.ids if c != 0]
    kinds = [k for k in TYPES if k != "class_swap" or len(foreground) > 1]
    rng = np.random.default_rng(seed)
    covered = sorted((s for s in dataset.samples if s.split in splits and s.labeled), key=lambda s: s.id)
    chosen = rng.permutation(len(covered))
    wanted = round(share * len(covered))
    planted: dict[str, str] = {}
    for index in chosen:
        if len(planted) == wanted:
            break
        sample = covered[index]
        kind = kinds[len(planted) % len(kinds)]
        corrupted = plant(read_mask(root / sample.mask), kind, rng, foreground)
        if corrupted is not None:
            Image.fromarray(corrupted.astype(np.uint8)).save(root / sample.mask)
            planted[sample.id] = kind
    record_mask_edits(root)
    return planted


def ranking_metrics(scores: dict[str, float], planted: dict[str, str]) -> dict[str, dict[str, float]]:
    """AUPRC, precision@k, recall@k (k = positives) overall and per type; higher score = more suspicious."""
    from sklearn.metrics import average_precision_score

    ids = sorted(scores)
    out = {}
    for name in ["overall", *sorted(set(planted.values()))]:
        pool = [i for i in ids if i not in planted or name == "overall" or planted[i] == name]
        y = np.array([i in planted for i in pool])
        s = np.array([scores[i] for i in pool])
        k = int(y.sum())
        top = np.argsort(-s, kind="stable")[:k]
        hits = int(y[top].sum())
        out[name] = {"positives": k, "auprc": float(average_precision_score(y, s)), "precision_at_k": hits / k,
                     "recall_at_k": hits / k}
    return out


def cleanlab_scores(oof_folder: Path, dataset) -> dict[str, float]:
    """1 - cleanlab's softmin label quality per sample (higher = more suspicious) on the same probabilities."""
    from cleanlab.segmentation.rank import get_label_quality_scores

    from masklab.curation.out_of_fold import OutOfFold
    from masklab.tasks import get_task
    from masklab.workflows.label_errors import label_at

    oof = OutOfFold(oof_folder)
    by_id = {s.id: s for s in dataset.samples}
    semantic = get_task("semantic")
    probs, labels = [], []
    for item in oof:
        probs.append(item.array.astype(np.float32))
        labels.append(label_at(semantic, dataset.root, by_id[item.id], item.array.shape[-2:]))
    quality, _ = get_label_quality_scores(np.stack(labels), np.stack(probs), method="softmin", verbose=False)
    return {i: 1.0 - float(q) for i, q in zip(oof.ids, quality)}


def train_and_test(overrides: list[str], folder: Path, split: str) -> float:
    """mIoU on ``split`` (never corrupted) of one training with ``overrides``."""
    from masklab.config import compose
    from masklab.workflows import fit

    fitted = fit(compose("train", [*overrides, "evaluate_after=true"]), folder)
    return float(fitted.evaluations[split].metrics[f"eval/{split}/mIoU"])


def import_source(name: str) -> None:
    """Import ``name`` from ../shared into ``data/``. ``dsb2018_semantic``: DSB 2018's nuclei as one semantic
    class (the union of each image's per-nucleus masks), written as an images/ + masks/ folder first."""
    from masklab.config import compose
    from masklab.workflows import import_dataset

    if name == "synthetic":
        from masklab.config import to_plain
        from masklab.data.synth import synthesize

        synthesize(Path("data") / name, **to_plain(compose("train", [f"experiment={PRESETS[name]}"]).data.synth))
        return
    if name != "dsb2018_semantic":
        import_dataset(compose("data_import", [f"source={name}", "write_conf=false"]))
        return
    from PIL import Image

    shared = Path(os.environ["MASKLAB_SHARED"]) / "datasets" / "dsb2018_nuclei_256" / "stage1_train"
    folder = Path("sources") / name
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for item in sorted(p for p in shared.iterdir() if p.is_dir()):
        image = Image.open(next((item / "images").glob("*.png"))).convert("RGB")
        union = np.zeros(image.size[::-1], bool)
        for mask in (item / "masks").glob("*.png"):
            union |= np.asarray(Image.open(mask).convert("L")) > 0
        image.save(folder / "images" / f"{item.name}.png")
        Image.fromarray(union.astype(np.uint8)).save(folder / "masks" / f"{item.name}.png")
    import_dataset(compose("data_import", ["format=folder", f"name={name}", f"images={folder / 'images'}",
                                           f"masks={folder / 'masks'}", "write_conf=false",
                                           "classes=[{id: 0, name: background}, {id: 1, name: nucleus}]"]))


def run_dataset(name: str, a: argparse.Namespace) -> dict:
    from masklab.config import compose
    from masklab.data.manifest import load_dataset, read_manifest
    from masklab.workflows import cross_validate, find_label_errors

    started = time.perf_counter()
    data, runs = Path("data"), Path("runs") / name
    if not (data / name).is_dir():
        import_source(name)
    noisy, fixed = f"{name}_noisy", f"{name}_fixed"
    # Noise and cross-validation on train + val; the loop's trainings are scored on test. A dataset without
    # a test split (membrane) keeps val clean for that instead.
    has_test = bool(load_dataset(data / name).labeled("test"))
    covered, held = (["train", "val"], "test") if has_test else (["train"], "val")
    base = [f"experiment={PRESETS[name]}", f"data.image_size={per_dataset(a.size, name)}",
            f"trainer.max_epochs={per_dataset(a.epochs, name)}", f"experiment_name=bench-label-errors-{name}",
            "trainer.enable_progress_bar=false", f"seed={a.seed}"]
    reuse = a.reuse_cv and (runs / "planted.json").is_file() and (runs / "cv" / "out_of_fold").is_dir()
    if reuse:  # the planted noise and the cross-validation of an earlier run: rank (and close the loop) again
        planted = json.loads((runs / "planted.json").read_text())
        cv_per_sample = pd.read_parquet(runs / "cv" / "cv_per_sample.parquet")
        folds = pd.read_csv(runs / "cv" / "cv_folds.csv")
        out_of_fold = runs / "cv" / "out_of_fold"
        cv_miou = [float(folds["mIoU"].mean()), float(folds["mIoU"].std())]
    else:
        for copy in (noisy, fixed):
            shutil.rmtree(data / copy, ignore_errors=True)
        shutil.copytree(data / name, data / noisy)
        planted = plant_noise(data / noisy, per_dataset(a.noise, name, float), a.seed, covered)
        runs.mkdir(parents=True, exist_ok=True)
        (runs / "planted.json").write_text(json.dumps(planted, indent=1, sort_keys=True))
        cv = cross_validate(compose("cv", [*base, f"data.name={noisy}", f"cv.folds={a.folds}",
                                             f"cv.splits=[{','.join(covered)}]"]), runs / "cv")
        cv_per_sample, out_of_fold, cv_miou = cv.per_sample, cv.out_of_fold, [cv.mean("mIoU"), cv.std("mIoU")]
    dataset = load_dataset(data / noisy)
    clock = time.perf_counter()
    found = find_label_errors(out_of_fold, dataset, runs / "label_errors")  # score=pixels, the default
    pixels_s = time.perf_counter() - clock
    clock = time.perf_counter()
    learned = find_label_errors(out_of_fold, dataset, runs / "label_errors_learned", score="learned",
                                seed=a.seed + 1000)
    learned_s = time.perf_counter() - clock
    from masklab.curation.label_errors import suspicion

    by_objects, _ = suspicion({c: found.samples[c].to_numpy() for c in ("pixel_quality", "unsupported", "unlabelled")},
                              "objects")
    theirs = cleanlab_scores(out_of_fold, dataset)
    k = len(planted)
    ranking = {"masklab_pixels": ranking_metrics(dict(zip(found.samples["id"], found.samples["suspicion"])), planted),
               "masklab_objects": ranking_metrics(dict(zip(found.samples["id"], by_objects)), planted),
               "masklab_learned": ranking_metrics(dict(zip(learned.samples["id"], learned.samples["suspicion"])),
                                                  planted),
               "cleanlab": ranking_metrics(theirs, planted)}
    planted_regions = changed_regions(data / name, data / noisy, planted)
    regions = {"objects": region_metrics(found.issues, planted_regions),
               "learned": region_metrics(learned.issues[learned.issues["probability"] >= 0.5], planted_regions)}
    # Written before the loop's three trainings, so the ranking survives an interrupted run.
    (runs / "ranking.json").write_text(json.dumps(ranking, indent=1))
    summary = {"dataset": name, "samples_cv": len(cv_per_sample), "planted": k,
               "planted_by_type": {t: list(planted.values()).count(t) for t in sorted(set(planted.values()))},
               "cv_mIoU": cv_miou, **ranking, "regions": regions,
               "seconds": {"pixels": pixels_s, "learned": learned_s}}
    if name not in a.loop:
        return {**summary, "minutes": (time.perf_counter() - started) / 60}
    chosen = {"pixels": found.samples, "learned": learned.samples}[a.loop_score]
    flagged = list(chosen["id"][:k])
    shutil.rmtree(data / fixed, ignore_errors=True)
    # The fix: the flagged samples' masks back from the clean copy, recorded as edits.
    shutil.copytree(data / noisy, data / fixed)
    clean_rows = {s.id: s for s in read_manifest(data / name)}
    for sample_id in flagged:
        shutil.copyfile(data / name / clean_rows[sample_id].mask, data / fixed / clean_rows[sample_id].mask)
    from masklab.data.edits import record_mask_edits

    record_mask_edits(data / fixed)
    miou = {which: [train_and_test([*base, f"data.name={dataset_name}", f"seed={a.seed + t}"],
                                   runs / f"{which}_{t}", held) for t in range(a.loop_seeds)]
            for which, dataset_name in (("noisy", noisy), ("fixed", fixed), ("clean", name))}
    mean = {which: float(np.mean(v)) for which, v in miou.items()}
    gap = mean["clean"] - mean["noisy"]
    return {
        **summary,
        "loop_score": a.loop_score, "fixed_true_errors": sum(i in planted for i in flagged),
        "scored_on": held, "test_mIoU": miou, "test_mIoU_mean": mean,
        "test_mIoU_std": {which: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for which, v in miou.items()},
        "gap_recovered": (mean["fixed"] - mean["noisy"]) / gap if gap > 0 else float("nan"),
        "minutes": (time.perf_counter() - started) / 60,
    }


def changed_regions(clean: Path, noisy: Path, planted: dict[str, str]) -> dict[str, list[tuple[int, ...]]]:
    """Per planted sample, the boxes (x0, y0, x1, y1, image pixels) of the connected regions whose class changed."""
    from scipy import ndimage

    from masklab.data.images import read_mask
    from masklab.data.manifest import read_manifest

    rows = {r.id: r for r in read_manifest(clean)}
    out = {}
    for sample_id in planted:
        changed = read_mask(clean / rows[sample_id].mask) != read_mask(noisy / rows[sample_id].mask)
        ids, _ = ndimage.label(changed, np.ones((3, 3), bool))
        out[sample_id] = [(b[1].start, b[0].start, b[1].stop, b[0].stop) for b in ndimage.find_objects(ids)
                          if b is not None and int((ids[b] > 0).sum()) >= 16]
    return out


def box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def region_metrics(issues: pd.DataFrame, planted: dict[str, list[tuple[int, ...]]]) -> dict[str, float]:
    """Region-level precision (reported regions matching a planted one) and recall (planted regions matched by a
    reported one), a match being box IoU >= 0.25 in the same sample."""
    reported = [(r.sample_id, tuple(int(v) for v in r.bbox)) for r in issues.itertuples()]
    truth = [(i, box) for i, boxes in planted.items() for box in boxes]
    by_sample: dict[str, list[tuple[int, ...]]] = {}
    for sample_id, box in reported:
        by_sample.setdefault(sample_id, []).append(box)
    hit_reported = sum(any(box_iou(box, t) >= 0.25 for t in planted.get(i, [])) for i, box in reported)
    found = sum(any(box_iou(t, box) >= 0.25 for box in by_sample.get(i, [])) for i, t in truth)
    return {"reported": len(reported), "planted": len(truth),
            "precision": hit_reported / len(reported) if reported else float("nan"),
            "recall": found / len(truth) if truth else float("nan")}


def per_dataset(values: list[str], name: str, kind: type = int):
    """The value for ``name`` from ``["membrane=40", ...]`` or a single ``["8"]`` for every dataset."""
    found = dict(v.split("=", 1) for v in values if "=" in v)
    plain = [v for v in values if "=" not in v]
    if name in found:
        return kind(found[name])
    if plain:
        return kind(plain[0])
    raise SystemExit(f"no value for {name} in {values}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["dsb2018_semantic", "kvasir_seg"], choices=list(PRESETS))
    p.add_argument("--loop", nargs="*", default=None,
                   help="datasets whose top suspects are fixed and retrained (default: all of --datasets)")
    p.add_argument("--reuse-cv", action="store_true",
                   help="rank again from an earlier run's planted.json and out-of-fold predictions in --workdir")
    p.add_argument("--size", nargs="+", default=["membrane=128", "kvasir_seg=96", "dsb2018_semantic=128",
                                                 "synthetic=96"],
                   help="px, one for all or per dataset as name=px")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", nargs="+", default=["membrane=40", "kvasir_seg=8", "dsb2018_semantic=12",
                                                   "synthetic=12"],
                   help="one for all or per dataset as name=epochs (membrane has 30 images, Kvasir-SEG 1000, "
                        "DSB 334)")
    p.add_argument("--noise", nargs="+", default=["0.1", "membrane=0.2"],
                   help="share of samples planted, one for all or per dataset as name=share (membrane's 30 images "
                        "give 3 errors at 0.1)")
    p.add_argument("--loop-score", choices=["pixels", "learned"], default="learned",
                   help="whose top-k suspects the loop fixes")
    p.add_argument("--loop-seeds", type=int, default=3, help="trainings per arm of the loop (training seeds)")
    p.add_argument("--summary", nargs="+", type=Path, default=None,
                   help="print the tables over the given result files (one per planting seed) and stop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-label-errors")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.summary:
        summarize([json.loads(f.read_text()) for f in a.summary])
        return
    a.loop = a.datasets if a.loop is None else a.loop
    a.out = a.out.resolve() if a.out else None  # before entering the scratch project
    enter_scratch_project(a.workdir)
    results = []
    for name in a.datasets:
        r = run_dataset(name, a)
        results.append(r)
        print(f"\n{name}: {r['planted']} planted {r['planted_by_type']}; cv mIoU {r['cv_mIoU'][0]:.4f} ± "
              f"{r['cv_mIoU'][1]:.4f}; {r['minutes']:.1f} min")
        (a.out or Path("results.json")).write_text(json.dumps(results, indent=2))
        print_ranking(r)
        if "test_mIoU" in r:
            mean, std = r["test_mIoU_mean"], r["test_mIoU_std"]
            print(f"fixed top-{r['planted']} by {r['loop_score']} ({r['fixed_true_errors']} true errors): "
                  f"{r['scored_on']} mIoU over {a.loop_seeds} training seeds: "
                  + ", ".join(f"{w} {mean[w]:.4f} ± {std[w]:.4f}" for w in ("noisy", "fixed", "clean"))
                  + f"; gap recovered {r['gap_recovered']:.2f}", flush=True)


NAMES = ("masklab_pixels", "masklab_objects", "masklab_learned", "cleanlab")


def print_ranking(r: dict) -> None:
    print(f"{'type':<16} {'n':>3}  AUPRC " + " ".join(f"{n:>15}" for n in NAMES) + "   P@k "
          + " ".join(f"{n:>15}" for n in NAMES))
    for t, m in r["cleanlab"].items():
        print(f"{t:<16} {m['positives']:>3}        " + " ".join(f"{r[n][t]['auprc']:>15.3f}" for n in NAMES)
              + "       " + " ".join(f"{r[n][t]['precision_at_k']:>15.3f}" for n in NAMES))
    for score, m in r["regions"].items():
        print(f"regions, {score}: precision {m['precision']:.3f} of {m['reported']} reported, recall "
              f"{m['recall']:.3f} of {m['planted']} planted")
    sec = r["seconds"]
    print(f"ranking time: pixels {sec['pixels']:.1f} s, learned {sec['learned']:.1f} s "
          f"({sec['learned'] / sec['pixels']:.2f}x)", flush=True)


def summarize(runs: list[list[dict]]) -> None:
    """Per dataset, each score's AUPRC and P@k per type as the mean over planting seeds (one result file each);
    then the learned score against cleanlab's: per dataset, and the mean of the per-dataset ratios."""
    by_dataset: dict[str, list[dict]] = {}
    for results in runs:
        for r in results:
            by_dataset.setdefault(r["dataset"], []).append(r)
    ratios = []
    for name, rs in by_dataset.items():
        print(f"\n{name}: {len(rs)} seeds, planted {[r['planted'] for r in rs]}, cv mIoU "
              f"{np.mean([r['cv_mIoU'][0] for r in rs]):.3f}")
        types = sorted({t for r in rs for t in r["cleanlab"]}, key=lambda t: (t != "overall", t))
        print(f"{'type':<16} {'n':>4}  AUPRC " + " ".join(f"{n:>15}" for n in NAMES) + "   P@k "
              + " ".join(f"{n:>15}" for n in NAMES))
        for t in types:
            have = [r for r in rs if t in r["cleanlab"]]
            n = sum(r["cleanlab"][t]["positives"] for r in have)

            def mean(score: str, key: str, have=have, t=t) -> float:
                return float(np.mean([r[score][t][key] for r in have]))

            print(f"{t:<16} {n:>4}        " + " ".join(f"{mean(s, 'auprc'):>15.3f}" for s in NAMES) + "       "
                  + " ".join(f"{mean(s, 'precision_at_k'):>15.3f}" for s in NAMES))
        learned = np.mean([r["masklab_learned"]["overall"]["auprc"] for r in rs])
        theirs = np.mean([r["cleanlab"]["overall"]["auprc"] for r in rs])
        ratios.append(learned / theirs)
        for score in ("objects", "learned"):
            print(f"regions, {score}: precision {np.mean([r['regions'][score]['precision'] for r in rs]):.3f}, "
                  f"recall {np.mean([r['regions'][score]['recall'] for r in rs]):.3f}")
        print(f"learned / cleanlab AUPRC: {learned:.3f} / {theirs:.3f} = {learned / theirs:.2f}x; ranking time "
              f"learned / pixels {np.mean([r['seconds']['learned'] / r['seconds']['pixels'] for r in rs]):.2f}x")
    print(f"\nmean over datasets of learned / cleanlab AUPRC: {np.mean(ratios):.2f}x")


if __name__ == "__main__":
    main()
