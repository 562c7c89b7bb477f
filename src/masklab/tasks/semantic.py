"""Semantic segmentation: a target is a class-index map (H, W), a prediction is the argmax of
per-pixel class logits (C, H, W).

Everything in masklab that knows this shape is reached through :class:`SemanticTask`: the
dataset item ``{image (3, H, W) uint8, mask (H, W) int64, id}``, smp (or the user's) models that
map pixels to logits, the weighted CE/Dice/focal loss, confusion-matrix metrics with boundary IoU
and per-image rows, class-index PNG predictions and colour overlays, and the registry signature
``(N, H, W, 3) uint8 -> (N, H, W) uint8``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from masklab.errors import UserError
from masklab.files import atomic_write
from masklab.tasks.base import Batch, OutputKind, ScoreOptions, Task, TensorSpec, option

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from omegaconf import DictConfig
    from rich.console import RenderableType
    from torch import nn
    from torch.optim import Optimizer
    from torch.utils.data import Dataset as TorchDataset

    from masklab.data.classes import ClassTable
    from masklab.data.manifest import Dataset, Sample
    from masklab.evaluation.evaluate import EvaluationResult
    from masklab.inference.engine import Predictor
    from masklab.inference.rule import InputRule


class SemanticTask(Task[np.ndarray]):
    """The semantic-segmentation task (see the module docstring for its shapes)."""

    name: ClassVar[str] = "semantic"
    monitor: ClassVar[str] = "val/mIoU"
    gate_metric: ClassVar[str] = "mIoU"
    curve_metrics: ClassVar[tuple[str, ...]] = (
        "train/loss_epoch", "val/loss", "val/mIoU", "val/mDice", "val/mBoundaryIoU")
    evaluation_metrics: ClassVar[tuple[str, ...]] = (
        "mIoU", "mDice", "pixel_acc", "mIoU_image", "mDice_image", "pixel_acc_image", "mBoundaryIoU",
        "mBoundaryIoU_image", "iou/<class>", "dice/<class>", "boundary_iou/<class>")
    output_kind: ClassVar[OutputKind] = "class_map"

    # -- data ------------------------------------------------------------------------------------------
    def datamodule(self, dataset: Dataset, train_transform: Callable[..., object],
                   eval_transform: Callable[..., object], batch_size: int, num_workers: int,
                   seed: int) -> pl.LightningDataModule:
        from masklab.data.datamodule import SegmentationDataModule

        return SegmentationDataModule(dataset, train_transform, eval_transform, batch_size=batch_size,
                                      num_workers=num_workers, seed=seed)

    def eval_dataset(self, dataset: Dataset, samples: Sequence[Sample],
                     rule: InputRule | None = None) -> TorchDataset[dict[str, object]]:
        """Items for scoring: image (H, W, 3) uint8, mask (H, W) uint8, id; at each sample's
        original size, or, when scoring at model resolution, the mask brought to the network's size by
        ``rule`` (an InputRule's ``to_network``: as validation gave it) while the image stays as it is (the
        Predictor brings it there, as for any prediction)."""
        from masklab.data.pairs import ScoringPairs

        if rule is None:
            return ScoringPairs(dataset, samples, None)

        def mask_to_network(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return image, rule.to_network(image, mask)[1]

        return ScoringPairs(dataset, samples, mask_to_network)

    def collate(self, items: list[dict[str, object]]) -> Batch:
        """Lists per key: scoring batches hold images of different sizes."""
        from masklab.data.pairs import list_collate

        return list_collate(items)

    # -- model and training ----------------------------------------------------------------------------
    def build_model(self, model_cfg: DictConfig, class_table: ClassTable) -> nn.Module:
        """Any model config whose target maps (N, 3, H, W) pixels to (N, C, H, W) logits: masklab's
        smp builder or the user's own network, wrapped with normalisation (``build_model_from_spec``)."""
        from masklab.models.factory import build_model_from_spec

        target = str(model_cfg.get("_target_", ""))
        if target.startswith("masklab.models.instance."):
            raise UserError(f"model _target_={target} is an instance-segmentation model; train it with task=instance "
                            "(or an instance experiment preset)")
        return build_model_from_spec(model_cfg, class_table.num_classes)

    def build_loss(self, loss_cfg: DictConfig, class_table: ClassTable) -> nn.Module:
        from hydra.utils import instantiate

        return instantiate(loss_cfg, ignore_index=class_table.ignore_index)

    def lightning_module(self, model: nn.Module, loss: nn.Module, optimizer: Callable[..., Optimizer],
                         scheduler: Callable[..., object] | None, class_table: ClassTable,
                         meta: dict[str, object]) -> pl.LightningModule:
        from masklab.tasks.semantic_module import SemanticModule

        return SemanticModule(model, loss, optimizer, scheduler, class_table, meta)

    # -- predictions -----------------------------------------------------------------------------------
    def predict(self, predictor: Predictor, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class ids (H_i, W_i) uint8 per image (H_i, W_i, 3) uint8: the argmax of the predictor's
        logits, which it has already brought back to each image's own size."""
        return predictor.classes(images)

    def label_map(self, root: Path, sample: Sample) -> np.ndarray:
        """The sample's mask, (H, W) uint8 class ids."""
        from masklab.data.images import read_mask

        if sample.mask is None:
            raise UserError(f"{root}: sample '{sample.id}' has no mask (status {sample.status}); only labeled samples "
                            "have a label map")
        return read_mask(Path(root) / sample.mask)

    def class_probabilities(self, predictor: Predictor, images: Sequence[np.ndarray],
                            resolution: str) -> list[np.ndarray]:
        """Class probabilities (C, h_i, w_i) float16 per image: the softmax of the predictor's logits at
        ``resolution`` (float16 keeps 3 significant digits, which ranking label errors does not need more
        of, at a quarter of float32's disk)."""
        if not images:
            return []
        import torch

        return [torch.softmax(lg.float(), dim=0).to(torch.float16).cpu().numpy()
                for lg in predictor.logits(images, resolution=resolution)]

    def write_prediction(self, prediction: np.ndarray, path: Path, size: tuple[int, int] | None = None) -> Path:
        """A single-channel PNG of class ids; nearest-resized to ``size`` = (width, height) when given."""
        import cv2
        from PIL import Image

        if size is not None and prediction.shape[::-1] != tuple(size):
            prediction = cv2.resize(prediction, tuple(size), interpolation=cv2.INTER_NEAREST)
        image = Image.fromarray(prediction.astype(np.uint8), mode="L")
        return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))

    def overlay(self, image: np.ndarray, prediction: np.ndarray, class_table: ClassTable,
                alpha: float = 0.45) -> np.ndarray:
        from masklab.report.overlay import overlay_mask

        return overlay_mask(image, prediction, class_table.palette(), class_table.ignore_index, alpha)

    def signature(self) -> tuple[TensorSpec, TensorSpec]:
        return ({"name": "images", "dtype": "uint8", "shape": (-1, -1, -1, 3)},
                {"name": "class_ids", "dtype": "uint8", "shape": (-1, -1, -1)})

    def package_output(self, predictions: Sequence[np.ndarray]) -> np.ndarray:
        """What the registry pyfunc returns for a batch: (N, H, W) uint8 class ids."""
        return np.stack(predictions)

    # -- evaluation ------------------------------------------------------------------------------------
    def score(self, predictor: Predictor, loader: Iterable[Batch], class_table: ClassTable, prefix: str,
              options: ScoreOptions,
              on_prediction: Callable[[str, np.ndarray], None] | None = None) -> EvaluationResult:
        """Pooled and per-image IoU/Dice, boundary IoU, confusions and confidence per sample."""
        from masklab.evaluation.evaluate import score_semantic
        from masklab.metrics.boundary import DEFAULT_IGNORE_CONVENTION

        return score_semantic(predictor, loader, class_table, prefix=prefix,
                              boundary=bool(options.get("boundary", True)),
                              dilation_ratio=option(options, "dilation_ratio", 0.02),
                              low_confidence=option(options, "low_confidence", 0.5),
                              boundary_ignore=str(options.get("boundary_ignore") or DEFAULT_IGNORE_CONVENTION),
                              on_prediction=on_prediction, resolution=str(options.get("resolution") or "original"))

    def evaluation_files(self, result: EvaluationResult, folder: Path, split: str) -> list[Path]:
        """Metrics JSON, per-class CSV, per-sample Parquet, confusion tables, per-class bars and heatmap."""
        from masklab.evaluation.analysis import row_normalised
        from masklab.evaluation.evaluate import write_evaluation
        from masklab.report.plots import confusion_heatmap, per_class_bars

        files = write_evaluation(result, folder, split)
        files.append(per_class_bars(result.per_class, folder / f"{split}_per_class.png"))
        files.append(confusion_heatmap(row_normalised(result.confusion), result.class_names,
                                       folder / f"{split}_confusion.png"))
        return files

    def summary_table(self, result: EvaluationResult, title: str) -> RenderableType:
        from masklab.evaluation.evaluate import class_table_text

        return class_table_text(result, title)
