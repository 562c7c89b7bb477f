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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from masklab.errors import UserError
from masklab.files import atomic_write
from masklab.tasks.base import Batch, OutputKind, ScoreOptions, Task, TensorSpec
from masklab.tasks.instance_predictions import (
    InstancePrediction,
    coco_results,
    predictions_from_output,
)

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from omegaconf import DictConfig
    from rich.console import RenderableType
    from torch import nn
    from torch.optim import Optimizer
    from torch.utils.data import Dataset as TorchDataset

    from masklab.data.class_pixels import ClassPixels
    from masklab.data.classes import ClassTable
    from masklab.data.manifest import Dataset, Sample
    from masklab.evaluation.evaluate import EvaluationResult
    from masklab.inference.engine import Predictor
    from masklab.inference.rule import InputRule

COCO_RESULTS_FILE = "predictions_coco.json"


class InstanceTask(Task[InstancePrediction]):
    """The instance-segmentation task (see the module docstring for its shapes)."""

    name: ClassVar[str] = "instance"
    monitor: ClassVar[str] = "val/mask_AP"
    gate_metric: ClassVar[str] = "mask_AP"
    curve_metrics: ClassVar[tuple[str, ...]] = ("train/loss_epoch", "val/loss", "val/mask_AP")
    evaluation_metrics: ClassVar[tuple[str, ...]] = (
        *(f"{kind}_{name}" for kind in ("mask", "boundary") for name in (
            "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR<n>", "AR_small", "AR_medium", "AR_large")),
        "PQ", "SQ", "RQ", "count_MAE", "mIoU", "mDice", "pixel_acc")
    output_kind: ClassVar[OutputKind] = "objects"

    # -- data ------------------------------------------------------------------------------------------
    def datamodule(self, dataset: Dataset, train_transform: Callable[..., object],
                   eval_transform: Callable[..., object], batch_size: int, num_workers: int,
                   seed: int) -> pl.LightningDataModule:
        from masklab.data.datamodule import SegmentationDataModule
        from masklab.tasks.instance_data import InstanceSplit, collate_training

        if not dataset.class_table.object_class_ids:
            raise UserError(f"{dataset.root}/classes.yaml: no object class (only background); task=instance needs "
                            "classes marked `thing: true` (an instance import marks them)")
        return SegmentationDataModule(dataset, train_transform, eval_transform, batch_size=batch_size,
                                      num_workers=num_workers, seed=seed, split_class=InstanceSplit,
                                      collate_fn=collate_training)

    def eval_dataset(self, dataset: Dataset, samples: Sequence[Sample],
                     rule: InputRule | None = None) -> TorchDataset[dict[str, object]]:
        """Scoring items (image, objects, id) at the original size, or at the network's when ``rule`` is given."""
        from masklab.tasks.instance_data import ScoringObjects

        return ScoringObjects(dataset, samples, rule)

    def collate(self, items: list[dict[str, object]]) -> Batch:
        from masklab.data.pairs import list_collate

        return list_collate(items)

    # -- model and training ----------------------------------------------------------------------------
    def build_model(self, model_cfg: DictConfig, class_table: ClassTable) -> nn.Module:
        """A Mask R-CNN or bottom-up network (masklab.models.instance) for the dataset's classes."""
        from masklab.config import to_plain
        from masklab.models.instance import instance_model_from_spec

        return instance_model_from_spec(to_plain(model_cfg), class_table.num_classes)

    def build_loss(self, loss_cfg: DictConfig, class_table: ClassTable) -> nn.Module:
        """The dense loss of the bottom-up path (Mask R-CNN brings its own losses and ignores it)."""
        from hydra.utils import instantiate

        return instantiate(loss_cfg, ignore_index=class_table.ignore_index)

    def training_class_pixels(self, dataset: Dataset, cache_dir: str | Path | None) -> ClassPixels:
        """Refused: the bottom-up loss is over its own target's classes (background, object, boundary), not the
        dataset's, and Mask R-CNN brings its own losses."""
        raise UserError("loss.class_weights: task=instance trains on its own targets, not on the dataset's classes; "
                        "class weights are for task=semantic (remove loss.class_weights)")

    def lightning_module(self, model: nn.Module, loss: nn.Module, optimizer: Callable[..., Optimizer],
                         scheduler: Callable[..., object] | None, class_table: ClassTable,
                         meta: dict[str, object]) -> pl.LightningModule:
        from masklab.tasks.instance_module import InstanceModule

        return InstanceModule(model, loss, optimizer, scheduler, class_table, meta)

    # -- predictions -----------------------------------------------------------------------------------
    def predict(self, predictor: Predictor, images: Sequence[np.ndarray]) -> list[InstancePrediction]:
        """Objects per (H_i, W_i, 3) uint8 image at its own size: Mask R-CNN's detections mapped back to
        the image, or the bottom-up logits (already at the image's size) split into objects there."""
        detections = predictor.output_kind == "detections"
        output = predictor.detections(images) if detections else predictor.logits(images)
        return predictions_from_output(predictor.model, output)

    def label_map(self, root: Path, sample: Sample) -> np.ndarray:
        """(H, W) uint8: the sample's objects painted with their class ids in file order (later on top)."""
        from masklab.data.objects import read_objects

        objects = read_objects(root, sample)
        out = np.zeros((sample.height, sample.width), np.uint8)
        for mask, class_id in zip(objects.masks, objects.class_ids):
            out[mask] = class_id
        return out

    def class_probabilities(self, predictor: Predictor, images: Sequence[np.ndarray],
                            resolution: str) -> list[np.ndarray]:
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
        from masklab.models.instance import MaskRCNNNet

        if not isinstance(predictor.model, MaskRCNNNet):
            raise TypeError(f"a detection model must be a MaskRCNNNet, found {type(predictor.model).__name__}")
        num_classes = predictor.model.num_classes
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

    def index_record(self, name: str, prediction: InstancePrediction) -> list[dict[str, object]]:
        """The image's COCO results (compressed RLE: small), ``image_id`` = ``name``."""
        return coco_results(name, prediction)

    def write_predictions_index(self, records: Sequence[list[dict[str, object]]], folder: Path) -> Path:
        """``<folder>/predictions_coco.json``: the COCO results of every image (``image_id`` = the image's
        path relative to the input, without suffix; ``category_id`` = class id), e.g. for pycocotools'
        ``loadRes`` once the ids are mapped to a ground-truth file's."""
        results = [r for image in records for r in image]
        return atomic_write(Path(folder) / COCO_RESULTS_FILE, lambda tmp: tmp.write_text(json.dumps(results)))

    def overlay(self, image: np.ndarray, prediction: InstancePrediction, class_table: ClassTable,
                alpha: float = 0.45) -> np.ndarray:
        """Each object tinted and outlined in its own colour."""
        from masklab.report.overlay import distinct_colors, overlay_objects

        return overlay_objects(image, prediction.masks[::-1], distinct_colors(len(prediction))[::-1], alpha * 0.6)

    def signature(self) -> tuple[TensorSpec, TensorSpec]:
        """Images in; per image an instance-id map (0 = background, 1 = most confident object)."""
        return ({"name": "images", "dtype": "uint8", "shape": (-1, -1, -1, 3)},
                {"name": "instance_ids", "dtype": "uint16", "shape": (-1, -1, -1)})

    def package_output(self, predictions: Sequence[InstancePrediction]) -> np.ndarray:
        """What the registry pyfunc returns for a batch of predictions: (N, H, W) uint16 id maps."""
        return np.stack([p.id_map() for p in predictions])

    # -- evaluation ------------------------------------------------------------------------------------
    def score(self, predictor: Predictor, loader: Iterable[Batch], class_table: ClassTable, prefix: str,
              options: ScoreOptions,
              on_prediction: Callable[[str, InstancePrediction], None] | None = None) -> EvaluationResult:
        """Mask AP, Boundary AP, PQ and the semantic scores of the painted objects; per-sample counts and matches."""
        from masklab.evaluation.instance import evaluate_instances

        return evaluate_instances(self, predictor, loader, class_table, prefix, options, on_prediction)

    def evaluation_files(self, result: EvaluationResult, folder: Path, split: str) -> list[Path]:
        from masklab.evaluation.evaluate import write_evaluation
        from masklab.report.plots import per_class_bars

        files = write_evaluation(result, folder, split)
        files.append(per_class_bars(result.per_class, folder / f"{split}_per_class.png",
                                    ("mask_AP", "boundary_AP", "PQ")))
        return files

    def summary_table(self, result: EvaluationResult, title: str) -> RenderableType:
        from masklab.evaluation.instance import instance_table_text

        return instance_table_text(result, title)
