"""The task interface every target type implements (see masklab.tasks and docs/tasks.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Task(Protocol):
    """What the workflows need to know about a target type; methods take plain values.

    Shapes are per task; each implementation documents them. ``model`` is always an ``nn.Module``
    that takes raw (N, 3, H, W) uint8 pixels (normalisation lives inside it).
    """

    name: str

    # -- data ------------------------------------------------------------------------------------------
    def datamodule(self, dataset: Any, train_transform: Any, eval_transform: Any, batch_size: int,
                   num_workers: int, seed: int) -> Any:
        """The LightningDataModule over ``dataset``'s train/val/test splits."""

    def eval_dataset(self, dataset: Any, samples: Sequence[Any], rule: Any = None) -> Any:
        """A torch Dataset of ``samples`` for scoring at their original size (items carry ``id``), or
        at the network's size when ``rule`` (an InputRule) is given."""

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Batch items (a variable number of objects per item is the task's business)."""

    # -- model and training ----------------------------------------------------------------------------
    def build_model(self, model_cfg: Any, class_table: Any) -> Any:
        """A new model for ``class_table`` from a model config node."""

    def model_from_spec(self, spec: dict[str, Any], class_table: Any, code_root: Path | None = None,
                        where: str | None = None) -> Any:
        """Rebuild a model from a stored spec (checkpoint/package), without reading weights; user code may
        come from ``code_root`` only (named ``where`` in errors)."""

    def build_loss(self, loss_cfg: Any, class_table: Any) -> Any:
        """The training loss from a loss config node."""

    def lightning_module(self, model: Any, loss: Any, optimizer: Callable[..., Any], scheduler: Any,
                         class_table: Any, meta: dict[str, Any]) -> Any:
        """The LightningModule: training and validation steps, validation metrics."""

    # -- predictions -----------------------------------------------------------------------------------
    def predict(self, predictor: Any, images: Sequence[np.ndarray]) -> list[Any]:
        """Predictions for (H_i, W_i, 3) uint8 images at their own size, from an inference Predictor."""

    def label_map(self, root: Path, sample: Any) -> np.ndarray:
        """(H, W) uint8 class ids of a labeled sample's target (the semantic view of any target)."""

    def class_probabilities(self, predictor: Any, images: Sequence[np.ndarray], resolution: str) -> list[np.ndarray]:
        """Class probabilities (C, h_i, w_i) per image, compact (float16), at ``resolution`` ("model" or
        "original"; see ``Predictor.logits``): the semantic view of any model's prediction, which
        cross-validation keeps out of fold and active learning scores. Raises UserError for a task that
        has none yet."""

    def write_prediction(self, prediction: Any, path: Path, size: tuple[int, int] | None = None) -> Path:
        """Write a prediction (resized to ``size`` = (width, height) when given); returns the path."""

    def overlay(self, image: np.ndarray, prediction: Any, class_table: Any, alpha: float) -> np.ndarray:
        """(H, W, 3) uint8: the prediction drawn over the image."""

    def index_record(self, name: str, prediction: Any) -> Any | None:
        """A compact entry for the index of a folder's predictions (``name``: the image's path relative to the
        input folder, without suffix), or None when the task writes no index."""

    def write_predictions_index(self, records: Sequence[Any], folder: Path) -> Path | None:
        """After a folder's predictions: write the file that indexes them (instance: a COCO results JSON)."""

    def signature(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Registry package (input, output) tensor specs: {"name", "dtype", "shape"}."""

    def package_output(self, predictions: Sequence[Any]) -> np.ndarray:
        """The registry pyfunc's output array for a batch of predictions (the signature's output)."""

    # -- evaluation ------------------------------------------------------------------------------------
    def score(self, predictor: Any, loader: Any, class_table: Any, prefix: str, options: dict[str, Any],
              on_prediction: Callable[[str, Any], None] | None = None) -> Any:
        """Run an inference Predictor over ``loader``: an EvaluationResult (metrics, per-class and
        per-sample tables)."""

    def evaluation_files(self, result: Any, folder: Path, split: str) -> list[Path]:
        """Write the evaluation's tables and plots into ``folder``; returns the files."""

    def summary_table(self, result: Any, title: str) -> Any:
        """A rich renderable summarising ``result`` for the console."""
