"""``report``: the self-contained HTML explorer of a run's evaluation (also what the DVC report stage writes)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from masklab.data.errors import DatasetFormatError
from masklab.data.images import read_instances
from masklab.data.manifest import Dataset, Sample, load_dataset
from masklab.data.objects import read_objects
from masklab.data.sample_files import safe_name
from masklab.errors import UserError
from masklab.tasks import tagged_task

# The per-sample column an instance evaluation writes its per-object matches to (a JSON list per row,
# see masklab.metrics.instance): the explorer draws it on the objects rather than listing it as a column.
MATCHES_COLUMN = "matches"


@dataclass
class Report:
    """The explorer's index.html, the run it was logged to, and notes on what was missing."""

    index: Path
    run_id: str
    problems: list[str] = field(default_factory=list)


def explorer_samples(dataset: Dataset, split: str | None, pred_dir: Path | None, objects: bool | None = None,
                     matches: Mapping[str, list] | None = None) -> list:
    """The explorer's samples of ``split`` (None/"all": every sample), with predictions from ``pred_dir``.

    objects: False shows class masks (predictions: class-index PNGs); True shows instance objects: the
    ground truth from each sample's objects (or v1 instance map), predictions from the 16-bit id maps
    ``pred_dir/<safe id>.png`` (id k + 1 = prediction k) and their outcomes from ``matches`` {sample id:
    per-object match list}; None (a dataset browse) picks objects for each sample where
    :func:`shows_objects`. Objects are read only when the explorer writes that sample, so memory stays bounded.
    """
    from masklab.explore import ExplorerSample

    chosen = dataset.samples if split in (None, "all") else dataset.split(split)
    out = []
    for s in chosen:
        pred: Path | None = pred_dir / f"{safe_name(s.id)}.png" if pred_dir else None
        pred = pred if pred is not None and pred.is_file() else None
        if objects or (objects is None and shows_objects(s)):
            found = matches.get(str(s.id)) if matches is not None else None
            out.append(ExplorerSample(s.id, s.split, dataset.root / s.image,
                                      objects=_object_loader(dataset.root, s, pred, found)))
        else:
            out.append(ExplorerSample(s.id, s.split, dataset.root / s.image,
                                      dataset.root / s.mask if s.mask else None, pred))
    return out


def shows_objects(sample: Sample) -> bool:
    """Whether a dataset view (browse, preview) draws the sample's instance objects rather than its class mask:
    when it has an objects file (instance importers write one, plus a class mask derived from it), or a v1
    instance map and no class mask. The v1 synthetic data keeps its class-mask view: its instance maps are a
    by-product of a semantic generator."""
    return bool(sample.objects or (sample.instances and not sample.mask))


def _object_loader(root: Path, sample: Sample, pred: Path | None, matches: list | None) -> Callable[[], Any]:
    """A loader of one sample's ExplorerObjects: ground-truth objects, the predicted id map, the matches."""

    def load() -> Any:
        from masklab.explore import ExplorerObjects

        truth = read_objects(root, sample)
        ids = read_instances(pred) if pred is not None else None
        return ExplorerObjects(truth.masks, truth.class_ids, truth.iscrowd.astype(bool), ids, matches)

    return load


def split_matches(table: pd.DataFrame | None) -> tuple[pd.DataFrame | None, dict[str, list] | None, list[str]]:
    """(the table without its matches column, {sample id: match list}, problems); (table, None, []) when the
    table has no matches column. A row whose matches are not a JSON list is named in problems and left out."""
    if table is None or MATCHES_COLUMN not in table.columns or "id" not in table.columns:
        return table, None, []
    found: dict[str, list] = {}
    bad: list[str] = []
    for sid, text in zip(table["id"].astype(str), table[MATCHES_COLUMN]):
        try:
            value = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            found[sid] = value
        elif isinstance(text, str):  # a missing value (None, NaN) is simply no matches
            bad.append(sid)
    problems = []
    if bad:
        problems.append(f"the per-sample table's '{MATCHES_COLUMN}' of {len(bad)} sample(s) is not a JSON list "
                        f"({', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}); their objects are shown without "
                        f"outcomes")
    return table.drop(columns=[MATCHES_COLUMN]), found, problems


