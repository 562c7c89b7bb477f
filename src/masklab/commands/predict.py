"""`masklab predict`: masks (and optional overlays) for a folder or a file of images; `masklab export`: the model
as ONNX or TorchScript, with its parity proof."""

from __future__ import annotations

from omegaconf import DictConfig

from masklab.console import result


def predict(cfg: DictConfig) -> None:
    from masklab.workflows import predict as run_prediction

    done = run_prediction(str(cfg.model_ref), cfg.input, cfg.output, cfg.logger.tracking_uri,
                          overlay=bool(cfg.overlay), alpha=float(cfg.alpha), overwrite=bool(cfg.overwrite),
                          device=str(cfg.device), batch_size=int(cfg.batch_size),
                          tta=None if cfg.tta is None else str(cfg.tta),
                          engine=str(cfg.engine))
    result(f"Wrote {len(done.written)} masks to {cfg.output} (model loaded in {done.load_seconds:.2f} s, "
           f"{done.images_per_second:.1f} images/s)" + (f"; index: {done.index}" if done.index else ""), __name__)


def export(cfg: DictConfig) -> None:
    """Export a model as ONNX or TorchScript with its parity report (masklab.workflows.exporting)."""
    from masklab.workflows import export as run_export

    done = run_export(str(cfg.model_ref), str(cfg.format), cfg.output, cfg.logger.tracking_uri,
                      parity_images=cfg.parity_images, data_dir=cfg.paths.data_dir,
                      parity_count=int(cfg.parity_count), logit_tolerance=float(cfg.logit_tolerance),
                      pixel_agreement=float(cfg.pixel_agreement), overwrite=bool(cfg.overwrite), device=str(cfg.device))
    result(f"Exported {cfg.model_ref} as {cfg.format} to {done.folder}: {done.report.line()}", __name__)
    if done.attached:
        result(f"Attached to the registered version as {done.attached}: masklab predict model={cfg.model_ref} "
               f"engine={cfg.format} input=<images> output=<folder>", __name__)
    result(f"Serve it with onnxruntime alone, or: masklab predict model={done.folder} input=<images> output=<folder>",
           __name__)
