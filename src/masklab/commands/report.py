"""`masklab report run=<id>` and `masklab data browse data=<name>`: the HTML explorer."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from masklab.data.open import open_dataset
from masklab.data.format import Dataset, DatasetFormatError, load_dataset
from masklab.errors import UserError


def explorer_samples(dataset: Dataset, split: str | None, pred_dir: Path | None) -> list:
    from masklab.report.explorer import ExplorerSample

    chosen = dataset.samples if split in (None, "all") else dataset.split(split)
    out = []
    for s in chosen:
        pred = pred_dir / f"{s.id.replace('/', '__')}.png" if pred_dir else None
        out.append(ExplorerSample(s.id, s.split, dataset.root / s.image, dataset.root / s.mask if s.mask else None,
                                  pred if pred is not None and pred.is_file() else None))
    return out


def browse(cfg: DictConfig) -> None:
    """Explorer of a dataset without predictions."""
    from masklab.report.explorer import write_explorer

    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    samples = explorer_samples(dataset, cfg.split, None)
    if not samples:
        raise UserError(f"dataset {dataset.root}: split '{cfg.split}' is empty")
    out = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "browse"
    index = write_explorer(out, dataset.class_table, samples, None, {"problems": []},
                           title=f"{dataset.name} ({cfg.split}, {len(samples)} samples)")
    print(f"Wrote {index}  (open it in a browser; no server needed)")


def report(cfg: DictConfig) -> None:
    """Explorer of one run's evaluation: per-sample table, predictions, plots, optional comparison."""
    from masklab.evaluation.analysis import row_normalised
    from masklab.report.explorer import write_explorer
    from masklab.tracking.runs import RunLog

    uri = cfg.logger.tracking_uri
    try:
        run = RunLog(uri, str(cfg.run))
        metrics, _, tags = run.run_data()
    except Exception as exc:
        raise UserError(f"run={cfg.run}: no such MLflow run in {uri}") from exc
    split = cfg.split
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        table_path = run.download(f"evaluation/{split}_per_sample.parquet", tmp_path)
        pred_dir = run.download(f"evaluation/{split}_pred", tmp_path)
        per_class_path = run.download(f"evaluation/{split}_per_class.csv", tmp_path)
        confusion_path = run.download(f"evaluation/{split}_confusion.csv", tmp_path)
        compare_path = run.download(f"evaluation/{split}_compare.parquet", tmp_path)
        if table_path is None:
            problems.append(f"run {cfg.run} has no evaluation of split '{split}' (evaluation/{split}_per_sample"
                            f".parquet): run `masklab evaluate run_id={cfg.run} split={split}` first; showing the "
                            f"dataset and training curves only")
        dataset = _run_dataset(cfg, tags, problems)
        table = pd.read_parquet(table_path) if table_path else None
        summary = {
            "headline": {k.split("/", 2)[-1]: v for k, v in metrics.items() if k.startswith(f"eval/{split}/")
                         and "/" not in k.split("/", 2)[-1]},
            "curves": run.metric_history(("train/loss_epoch", "val/loss", "val/mIoU", "val/mDice")),
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
            raise UserError(f"run={cfg.run}: its dataset cannot be opened ({'; '.join(problems)}); "
                            f"pass dataset_root=<folder> to point at it")
        samples = explorer_samples(dataset, split, pred_dir)
        out = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "report"
        index = write_explorer(out, dataset.class_table, samples, table, summary,
                               title=f"run {cfg.run[:8]} / {dataset.name} / {split}",
                               mlflow_artifact={"run_id": str(cfg.run), "path": "report"})
    run.directory(out, "report")
    print(f"Wrote {index} and logged it to MLflow run {cfg.run} as report/index.html")
    for p in problems:
        print(f"note: {p}")


def _run_dataset(cfg: DictConfig, tags: dict, problems: list[str]) -> Dataset | None:
    """The dataset the run was evaluated on: ``dataset_root=`` when given, else the run's dataset_root tag."""
    root_text = cfg.dataset_root or tags.get("masklab.dataset_root", "")
    if not root_text:
        problems.append("the run records no dataset (tag masklab.dataset_root)")
        return None
    try:
        return load_dataset(Path(root_text))
    except DatasetFormatError as exc:
        problems.append(str(exc))
        return None
