"""`masklab report run=<id>` and `masklab data browse data=<name>`: the HTML explorer."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.console import logger, result
from masklab.data.open import open_dataset
from masklab.errors import UserError


def browse(cfg: DictConfig) -> None:
    """Explorer of a dataset without predictions."""
    from masklab.explore import explorer_samples, write_explorer

    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    samples = explorer_samples(dataset, cfg.split, None)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{cfg.split}' is empty")
    out = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "browse"
    index = write_explorer(out, dataset.class_table, samples, None, {"problems": []},
                           title=f"{dataset.name} ({cfg.split}, {len(samples)} samples)")
    result(f"Wrote {index}  (open it in a browser; no server needed)", __name__)


def report(cfg: DictConfig) -> None:
    """Explorer of one run's evaluation: per-sample table, predictions, plots, optional comparison."""
    from masklab.workflows import report as write_report

    out = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "report"
    done = write_report(str(cfg.run), out, cfg.logger.tracking_uri, str(cfg.split), cfg.dataset_root)
    for p in done.problems:
        logger(__name__).warning(p)
    result(f"Wrote {done.index} and logged it to MLflow run {done.run_id} as report/index.html", __name__)
