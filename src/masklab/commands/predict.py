"""`masklab predict`: masks (and optional overlays) for a folder or a file of images."""

from __future__ import annotations

from omegaconf import DictConfig

from masklab.console import result


def predict(cfg: DictConfig) -> None:
    from masklab.workflows import predict as run_prediction

    done = run_prediction(str(cfg.model_ref), cfg.input, cfg.output, cfg.logger.tracking_uri,
                          overlay=bool(cfg.overlay), alpha=float(cfg.alpha), overwrite=bool(cfg.overwrite),
                          device=str(cfg.device), batch_size=int(cfg.batch_size))
    result(f"Wrote {len(done.written)} masks to {cfg.output} (model loaded in {done.load_seconds:.2f} s, "
           f"{done.images_per_second:.1f} images/s)" + (f"; index: {done.index}" if done.index else ""), __name__)
