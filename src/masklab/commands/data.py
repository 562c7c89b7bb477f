"""`masklab data synth|import|export|check|record-edits|mark|preview`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.commands.common import commit_data_version
from masklab.config import to_plain
from masklab.console import logger, result
from masklab.data.manifest import summary
from masklab.data.open import missing_dataset_error, open_dataset
from masklab.errors import EXIT_PROBLEMS, UserError

log = logger(__name__)


def synth(cfg: DictConfig) -> None:
    from masklab.data.synth import synthesize

    if not cfg.data.get("synth"):
        raise UserError(f"data={cfg.data.name} has no 'synth' settings; use data=synthetic")
    root = Path(cfg.data.root)
    if root.exists() and not cfg.overwrite:
        raise UserError(f"{root} already exists; pass overwrite=true to replace it")
    dataset = synthesize(root, **to_plain(cfg.data.synth), overwrite=cfg.overwrite)
    result(f"Wrote {summary(dataset)}", __name__)


def import_(cfg: DictConfig) -> None:
    from masklab.data.check import format_problems
    from masklab.workflows import import_dataset

    done = import_dataset(cfg)
    result(f"{'Updated' if done.added_to_existing else 'Imported'} {summary(done.dataset)}", __name__)
    for line in done.notes:
        result(line, __name__)
    if done.added_to_existing:
        commit_data_version(done.dataset.root)  # new pool images: a new data version
    if done.problems:
        log.warning("the data check found problems in the imported dataset:\n%s", format_problems(done.problems))


def export(cfg: DictConfig) -> None:
    from masklab.workflows import export_dataset

    done = export_dataset(cfg)
    result(f"Wrote {done.path}: {done.images} images, {done.annotations} annotations, {done.categories} categories",
           __name__)


def check(cfg: DictConfig) -> None:
    from masklab.data.check import ObjectStats, check_dataset, format_problems
    from masklab.data.errors import DatasetFormatError

    load_error = None
    try:
        dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    except DatasetFormatError as exc:
        if not Path(cfg.data.root).is_dir():
            raise
        # A bad row or classes.yaml: the check below lists it with every other problem.
        dataset, load_error = None, exc
    stats = ObjectStats()
    problems = check_dataset(Path(cfg.data.root) if dataset is None else dataset.root, stats)
    if load_error is not None and not any(p.severity == "error" for p in problems):
        raise load_error  # the check should have found what stops loading; never call such a dataset clean
    if dataset is not None:
        result(summary(dataset), __name__)
        _class_pixels(dataset, cfg.paths.get("cache_dir"))
    for line in stats.lines(None if dataset is None else dataset.class_table):
        result(line, __name__)
    result(format_problems(problems) if problems else "No problems found.", __name__)
    if any(p.severity == "error" for p in problems):
        raise SystemExit(EXIT_PROBLEMS)


def _class_pixels(dataset, cache_dir) -> None:
    """The train split's class shares (what loss.class_weights=auto weighs by), when its masks are readable."""
    from masklab.data.class_pixels import class_pixels_line, mask_class_pixels

    try:
        counts = mask_class_pixels(dataset, "train", cache_dir)
    except (OSError, ValueError):  # an unreadable mask: the check below names it
        return
    if counts is not None:
        result(class_pixels_line(counts, dataset.class_table.names), __name__)


def record_edits(cfg: DictConfig) -> None:
    from masklab.data.edits import record_mask_edits

    root = Path(cfg.data.root)
    if not root.is_dir():
        raise missing_dataset_error(cfg.data)
    changed = record_mask_edits(root, str(cfg.get("labelled_split", "train")))
    if not changed:
        result(f"{root}: no mask differs from its manifest checksum and no pool sample has a new one; "
               "nothing to record", __name__)
        return
    result(f"{root}: recorded {len(changed)} new or edited label(s): {', '.join(changed)}", __name__)
    commit_data_version(root)


def mark(cfg: DictConfig) -> None:
    from masklab.data.edits import mark_status

    root = Path(cfg.data.root)
    if not root.is_dir():
        raise missing_dataset_error(cfg.data)
    ids = read_ids(cfg.ids)
    changed = mark_status(root, ids, str(cfg.status))
    result(f"{root}: {len(changed)} of {len(ids)} sample(s) now {cfg.status}"
           + (f": {', '.join(changed[:20])}" + (" ..." if len(changed) > 20 else "") if changed else ""), __name__)
    if changed:
        commit_data_version(root)


def read_ids(ids) -> list[str]:
    """Sample ids from ``ids=``: a list, a CSV file with an ``id`` column, or a text file of one id per line."""
    import csv

    if not isinstance(ids, str):
        return [str(i) for i in ids]
    path = Path(ids)
    if not path.is_file():
        raise UserError(f"ids={ids}: no such file (expected a CSV with an 'id' column, a file of one id per line, "
                        "or a list [id1,id2])")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(lines)
        if "id" not in (reader.fieldnames or []):
            raise UserError(f"{path}: no 'id' column (columns: {reader.fieldnames or 'none'})")
        return [r["id"] for r in reader if r["id"]]
    return [line.strip() for line in lines if line.strip()]


def preview(cfg: DictConfig) -> None:
    from masklab.augment import build_pipeline
    from masklab.data.datamodule import SegmentationSplit
    from masklab.explore import shows_objects
    from masklab.report.preview import legend, preview_grid, save_preview

    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    samples = dataset.split(cfg.split)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{cfg.split}' is empty")
    pipeline = build_pipeline(cfg.augment.train, seed=cfg.seed, ignore_index=dataset.class_table.ignore_index)
    if any(shows_objects(s) for s in samples) and all(s.objects or s.instances for s in samples):
        from masklab.tasks.instance_data import InstanceSplit  # draws objects, augmented with the image

        split = InstanceSplit(dataset, samples, pipeline)
    else:
        split = SegmentationSplit(dataset, samples, pipeline)
    grid = preview_grid(split, dataset.class_table, cfg.rows, cfg.cols, cfg.repeats, cfg.alpha)
    path = save_preview(grid, legend(dataset.class_table), Path(cfg.output))
    result(f"Wrote {path}", __name__)
