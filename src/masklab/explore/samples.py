"""The samples an explorer shows, and where their files are: the image and ground truth named by the dataset's
manifest, the prediction at ``<pred_dir>/<safe id>.png`` (a class-index PNG, or for instance predictions a 16-bit
id map, id k + 1 = prediction k), and for instance samples their ground-truth objects. The static page gets a list
of :class:`ExplorerSample`; the server finds the same files by id (:func:`prediction_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from masklab.data.images import read_instances
from masklab.data.manifest import Dataset, Sample
from masklab.data.objects import read_objects
from masklab.data.sample_files import safe_name
from masklab.explore.objects import ExplorerObjects, ObjectLoader


@dataclass
class ExplorerSample:
    """One sample to show: its image, and optionally its ground-truth and predicted class-index masks, or
    instead a loader of its instance objects (called once, while the sample is written, so only a few
    samples' objects are in memory at a time); with ``objects`` set, ``mask`` and ``pred`` are not read."""

    id: str
    split: str
    image: Path
    mask: Path | None = None
    pred: Path | None = None
    objects: ObjectLoader | None = None
    # Boxes outlined over image, mask and prediction, (x0, y0, x1, y1, label) in the image's own pixels
    # (x1, y1 exclusive): e.g. suspected label errors.
    regions: list[tuple[int, int, int, int, str]] | None = None


def prediction_file(pred_dir: Path, sample_id: str) -> Path:
    """Where a folder of predictions (an evaluation's ``<split>_pred/``) keeps the one of ``sample_id``."""
    return Path(pred_dir) / f"{safe_name(sample_id)}.png"


def explorer_samples(dataset: Dataset, split: str | None, pred_dir: Path | None, objects: bool | None = None,
                     matches: Mapping[str, list] | None = None) -> list[ExplorerSample]:
    """The explorer's samples of ``split`` (None/"all": every sample), with predictions from ``pred_dir``.

    objects: False shows class masks (predictions: class-index PNGs); True shows instance objects: the
    ground truth from each sample's objects (or v1 instance map), predictions from the 16-bit id maps
    ``pred_dir/<safe id>.png`` (id k + 1 = prediction k) and their outcomes from ``matches`` {sample id:
    per-object match list}; None (a dataset browse) picks objects for each sample where
    :func:`shows_objects`. Objects are read only when the explorer writes that sample, so memory stays bounded.
    """
    chosen = dataset.samples if split in (None, "all") else dataset.split(split)
    out = []
    for s in chosen:
        pred = prediction_file(pred_dir, s.id) if pred_dir else None
        pred = pred if pred is not None and pred.is_file() else None
        if objects or (objects is None and shows_objects(s)):
            found = matches.get(str(s.id)) if matches is not None else None
            out.append(ExplorerSample(s.id, s.split, dataset.root / s.image,
                                      objects=object_loader(dataset.root, s, pred, found)))
        else:
            out.append(ExplorerSample(s.id, s.split, dataset.root / s.image,
                                      dataset.root / s.mask if s.mask else None, pred))
    return out


def shows_objects(sample: Sample) -> bool:
    """Whether a dataset view (browse, preview) draws the sample's instance objects rather than its class mask:
    when it has an objects file (instance importers write one, plus a class mask derived from it), or a v1
    instance map and no class mask. The v1 synthetic data keeps its class-mask view: its instance maps are a
    by-product of a semantic generator."""
    return bool(sample.objects or (sample.instances and not sample.mask))


def object_loader(root: Path, sample: Sample, pred: Path | None, matches: list | None) -> ObjectLoader:
    """A loader of one sample's ExplorerObjects: ground-truth objects, the predicted id map, the matches."""

    def load() -> ExplorerObjects:
        truth = read_objects(root, sample)
        ids = read_instances(pred) if pred is not None else None
        return ExplorerObjects(truth.masks, truth.class_ids, truth.iscrowd.astype(bool), ids, matches)

    return load