def report(run_id: str, output: str | Path, tracking_uri: str, split: str = "val",
           dataset_root: str | Path | None = None) -> Report:
    """The HTML explorer of run ``run_id``'s evaluation of ``split`` (per-sample table, predictions,
    plots, optional comparison), written to ``output`` and logged to the run as ``report/index.html``.
    ``dataset_root``: the dataset folder when not the one the run recorded."""
    from masklab.evaluation.analysis import row_normalised
    from masklab.explore import write_explorer
    from masklab.tracking.runs import RunLog

    uri = tracking_uri
    try:
        run = RunLog(uri, str(run_id))
        metrics, _, tags = run.run_data()
    except Exception as exc:
        raise UserError(f"run={run_id}: no such MLflow run in {uri}") from exc
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        table_path = run.download(f"evaluation/{split}_per_sample.parquet", tmp_path)
        pred_dir = run.download(f"evaluation/{split}_pred", tmp_path)
        per_class_path = run.download(f"evaluation/{split}_per_class.csv", tmp_path)
        confusion_path = run.download(f"evaluation/{split}_confusion.csv", tmp_path)
        compare_path = run.download(f"evaluation/{split}_compare.parquet", tmp_path)
        if table_path is None:
            problems.append(f"run {run_id} has no evaluation of split '{split}' (evaluation/{split}_per_sample"
                            f".parquet): run `masklab evaluate run_id={run_id} split={split}` first; showing the "
                            f"dataset and training curves only")
        dataset = _run_dataset(dataset_root, tags, problems)
        table = pd.read_parquet(table_path) if table_path else None
        table, matches, bad_matches = split_matches(table)
        problems.extend(bad_matches)
        task = tagged_task(tags.get("masklab.task"))
        instance = matches is not None or task.output_kind == "objects"
        summary = {
            "headline": {k.split("/", 2)[-1]: v for k, v in metrics.items() if k.startswith(f"eval/{split}/")
                         and "/" not in k.split("/", 2)[-1]},
            "curves": run.metric_history(task.curve_metrics),
            "problems": problems,
        }
        if per_class_path:
            summary["per_class"] = json.loads(pd.read_csv(per_class_path).to_json(orient="records"))
        if confusion_path:
            cm = pd.read_csv(confusion_path, index_col=0)
            summary["confusion"] = {"labels": list(cm.columns), "matrix": row_normalised(cm.to_numpy()).tolist()}
        if compare_path:
            changed = pd.read_parquet(compare_path)
            changed = changed.reindex(changed["delta_mIoU"].abs().sort_values(ascending=False).index).head(50)
            summary["changed"] = json.loads(changed.to_json(orient="records"))
        if dataset is None:
            raise UserError(f"run={run_id}: its dataset cannot be opened ({'; '.join(problems)}); "
                            f"pass dataset_root=<folder> to point at it")
        samples = explorer_samples(dataset, split, pred_dir, objects=instance, matches=matches)
        out = Path(output)
        index = write_explorer(out, dataset.class_table, samples, table, summary,
                               title=f"run {run_id[:8]} / {dataset.name} / {split}",
                               mlflow_artifact={"run_id": str(run_id), "path": "report"})
    run.directory(out, "report")
    return Report(Path(index), str(run_id), problems)


def _run_dataset(dataset_root: str | Path | None, tags: dict, problems: list[str]) -> Dataset | None:
    """The dataset the run was evaluated on: ``dataset_root`` when given, else the run's dataset_root tag."""
    root_text = str(dataset_root or "") or tags.get("masklab.dataset_root", "")
    if not root_text:
        problems.append("the run records no dataset (tag masklab.dataset_root)")
        return None
    try:
        return load_dataset(Path(root_text))
    except DatasetFormatError as exc:
        problems.append(str(exc))
        return None
