"""Prediction files for a list of image files, with the model's own input rule, in batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from masklab.console import progress
from masklab.files import atomic_write
from masklab.inference.engine import Predictor

if TYPE_CHECKING:
    from masklab.inference.package import Package

P = TypeVar("P")


class FolderPredictions(Protocol[P]):
    """What writing a folder's predictions needs of a task (every ``masklab.tasks`` task is one)."""

    def predict(self, predictor: Predictor, images: Sequence[np.ndarray]) -> list[P]: ...

    def write_prediction(self, prediction: P, path: Path, size: tuple[int, int] | None = None) -> Path: ...

    def overlay(self, image: np.ndarray, prediction: P, class_table: Any, alpha: float = 0.45) -> np.ndarray: ...

    def index_record(self, name: str, prediction: P) -> list[dict[str, object]] | None: ...

    def write_predictions_index(self, records: Sequence[list[dict[str, object]]], folder: Path) -> Path | None: ...


def png_writer(image: Image.Image) -> Callable[[Path], None]:
    """A writer for ``atomic_write`` that saves ``image`` as PNG."""
    return lambda path: image.save(path, format="PNG")


def predict_folder(task: FolderPredictions[P], package: Package, inputs: Sequence[Path], input_root: Path,
                   output: Path, overlay: bool = False, alpha: float = 0.45, device: str = "auto",
                   batch_size: int = 8, tta: str = "none") -> tuple[list[Path], Path | None]:
    """Write ``<output>/<relative path>.png`` predictions (and ``_overlay.png``) of ``package`` (a loaded
    model package: model, class table, input rule) for ``inputs``; ``task`` is the package's task.

    Paths keep their place relative to ``input_root`` (a folder) so equal stems in different
    subfolders do not collide. The package's task turns the predictor's output into predictions and
    writes them (atomically), then any index of them all (an instance model's COCO results JSON); a
    progress bar counts the batches on a terminal. Returns (prediction files, the index or None).
    """
    from masklab.data.images import read_image

    predictor = Predictor(package.model, package.input_rule, device, batch_size, tta=tta)
    root = Path(input_root) if Path(input_root).is_dir() else Path(input_root).parent
    written: list[Path] = []
    records: list[list[dict[str, object]]] = []  # per-image entries of the task's index (instance: COCO results)
    starts = range(0, len(inputs), predictor.batch_size)
    for start in progress(starts, f"predicting {len(inputs)} images (batches of {predictor.batch_size})"):
        paths = list(inputs[start:start + predictor.batch_size])
        images = [read_image(p) for p in paths]
        for path, image, prediction in zip(paths, images, task.predict(predictor, images)):
            rel = Path(path).relative_to(root).with_suffix("")
            target = Path(output) / f"{rel}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            task.write_prediction(prediction, target)
            record = task.index_record(rel.as_posix(), prediction)
            if record is not None:
                records.append(record)
            if overlay:
                blended = Image.fromarray(task.overlay(image, prediction, package.class_table, alpha))
                atomic_write(target.with_name(f"{target.stem}_overlay.png"), png_writer(blended))
            written.append(target)
    index = task.write_predictions_index(records, Path(output)) if records else None
    return written, index
