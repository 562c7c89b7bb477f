"""``find_label_errors``: rank a dataset's samples by how likely their masks are wrong, from out-of-fold
predictions (``masklab cv``), and list each sample's suspected issues (see masklab.curation.label_errors).

Streaming: one sample's probabilities and mask in memory at a time; the dataset-wide statistics
(each disputed share's percentile, the typical boundary band width) need only small per-sample rows.
Outputs, keyed by sample id: ``label_errors.parquet`` (one row per sample, most suspicious first)
and ``label_issues.parquet`` (one row per issue), written atomically and logged to an MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masklab.errors import UserError

SAMPLES_FILE = "label_errors.parquet"
ISSUES_FILE = "label_issues.parquet"
ARTIFACT_DIR = "label_errors"


@dataclass
class LabelErrors:
    """``samples``: id, rank, split, fold, suspicion (0-1: the sample's percentile among the dataset's
    samples by the chosen score), label_quality (1 - suspicion, so it sorts like the ranking),
    pixel_quality, unsupported and unlabelled (the scores' inputs), side (the share with the higher
    percentile), kind (the sample's worst issue on that side), issues (count), and the evidence (px)
    of each kind, most suspicious first; ``issues``: one row per suspected issue."""

    samples: Any  # pandas.DataFrame
    issues: Any  # pandas.DataFrame
    folder: Path
    run_id: str | None = None

    def top(self, k: int) -> Any:
        return self.samples.head(k)


def label_at(task: Any, root: Path, sample: Any, size: tuple[int, int]) -> np.ndarray:
    """(h, w) class ids of ``sample``'s target at an out-of-fold prediction's ``size`` = (h, w): nearest
    neighbour, as scoring at model resolution resizes masks."""
    import cv2

    label = task.label_map(root, sample)
    h, w = size
    return label if label.shape == (h, w) else cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)


def find_label_errors(out_of_fold: str | Path, dataset: Any, output_dir: str | Path, run: Any = None,
                      task: str = "semantic", min_area: int = 4, min_margin: float = 0.2,
                      score: str = "pixels", seed: int = 0) -> LabelErrors:
    """Issues and label-quality scores of every sample with an out-of-fold prediction in ``out_of_fold``.

    ``dataset``: the loaded Dataset those predictions were made for (its masks are compared, resized
    to the predictions' size by nearest neighbour, as scoring at model resolution does).
    ``run``: a tracking RunLog to log the tables to (the cross-validation's parent run). ``score``: what
    ranks the samples, the name of a registered score, "pixels", "objects" or "learned" (masklab.curation
    .label_errors explains them; ``seed``: the learned detector's planted errors and cross-fitting)."""
    from masklab.curation.label_errors import label_score, typical_width
    from masklab.tasks import get_task

    ranking = label_score(score)
    oof = open_out_of_fold(out_of_fold, dataset)
    found = sample_issues(oof, dataset, get_task(task), min_area, min_margin,
                          learn=ranking.learns, seed=seed)
    width = typical_width(found.issues.values())
    samples = samples_table(found, ranking, width, dataset, oof)
    issues = issues_table(found.issues)
    folder = Path(output_dir)
    written = write_tables(folder, samples, issues)
    if run is not None:
        run.files(written, ARTIFACT_DIR)
        run.metrics({"label_errors/typical_band_width_px": width,
                     "label_errors/samples_with_issues": float((samples["issues"] > 0).sum())})
    return LabelErrors(samples.reset_index(drop=True), issues, folder, run.run_id if run is not None else None)


def open_out_of_fold(folder: str | Path, dataset: Any) -> Any:
    """The OutOfFold predictions in ``folder``; a UserError when some are of samples ``dataset`` lacks."""
    from masklab.curation.out_of_fold import OutOfFold

    oof = OutOfFold(Path(folder))
    known = {s.id for s in dataset.samples}
    unknown = [i for i in oof.ids if i not in known]
    if unknown:
        raise UserError(f"{oof.folder}: {len(unknown)} out-of-fold predictions are of samples not in {dataset.root} "
                        f"(e.g. {unknown[:3]}); were they made for another dataset?")
    return oof


@dataclass
class SampleIssues:
    """Per sample id (in out-of-fold order): its suspected issues, and its score columns (pixel_quality and the
    two disputed shares)."""

    issues: dict[str, list[Any]]
    columns: dict[str, dict[str, float]]


def sample_issues(oof: Any, dataset: Any, task: Any, min_area: int, min_margin: float, learn: bool = False,
                  seed: int = 0) -> SampleIssues:
    """Compare each out-of-fold prediction with its sample's mask (the task's class map at the prediction's size),
    one sample in memory at a time. ``learn``: also describe each sample's regions for the learned detector
    (masklab.curation.detector), fit it once every sample is seen, and add its ``error_probability`` column and
    each issue's ``probability``."""
    from functools import partial

    from masklab.curation.detector import Detector, copies_for
    from masklab.curation.label_errors import find_issues, mask_evidence

    by_id = {s.id: s for s in dataset.samples}
    ignore = dataset.class_table.ignore_index
    foreground = [c for c in dataset.class_table.ids if c != 0]
    detector = Detector(min_area=min_area, copies=copies_for(len(oof)), seed=seed) if learn else None
    found = SampleIssues({}, {})
    scales: dict[str, tuple[float, float]] = {}
    for item in oof:
        sample = by_id[item.id]
        label = label_at(task, dataset.root, sample, item.array.shape[-2:])
        probs = np.asarray(item.array, np.float32)
        found.issues[item.id] = find_issues(item.id, probs, label, (sample.height, sample.width),
                                            ignore_index=ignore, min_area=min_area, min_margin=min_margin)
        found.columns[item.id] = mask_evidence(probs, label, ignore, min_area)
        if detector is not None:
            scales[item.id] = (sample.height / label.shape[0], sample.width / label.shape[1])
            detector.observe(item.id, probs, label, ignore, foreground, found.columns[item.id],
                             partial(mask_evidence, probs, ignore_index=ignore, min_area=min_area),
                             needs_review=sample.status == "needs_review")
    if detector is not None:
        learned = detector.score()
        for sample_id, issues in found.issues.items():
            found.columns[sample_id]["error_probability"] = learned.sample[sample_id]
            found.issues[sample_id] = [with_probability(i, learned, scales[sample_id]) for i in issues]
    return found


def with_probability(issue: Any, learned: Any, scale: tuple[float, float]) -> Any:
    """``issue`` with the highest probability among the detector's disputed regions of the same pair of classes
    whose box meets the issue's (boxes compared at the out-of-fold resolution)."""
    from dataclasses import replace

    from masklab.curation.detector import REGION_FEATURES

    features, probs = learned.features[issue.sample_id], learned.regions[issue.sample_id]
    boxes = learned.boxes[issue.sample_id]
    if not len(features):
        return issue
    sy, sx = scale
    x0, y0, x1, y1 = issue.bbox[0] / sx, issue.bbox[1] / sy, issue.bbox[2] / sx, issue.bbox[3] / sy
    col = {name: features[:, REGION_FEATURES.index(name)] for name in ("is_object", "label_class", "pred_class")}
    meets = ((col["is_object"] == 0) & (col["label_class"] == issue.label_class)
             & (col["pred_class"] == issue.model_class) & (boxes[:, 0] < x1) & (boxes[:, 2] > x0)
             & (boxes[:, 1] < y1) & (boxes[:, 3] > y0))
    return replace(issue, probability=float(probs[meets].max())) if meets.any() else issue


def samples_table(found: SampleIssues, score: Any, width: float, dataset: Any, oof: Any) -> Any:
    """One row per sample, most suspicious first, ranked by ``score`` (a LabelScore); ``width``: the typical
    boundary band (px) that boundary evidence is counted beyond."""
    import pandas as pd

    from masklab.curation.label_errors import KINDS, SIDES, evidence_by_kind, suspicion, worst_kind

    ids = list(found.issues)
    columns = found.columns
    scores, side = suspicion({name: np.array([columns[i][name] for i in ids]) for name in columns[ids[0]]}
                             if ids else {name: np.zeros(0) for name in ["pixel_quality", *SIDES]}, score)
    by_id = {s.id: s for s in dataset.samples}
    rows = []
    for sample_id, sample_score, sample_side in zip(ids, scores, side):
        evidence = evidence_by_kind(found.issues[sample_id], width)
        rows.append({"id": sample_id, "split": by_id[sample_id].split, "fold": oof.fold_of(sample_id),
                     "label_quality": 1.0 - float(sample_score), "suspicion": float(sample_score),
                     "side": sample_side, **columns[sample_id], "kind": worst_kind(evidence, sample_side),
                     "issues": len(found.issues[sample_id]), **{f"evidence/{k}": evidence[k] for k in KINDS}})
    samples = pd.DataFrame(rows).sort_values(["suspicion", "id"], ascending=[False, True], kind="stable")
    samples.insert(1, "rank", np.arange(1, len(samples) + 1))
    return samples


def issues_table(issues: dict[str, list[Any]]) -> Any:
    """One row per suspected issue, sample by sample."""
    import pandas as pd

    return pd.DataFrame([i.row() for found_issues in issues.values() for i in found_issues],
                        columns=["sample_id", "kind", "label_class", "model_class", "area", "area_original",
                                 "confidence", "evidence", "bbox", "detail", "outline", "probability"])


def region_caption(issue: Any) -> str:
    """An issue's caption in the explorer: its kind and detail, and the learned probability when there is one."""
    caption = f"{issue.kind} {issue.detail}".strip()
    probability = getattr(issue, "probability", float("nan"))
    return caption if np.isnan(probability) else f"{caption} p={probability:.2f}"


def write_tables(folder: Path, samples: Any, issues: Any) -> list[Path]:
    """``label_errors.parquet`` and ``label_issues.parquet`` in ``folder`` (created), atomically."""
    from masklab.files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write(folder / SAMPLES_FILE, lambda tmp: samples.to_parquet(tmp, index=False)),
            atomic_write(folder / ISSUES_FILE, lambda tmp: issues.to_parquet(tmp, index=False))]


EXPLORER_DIR = "explorer"
MAX_REGIONS = 5  # outlined per sample, the most evident first


def write_label_error_explorer(found: LabelErrors, dataset: Any, out_of_fold: str | Path, top: int,
                               task: str = "semantic", run: Any = None) -> Path:
    """The explorer's "likely label errors" view of the ``top`` most suspicious samples: image, mask and the
    out-of-fold prediction (its argmax, at the image's size), each suspected region outlined, sorted by rank,
    with review marks that download as ``review.csv`` for ``masklab data mark``. Written to
    ``found.folder/explorer/index.html`` and logged beside the tables when ``run`` is given."""
    import tempfile

    from masklab.curation.out_of_fold import OutOfFold
    from masklab.explore import ExplorerSample, write_explorer
    from masklab.tasks import get_task

    target, class_maps = get_task(task), get_task("semantic")  # out-of-fold predictions are class maps
    oof = OutOfFold(Path(out_of_fold))
    by_id = {s.id: s for s in dataset.samples}
    table = found.samples.head(top)
    from masklab.curation.label_errors import region_order

    order = region_order(found.issues)
    issues = found.issues.sort_values(order, ascending=False)
    out = found.folder / EXPLORER_DIR
    with tempfile.TemporaryDirectory(prefix="masklab-oof-") as scratch:
        samples = []
        for k, sample_id in enumerate(table["id"]):
            sample = by_id[sample_id]
            pred = np.asarray(oof.get(sample_id).array).argmax(axis=0).astype(np.uint8)
            size = (sample.width, sample.height)
            path = class_maps.write_prediction(pred, Path(scratch) / f"{k}_pred.png", size=size)
            # The mask as the ranking saw it: an instance sample's objects painted as classes.
            mask = dataset.root / sample.mask if sample.mask else \
                class_maps.write_prediction(target.label_map(dataset.root, sample), Path(scratch) / f"{k}_gt.png")
            mine = issues[issues["sample_id"] == sample_id].head(MAX_REGIONS)
            regions = [(int(r.bbox[0]), int(r.bbox[1]), int(r.bbox[2]), int(r.bbox[3]), region_caption(r))
                       for r in mine.itertuples()]
            samples.append(ExplorerSample(sample_id, sample.split, dataset.root / sample.image, mask, path,
                                          regions=regions))
        command = f"masklab data mark ids=review.csv status=needs_review data.root={dataset.root}"
        view = {"name": "Likely label errors", "sort": "rank", "dir": "asc", "overlay": "gt",
                "note": f"Likely label errors: the {len(table)} most suspicious of {len(found.samples)} samples, "
                        "by rank. Yellow boxes: the regions the out-of-fold model disputes. The prediction is "
                        "the model that never trained on the sample. Mark the ones to review (m), then "
                        "download the list.",
                "review": {"status": "needs_review", "command": command}}
        mlflow_artifact = {"run_id": run.run_id, "path": f"{ARTIFACT_DIR}/{EXPLORER_DIR}"} if run is not None else None
        index = write_explorer(out, dataset.class_table, samples, table, {},
                               f"Likely label errors: {dataset.root.name}", mlflow_artifact, view=view)
    if run is not None:
        run.directory(out, f"{ARTIFACT_DIR}/{EXPLORER_DIR}")
    return index
