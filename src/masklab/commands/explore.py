"""`masklab explore`: serve the explorer app over per-sample tables on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.console import result
from masklab.errors import UserError


def explore_app(cfg: DictConfig):
    """The (not yet started) ExploreApp the config describes, and the sources it reads (clean them up after)."""
    from masklab.data.open import missing_dataset_error
    from masklab.workflows.exploring import open_explorer

    root = cfg.dataset_root
    if root is None and not cfg.run_id:
        root = cfg.data.root
        if not Path(root).exists():
            raise missing_dataset_error(cfg.data)
    if isinstance(cfg.tables, str):
        raise UserError(f"tables={cfg.tables}: expected a list, e.g. tables=[{cfg.tables}]")
    return open_explorer(cfg.logger.tracking_uri, cfg.run_id, cfg.split, cfg.table, list(cfg.tables or []),
                         cfg.pred_dir, root, cfg.title)


def explore(cfg: DictConfig) -> None:
    app, sources = explore_app(cfg)
    try:
        app.serve(int(cfg.port), bool(cfg.open_browser), announce=lambda line: result(line, __name__))
    finally:
        sources.cleanup()
