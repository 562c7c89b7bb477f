"""``predict``: masks (and overlays) for a folder or a file of images from any model reference."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from masklab.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Prediction:
    """Prediction files written (one per image), seconds to load the model, images per second of prediction,
    and the file indexing them all when the task writes one (instance: a COCO results JSON)."""

    written: list[Path]
    load_seconds: float
    images_per_second: float
    index: Path | None = None


def list_inputs(path: Path) -> list[Path]:
    """``path`` itself if a file, else every image under the folder (sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if files:
            return files
        raise UserError(f"input={path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    raise UserError(f"input={path}: no such file or folder")


def predict(model_ref: str, inputs: str | Path, output: str | Path, tracking_uri: str, overlay: bool = False,
            alpha: float = 0.45, overwrite: bool = False, device: str = "auto", batch_size: int = 8,
            tta: str | None = None, engine: str = "auto") -> Prediction:
    """Predict every image of ``inputs`` with the model ``model_ref`` names (``models:/...``, run id,
    checkpoint file, package folder) into ``output``, keeping relative paths; refuses a non-empty
    ``output`` unless ``overwrite``. ``device``: auto (a GPU when there is one), cpu, cuda[:i];
    ``batch_size`` images per forward pass; ``tta``: test-time augmentation (none, flip, flip+scales; None: the
    one the package was evaluated with, recorded in its spec, else none); ``engine``:
    for a registered version, its torch model or the onnx / torchscript export attached to it. Same inference path
    as evaluation."""
    from masklab.inference.folder import predict_folder
    from masklab.tasks import task_for
    from masklab.tracking.model_ref import load_model_ref

    source = Path(inputs)
    files = list_inputs(source)
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output={out} is not empty; pass overwrite=true to write into it")
    start = time.perf_counter()
    package = load_model_ref(str(model_ref), tracking_uri, engine)
    loaded = time.perf_counter()
    written, index = predict_folder(task_for(package.spec), package, files, source, out, overlay=overlay,
                                    alpha=alpha, device=device, batch_size=batch_size,
                                    tta=tta if tta is not None else str(package.spec.get("tta") or "none"))
    done = time.perf_counter()
    return Prediction(written, loaded - start, len(written) / max(done - loaded, 1e-9), index)
