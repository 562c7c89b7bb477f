"""Instance segmentation: a target is a set of objects (per-object masks, overlaps allowed, each with
a class and a crowd flag), a prediction is a set of objects with confidence scores.

Shapes: :class:`InstancePrediction` holds ``masks`` (K, H, W) bool, ``class_ids`` (K,) int64,
``scores`` (K,) float32, at the image's own size. Two model families give it (masklab.models.instance):
Mask R-CNN's detections (soft masks thresholded at 0.5) and a bottom-up network's logits (objects
split by a watershed from their interiors). Evaluation, predict and the explorer see only
InstancePrediction, so none of them branches on the model.

Written predictions: a 16-bit PNG of instance ids (0 = background, 1 = the most confident object;
where objects overlap the more confident one is drawn) and, for a folder, a COCO results JSON
(compressed RLE, class, score) next to the PNGs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masklab.errors import UserError
from masklab.files import atomic_write

COCO_RESULTS_FILE = "predictions_coco.json"


@dataclass
class InstancePrediction:
    """Objects predicted on one image: masks (K, H, W) bool, class_ids (K,) int64, scores (K,) float32,
    most confident first."""

    masks: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def of(cls, masks: np.ndarray, class_ids: np.ndarray, scores: np.ndarray) -> InstancePrediction:
        """Sorted by descending score, empty masks dropped."""
        masks = np.asarray(masks, bool)
        keep = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
        order = np.argsort(-np.asarray(scores, np.float32)[keep], kind="stable")
        return cls(masks[keep][order], np.asarray(class_ids, np.int64)[keep][order],
                   np.asarray(scores, np.float32)[keep][order])

    def id_map(self) -> np.ndarray:
        """(H, W) uint16: 0 background, k + 1 where object k is (the most confident object on top)."""
        ids = np.zeros(self.masks.shape[1:], np.uint16)
        for k in range(len(self) - 1, -1, -1):  # least confident first, so the most confident is drawn last
            ids[self.masks[k]] = k + 1
        return ids

    def class_map(self) -> np.ndarray:
        """(H, W) uint8 class ids of the objects painted like :meth:`id_map` (semantic view of the prediction)."""
        ids = self.id_map()
        lookup = np.concatenate([[0], self.class_ids]).astype(np.uint8)
        return lookup[ids]


def split_objects(logits: Any, postprocess: dict[str, Any]) -> InstancePrediction:
    """Objects from a bottom-up network's logits (C + 1, H, W) (torch tensor): channel 0 background,
    1..C-1 class interiors, C boundary.

    Seeds are the connected interiors (argmax on a class channel) and the foreground blobs that
    contain no interior (objects thinner than the boundary rim); a watershed over
    1 - P(interior) grows each seed over the pixels argmax calls foreground or boundary, so touching
    objects meet at their shared boundary. Class: the interior channel with the most probability
    mass in the object; score: the object's mean foreground probability (1 - P(background)).
    Objects under ``min_area`` px or ``min_score`` are dropped.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    probs = logits.detach().float().softmax(dim=0).cpu().numpy()
    boundary = probs.shape[0] - 1
    winner = probs.argmax(axis=0)
    interior = (winner > 0) & (winner < boundary)
    seeds, n = ndimage.label(interior)
    # A foreground blob without any interior (an object smaller than the boundary rim is wide) is an
    # object of its own; the watershed would leave it unlabelled.
    blobs, _ = ndimage.label(winner > 0)
    orphans, extra = ndimage.label(np.isin(blobs, np.unique(blobs[seeds > 0]), invert=True) & (blobs > 0))
    seeds = np.where(orphans > 0, orphans + n, seeds)
    n += extra
    if n == 0:
        return InstancePrediction.of(np.zeros((0, *winner.shape), bool), np.zeros(0), np.zeros(0))
    inside = probs[1:boundary].sum(axis=0)
    labels = watershed(1.0 - inside, markers=seeds, mask=winner > 0)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    foreground = np.bincount(flat, weights=(1.0 - probs[0]).ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    mass = np.stack([np.bincount(flat, weights=probs[c].ravel(), minlength=n + 1)[1:] for c in range(1, boundary)])
    classes = mass.argmax(axis=0) + 1
    keep = (area >= int(postprocess.get("min_area", 1))) & (foreground >= float(postprocess.get("min_score", 0.0)))
    ids = np.flatnonzero(keep) + 1
    masks = labels[None] == ids[:, None, None]
    return InstancePrediction.of(masks, classes[keep], foreground[keep])


def from_detections(detections: dict[str, Any], mask_threshold: float = 0.5) -> InstancePrediction:
    """Objects from a Mask R-CNN output dict (``masks`` (K, 1, H, W) in 0..1, ``labels``, ``scores``)."""
    masks = detections["masks"][:, 0].detach().cpu().numpy() >= mask_threshold
    return InstancePrediction.of(masks, detections["labels"].cpu().numpy(), detections["scores"].detach().cpu().numpy())


def predictions_from_output(model: Any, output: Any, postprocess: dict[str, Any] | None = None
                            ) -> list[InstancePrediction]:
    """Instance predictions from a batch of model output: Mask R-CNN's list of dicts, or (N, C + 1, H, W) logits."""
    if getattr(model, "output_kind", "logits") == "detections":
        return [from_detections(d) for d in output]
    settings = postprocess if postprocess is not None else model.postprocess
    return [split_objects(lg, settings) for lg in output]


def coco_results(image_id: int | str, prediction: InstancePrediction) -> list[dict[str, Any]]:
    """COCO results entries (``image_id``, ``category_id`` = class id, compressed RLE ``segmentation``,
    ``bbox`` xywh, ``score``) of one image's prediction."""
    from masklab.data.format import encode_rle
    from masklab.tasks.instance_data import boxes_of

    boxes = boxes_of(prediction.masks)
    return [{"image_id": image_id, "category_id": int(c), "segmentation": encode_rle(m), "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for m, c, s, b in zip(prediction.masks, prediction.class_ids, prediction.scores, boxes)]


def object_class_ids(class_table: Any) -> list[int]:
    """The classes objects belong to: those marked ``thing: true``; a dataset that marks none (a v1 dataset
    with instance maps, such as the synthetic one) counts every class but background (id 0) and ignore."""
    return list(class_table.thing_ids) or [c.id for c in class_table.classes
                                           if c.id not in (0, class_table.ignore_index)]


class InstanceTask:
    """The instance-segmentation task (see the module docstring for its shapes)."""

    name = "instance"

    # -- data ------------------------------------------------------------------------------------------
    def datamodule(self, dataset, train_transform, eval_transform, batch_size: int, num_workers: int, seed: int):
        from masklab.data.datamodule import SegmentationDataModule
        from masklab.tasks.instance_data import InstanceSplit, collate_training

        if not object_class_ids(dataset.class_table):
            raise UserError(f"{dataset.root}/classes.yaml: no object class (only background); task=instance needs "
                            "classes marked `thing: true` (an instance import marks them)")
        return SegmentationDataModule(dataset, train_transform, eval_transform, batch_size=batch_size,
                                      num_workers=num_workers, seed=seed, split_class=InstanceSplit,
                                      collate_fn=collate_training)

    def eval_dataset(self, dataset, samples: Sequence[Any], rule=None):
        """Scoring items (image, objects, id) at the original size, or at the network's when ``rule`` is given."""
        from masklab.tasks.instance_data import ScoringObjects

        return ScoringObjects(dataset, samples, rule)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from masklab.data.pairs import list_collate

        return list_collate(items)

    # -- model and training ----------------------------------------------------------------------------
    def build_model(self, model_cfg, class_table):
        """A Mask R-CNN or bottom-up network (masklab.models.instance) for the dataset's classes."""
        from masklab.config import to_plain
        from masklab.models.instance import instance_model_from_spec

        return instance_model_from_spec(to_plain(model_cfg), class_table.num_classes)

    def model_from_spec(self, spec: dict[str, Any], class_table, code_root: Path | None = None,
                        where: str | None = None):
        """masklab's instance builders only (user-code instance models are not supported yet)."""
        from masklab.models.instance import instance_model_from_spec

        return instance_model_from_spec(spec, class_table.num_classes, rebuild=True)

    def build_loss(self, loss_cfg, class_table):
        """The dense loss of the bottom-up path (Mask R-CNN brings its own losses and ignores it)."""
        from hydra.utils import instantiate

        return instantiate(loss_cfg, ignore_index=class_table.ignore_index)

    def lightning_module(self, model, loss, optimizer: Callable[..., Any], scheduler, class_table,
                         meta: dict[str, Any]):
        from masklab.tasks.instance_module import InstanceModule

        return InstanceModule(model, loss, optimizer, scheduler, class_table, meta)

    # -- predictions -----------------------------------------------------------------------------------
    def predict(self, predictor, images: Sequence[np.ndarray]) -> list[InstancePrediction]:
        """Objects per (H_i, W_i, 3) uint8 image at its own size: Mask R-CNN's detections mapped back to
        the image, or the bottom-up logits (already at the image's size) split into objects there."""
        detections = predictor.output_kind == "detections"
        output = predictor.detections(images) if detections else predictor.logits(images)
        return predictions_from_output(predictor.model, output)

    def label_map(self, root: Path, sample) -> np.ndarray:
        """(H, W) uint8: the sample's objects painted with their class ids in file order (later on top)."""
        from masklab.data.format import read_objects

        objects = read_objects(root, sample)
        out = np.zeros((sample.height, sample.width), np.uint8)
        for mask, class_id in zip(objects.masks, objects.class_ids):
            out[mask] = class_id
        return out

    def class_probabilities(self, predictor, images: Sequence[np.ndarray], resolution: str) -> list[np.ndarray]:
        """Class probabilities (C, h_i, w_i) float16 per image: the semantic view of the predicted objects that
        the label-error ranking compares with :meth:`label_map`.

        Bottom-up (C + 1 logits): the softmax, with the boundary channel's probability given to the thing
        classes in proportion to their interiors (a rim pixel is part of an object). Mask R-CNN: per class
        the noisy-or of its detections (score x soft mask) and background the rest, normalised to sum 1;
        at ``resolution="model"`` the masks are brought to the network's input size under a "resize" rule."""
        if not images:
            return []
        import torch
        import torch.nn.functional as F

        if predictor.output_kind == "logits":
            out = []
            for lg in predictor.logits(images, resolution=resolution):
                p = torch.softmax(lg.float(), dim=0)
                classes, rim = p[:-1].clone(), p[-1]
                things = classes[1:] + 1e-6
                classes[1:] += rim * things / things.sum(dim=0, keepdim=True)
                out.append(classes.to(torch.float16).cpu().numpy())
            return out
        num_classes = int(predictor.model.net.roi_heads.box_predictor.cls_score.out_features)
        out = []
        for image, found in zip(images, predictor.detections(images)):
            at_model = resolution == "model" and predictor.rule.mode == "resize"
            h, w = predictor.rule.resize_image(image).shape[:2] if at_model else image.shape[:2]
            masks = found["masks"].float()  # (K, 1, H, W) at the image's size
            if len(masks) and masks.shape[-2:] != (h, w):
                masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
            absent = torch.ones((num_classes, h, w))
            for mask, label, score in zip(masks[:, 0], found["labels"], found["scores"]):
                absent[int(label)] *= 1 - float(score) * mask.clamp(0, 1)
            present = 1 - absent
            present[0] = absent[1:].prod(dim=0)
            out.append((present / present.sum(dim=0, keepdim=True).clamp_min(1e-6)).to(torch.float16).numpy())
        return out

    def write_prediction(self, prediction: InstancePrediction, path: Path, size: tuple[int, int] | None = None
                         ) -> Path:
        """A 16-bit PNG of instance ids (0 = background, 1 = the most confident object); nearest-resized to
        ``size`` = (width, height) when given."""
        import cv2
        from PIL import Image

        ids = prediction.id_map()
        if size is not None and ids.shape[::-1] != tuple(size):
            ids = cv2.resize(ids, tuple(size), interpolation=cv2.INTER_NEAREST)
        image = Image.fromarray(ids.astype(np.uint16))
        return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))

    def index_record(self, name: str, prediction: InstancePrediction) -> list[dict[str, Any]]:
        """The image's COCO results (compressed RLE: small), ``image_id`` = ``name``."""
        return coco_results(name, prediction)

    def write_predictions_index(self, records: Sequence[list[dict[str, Any]]], folder: Path) -> Path:
        """``<folder>/predictions_coco.json``: the COCO results of every image (``image_id`` = the image's
        path relative to the input, without suffix; ``category_id`` = class id), e.g. for pycocotools'
        ``loadRes`` once the ids are mapped to a ground-truth file's."""
        results = [r for image in records for r in image]
        return atomic_write(Path(folder) / COCO_RESULTS_FILE, lambda tmp: tmp.write_text(json.dumps(results)))

    def overlay(self, image: np.ndarray, prediction: InstancePrediction, class_table, alpha: float = 0.45
                ) -> np.ndarray:
        """Each object tinted and outlined in its own colour."""
        from masklab.report.overlay import distinct_colors, overlay_objects

        return overlay_objects(image, prediction.masks[::-1], distinct_colors(len(prediction))[::-1], alpha * 0.6)

    def signature(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Images in; per image an instance-id map (0 = background, 1 = most confident object)."""
        return ({"name": "images", "dtype": "uint8", "shape": (-1, -1, -1, 3)},
                {"name": "instance_ids", "dtype": "uint16", "shape": (-1, -1, -1)})

    def package_output(self, predictions: Sequence[InstancePrediction]) -> np.ndarray:
        """What the registry pyfunc returns for a batch of predictions: (N, H, W) uint16 id maps."""
        return np.stack([p.id_map() for p in predictions])

    # -- evaluation ------------------------------------------------------------------------------------
    def score(self, predictor, loader, class_table, prefix: str, options: dict[str, Any],
              on_prediction: Callable[[str, InstancePrediction], None] | None = None):
        """Mask AP, Boundary AP, PQ and the semantic scores of the painted objects; per-sample counts and matches."""
        from masklab.evaluation.instance import evaluate_instances

        return evaluate_instances(self, predictor, loader, class_table, prefix, options, on_prediction)

    def evaluation_files(self, result, folder: Path, split: str) -> list[Path]:
        from masklab.evaluation.evaluate import write_evaluation
        from masklab.report.plots import per_class_bars

        files = write_evaluation(result, folder, split)
        files.append(per_class_bars(result.per_class, folder / f"{split}_per_class.png",
                                    ("mask_AP", "boundary_AP", "PQ")))
        return files

    def summary_table(self, result, title: str):
        from masklab.evaluation.instance import instance_table_text

        return instance_table_text(result, title)
