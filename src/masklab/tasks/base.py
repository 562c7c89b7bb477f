"""The task interface every target type implements (see masklab.tasks and docs/tasks.md).

A task is the only code that knows what a target looks like. Workflows hold one and call its methods; the
pieces below (inference, evaluation, tracking, ...) are handed it and never import ``masklab.tasks``.
Constants a workflow or a config needs (the monitored metric, the gate metric, what a prediction is) are
class attributes, so they are read without building anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, Literal, TypedDict, TypeVar

import numpy as np

if TYPE_CHECKING:  # types only: importing them would pull torch and Lightning into `masklab --help`
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

P = TypeVar("P")  # a task's prediction for one image
Batch = dict[str, list[object]]  # a scoring batch: per key, one value per item
OutputKind = Literal["class_map", "objects"]
# The evaluation options a task scores with (the ``evaluation`` config node as plain values).
ScoreOptions = Mapping[str, "float | int | str | bool | None"]


class TensorSpec(TypedDict):
    """One side of a registry package's signature."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def option(options: ScoreOptions, key: str, default: float) -> float:
    """A number of the evaluation options, ``default`` when it is absent or null."""
    value = options.get(key)
    return default if value is None else float(value)


class Task(ABC, Generic[P]):
    """What the workflows need to know about a target type; methods take plain values.

    ``model`` is always an ``nn.Module`` that takes raw (N, 3, H, W) uint8 pixels (normalisation lives inside
    it). ``P`` is the task's prediction for one image at its own size.
    """

    name: ClassVar[str]
    # The validation metric that picks the best checkpoint (train.yaml's ``monitor``) and is maximised.
    monitor: ClassVar[str]
    # The metric the promotion gate compares by default (``registry.gate.metric=auto``), as evaluation logs it.
    gate_metric: ClassVar[str]
    # Per-epoch metrics kept as training curves (plots, the pipeline's history.csv, the report).
    curve_metrics: ClassVar[tuple[str, ...]]
    # Every name evaluation may log after ``eval/<split>/`` (what ``registry.gate.metric`` may take): ``<class>``
    # stands for a class name, ``<n>`` for a number (COCO's AR at each maxDets). tests/test_registry and
    # tests/test_instance_task check real evaluations against it.
    evaluation_metrics: ClassVar[tuple[str, ...]]
    # What one prediction is: a class map (H, W) or a set of objects.
    output_kind: ClassVar[OutputKind]

    @classmethod
    def logs_metric(cls, name: str) -> bool:
        """Whether evaluation may log ``name`` (after ``eval/<split>/``), by :attr:`evaluation_metrics`."""
        import re

        def pattern(entry: str) -> str:
            return re.escape(entry).replace(re.escape("<class>"), ".+").replace(re.escape("<n>"), r"\d+")

        return any(re.fullmatch(pattern(entry), name) for entry in cls.evaluation_metrics)

    # -- data ------------------------------------------------------------------------------------------
    @abstractmethod
    def datamodule(self, dataset: Dataset, train_transform: Callable[..., object],
                   eval_transform: Callable[..., object], batch_size: int, num_workers: int,
                   seed: int) -> pl.LightningDataModule:
        """The LightningDataModule over ``dataset``'s train/val/test splits."""

    @abstractmethod
    def eval_dataset(self, dataset: Dataset, samples: Sequence[Sample],
                     rule: InputRule | None = None) -> TorchDataset[dict[str, object]]:
        """A torch Dataset of ``samples`` for scoring at their original size (items carry ``id``), or
        at the network's size when ``rule`` is given."""

    @abstractmethod
    def collate(self, items: list[dict[str, object]]) -> Batch:
        """Batch items (a variable number of objects per item is the task's business)."""

    # -- model and training ----------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, model_cfg: DictConfig, class_table: ClassTable) -> nn.Module:
        """A new model for ``class_table`` from a model config node."""

    @abstractmethod
    def build_loss(self, loss_cfg: DictConfig, class_table: ClassTable) -> nn.Module:
        """The training loss from a loss config node."""

    def training_class_pixels(self, dataset: Dataset, cache_dir: str | Path | None) -> ClassPixels:
        """Pixels per class of the labeled train samples' label maps: what ``loss.class_weights=auto`` weights
        the loss's classes by (counts cached per label file, masklab.data.class_pixels)."""
        from masklab.data.class_pixels import count_class_pixels

        table = dataset.class_table
        return count_class_pixels(dataset.labeled("train"), lambda s: self.label_map(dataset.root, s),
                                  table.num_classes, table.ignore_index, dataset.manifest_hash, cache_dir)

    @abstractmethod
    def lightning_module(self, model: nn.Module, loss: nn.Module, optimizer: Callable[..., Optimizer],
                         scheduler: Callable[..., object] | None, class_table: ClassTable,
                         meta: dict[str, object]) -> pl.LightningModule:
        """The LightningModule: training and validation steps, validation metrics."""

    # -- predictions -----------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, predictor: Predictor, images: Sequence[np.ndarray]) -> list[P]:
        """Predictions for (H_i, W_i, 3) uint8 images at their own size, from an inference Predictor."""

    @abstractmethod
    def label_map(self, root: Path, sample: Sample) -> np.ndarray:
        """(H, W) uint8 class ids of a labeled sample's target (the semantic view of any target)."""

    @abstractmethod
    def class_probabilities(self, predictor: Predictor, images: Sequence[np.ndarray],
                            resolution: str) -> list[np.ndarray]:
        """Class probabilities (C, h_i, w_i) per image, compact (float16), at ``resolution`` ("model" or
        "original"; see ``Predictor.logits``): the semantic view of any model's prediction, which
        cross-validation keeps out of fold and active learning scores."""

    @abstractmethod
    def write_prediction(self, prediction: P, path: Path, size: tuple[int, int] | None = None) -> Path:
        """Write a prediction (resized to ``size`` = (width, height) when given); returns the path."""

    @abstractmethod
    def overlay(self, image: np.ndarray, prediction: P, class_table: ClassTable, alpha: float = 0.45) -> np.ndarray:
        """(H, W, 3) uint8: the prediction drawn over the image."""

    def index_record(self, name: str, prediction: P) -> list[dict[str, object]] | None:
        """A compact entry for the index of a folder's predictions (``name``: the image's path relative to the
        input folder, without suffix), or None when the task writes no index (the default)."""
        return None

    def write_predictions_index(self, records: Sequence[list[dict[str, object]]], folder: Path) -> Path | None:
        """After a folder's predictions: write the file that indexes them; None when there is none (the default)."""
        return None

    @abstractmethod
    def signature(self) -> tuple[TensorSpec, TensorSpec]:
        """Registry package (input, output) tensor specs."""

    @abstractmethod
    def package_output(self, predictions: Sequence[P]) -> np.ndarray:
        """The registry pyfunc's output array for a batch of predictions (the signature's output)."""

    # -- evaluation ------------------------------------------------------------------------------------
    @abstractmethod
    def score(self, predictor: Predictor, loader: Iterable[Batch], class_table: ClassTable, prefix: str,
              options: ScoreOptions,
              on_prediction: Callable[[str, P], None] | None = None) -> EvaluationResult:
        """Run an inference Predictor over ``loader``: an EvaluationResult (metrics, per-class and
        per-sample tables)."""

    @abstractmethod
    def evaluation_files(self, result: EvaluationResult, folder: Path, split: str) -> list[Path]:
        """Write the evaluation's tables and plots into ``folder``; returns the files."""

    @abstractmethod
    def summary_table(self, result: EvaluationResult, title: str) -> RenderableType:
        """A rich renderable summarising ``result`` for the console."""
