"""``report``: the self-contained HTML explorer of a run's evaluation (also what the DVC report stage writes)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from masklab.data.errors import DatasetFormatError
from masklab.data.manifest import Dataset, load_dataset
from masklab.errors import UserError
from masklab.tasks import tagged_task


@dataclass
class Report:
    """The explorer's index.html, the run it was logged to, and notes on what was missing."""

    index: Path
    run_id: str
    problems: list[str] = field(default_factory=list)


def report(run_id: str, output: str | Path, tracking_uri: str, split: str = "val",
           dataset_root: str | Path | None = None) -> Report:
    """The HTML explorer of run ``run_id``'s evaluation of ``split`` (per-sample table, predictions,
    plots, optional comparison), written to ``output`` and logged to the run as ``report/index.html``.
    ``dataset_root``: the dataset folder when not the one the run recorded."""
    from masklab.evaluation.analysis import row_normalised
    from masklab.explore import explorer_samples, split_matches, write_explorer
    from masklab.explore.pages import worst_first
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
        record_path = run.download(f"evaluation/{split}_evaluation.json", tmp_path)
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
                               title=f"run {run_id[:8]} / {dataset.name} / {split}{void_note(record_path, dataset)}",
                               mlflow_artifact={"run_id": str(run_id), "path": "report"},
                               view=worst_first(task.gate_metric, () if table is None else table.columns))
    run.directory(out, "report")
    return Report(Path(index), str(run_id), problems)


def void_note(record_path: Path | None, dataset: Dataset) -> str:
    """" · Boundary IoU next to void: <convention>" for a dataset with void whose evaluation record names one."""
    from masklab.evaluation.record import EvaluationRecord

    if record_path is None or dataset.class_table.ignore_index is None:
        return ""
    convention = EvaluationRecord.from_json(Path(record_path).read_text()).boundary_ignore
    return f" · Boundary IoU next to void: {convention}" if convention else ""


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
