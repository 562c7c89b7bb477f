"""``explore``: what the explorer server shows, found from an MLflow run's evaluation, a table, or a dataset."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from masklab.console import logger
from masklab.errors import UserError


@dataclass
class ExploreSources:
    """The dataset folder, the main per-sample table (None: browse the manifest), predictions folder, split and
    title. ``downloads``: the temporary folder holding artifacts copied from a remote store (None when read in
    place); call :meth:`cleanup` when the server stops."""

    dataset_root: Path
    table: Path | None = None
    pred_dir: Path | None = None
    split: str | None = None
    title: str | None = None
    view: dict | None = None  # what the page opens with (an evaluation: worst first by its headline metric)
    notes: list[str] = field(default_factory=list)
    downloads: tempfile.TemporaryDirectory | None = None

    def cleanup(self) -> None:
        if self.downloads is not None:
            self.downloads.cleanup()
            self.downloads = None


def explore_sources(tracking_uri: str, run_id: str | None = None, split: str | None = None,
                    table: str | Path | None = None, pred_dir: str | Path | None = None,
                    dataset_root: str | Path | None = None) -> ExploreSources:
    """What to explore: with ``run_id``, that run's evaluation of ``split`` (default val): its
    ``evaluation/<split>_per_sample.parquet`` and ``evaluation/<split>_pred/`` (read in place from a local artifact
    store, downloaded otherwise) over the dataset the run recorded (or ``dataset_root``); without, ``table`` (a
    per-sample Parquet file) and ``pred_dir`` over ``dataset_root``. Raises UserError naming what is missing."""
    if not run_id:
        if dataset_root is None:
            raise UserError("explore: no dataset; pass data=<name>, data.root=<folder> or run_id=<MLflow run>")
        return ExploreSources(Path(dataset_root), Path(table) if table else None, Path(pred_dir) if pred_dir else None,
                              split or None)
    from masklab.tracking.runs import RunLog

    split = split or "val"
    try:
        run = RunLog(tracking_uri, str(run_id))
        _, _, tags = run.run_data()
    except Exception as exc:
        raise UserError(f"run_id={run_id}: no such MLflow run in {tracking_uri}") from exc
    root = dataset_root or tags.get("masklab.dataset_root")
    if not root:
        raise UserError(f"run_id={run_id}: the run records no dataset (tag masklab.dataset_root); pass "
                        f"dataset_root=<folder>")
    sources = ExploreSources(Path(root), split=split, title=f"run {str(run_id)[:8]} / {Path(root).name} / {split}")
    table_name, pred_name = f"evaluation/{split}_per_sample.parquet", f"evaluation/{split}_pred"
    found_table, found_pred = run.local_artifact(table_name), run.local_artifact(pred_name)
    if found_table is None:
        sources.downloads = tempfile.TemporaryDirectory(prefix="masklab-explore-")
        found_table = run.download(table_name, Path(sources.downloads.name))
        if found_table is None:
            sources.cleanup()
            raise UserError(f"run_id={run_id}: no evaluation of split '{split}' ({table_name}); run `masklab evaluate "
                            f"run_id={run_id} split={split}` first")
        # A remote store: the predictions are copied once, for the life of the server.
        logger(__name__).info("Downloading %s of run %s ...", pred_name, run_id)
        found_pred = run.download(pred_name, Path(sources.downloads.name))
    if found_pred is None:
        sources.notes.append(f"run {run_id} has no {pred_name}: predictions are not shown")
    sources.table, sources.pred_dir = found_table, found_pred
    import pyarrow.parquet as pq

    from masklab.explore.pages import worst_first
    from masklab.tasks import tagged_task

    columns = pq.read_schema(found_table).names if found_table.suffix == ".parquet" else []
    sources.view = worst_first(tagged_task(tags.get("masklab.task")).gate_metric, columns)
    return sources



def open_explorer(tracking_uri: str, run_id: str | None = None, split: str | None = None,
                  table: str | Path | None = None, tables: list[str | Path] | tuple = (),
                  pred_dir: str | Path | None = None, dataset_root: str | Path | None = None,
                  title: str | None = None):
    """The explorer app (not yet started; see :class:`masklab.explore.ExploreApp`) of what
    :func:`explore_sources` finds, and those sources (call ``cleanup()`` once the app has stopped)."""
    from masklab.explore import ExploreApp

    sources = explore_sources(tracking_uri, run_id, split, table, pred_dir, dataset_root)
    for note in sources.notes:
        logger(__name__).warning(note)
    try:
        app = ExploreApp(sources.dataset_root, sources.table, list(tables), sources.pred_dir, sources.split,
                         title or sources.title, view=sources.view)
    except BaseException:
        sources.cleanup()
        raise
    return app, sources
