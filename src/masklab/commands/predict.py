"""`masklab predict`: class-index PNG masks (and optional overlays) for a folder or a file of images."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from masklab.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if files:
            return files
        raise UserError(f"input={path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    raise UserError(f"input={path}: no such file or folder")


def predict(cfg: DictConfig) -> None:
    from masklab.evaluation.predict import predict_folder
    from masklab.tracking.model_ref import load_model_ref

    inputs = list_inputs(Path(cfg.input))
    output = Path(cfg.output)
    if output.exists() and any(output.iterdir()) and not cfg.overwrite:
        raise UserError(f"output={output} is not empty; pass overwrite=true to write into it")
    start = time.perf_counter()
    package = load_model_ref(str(cfg.model_ref), cfg.logger.tracking_uri)
    loaded = time.perf_counter()
    written = predict_folder(package.model, package.class_table, package.input_rule, inputs, Path(cfg.input),
                             output, overlay=bool(cfg.overlay), alpha=float(cfg.alpha))
    done = time.perf_counter()
    print(f"Wrote {len(written)} masks to {output} (model loaded in {loaded - start:.2f} s, "
          f"{len(written) / max(done - loaded, 1e-9):.1f} images/s)")
