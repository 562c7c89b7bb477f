"""`masklab register | promote | models list | models history`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from masklab.console import result


def _registry(cfg: DictConfig):
    from masklab.tracking.registry import Registry

    return Registry(cfg.logger.tracking_uri)


def register(cfg: DictConfig) -> None:
    # The module, not the package: masklab.workflows would import every workflow's stack.
    from masklab.workflows.registry import register as register_run

    done = register_run(cfg.logger.tracking_uri, str(cfg.run_id), cfg.registry.name)
    result(f"Registered run {done.run_id} as model '{done.name}' version {done.version} "
           f"({done.seconds:.1f} s). Promote it with:\n"
           f"  masklab promote name={done.name} version={done.version} stage=Staging", __name__)


def _data_overrides(dataset: str) -> list[str]:
    """``data=<name>`` for a dataset with a config (the project's or masklab's), else the default data
    config renamed (``data.name=<name>``: its root is ``<data_dir>/<name>``)."""
    from masklab.config import config_options

    return [f"data={dataset}"] if dataset in config_options("data") else [f"data.name={dataset}"]


def _gate_evaluation(cfg: DictConfig, output_dir: Path, trained_at: dict[str, str]):
    """The promote gate's evaluator and split lister: the ``evaluate`` config composed for a dataset (under
    promote's ``paths.data_dir``; where the dataset is not there, in the folder ``trained_at`` records for it,
    {dataset name: root}, when that exists), and :func:`masklab.workflows.evaluation.evaluate` of a
    ``models:/<name>/<version>`` on it."""
    from masklab.config import compose
    from masklab.console import logger

    shared = [f"logger.tracking_uri='{cfg.logger.tracking_uri}'", f"logger.artifact_root='{cfg.logger.artifact_root}'",
              f"paths.data_dir='{cfg.paths.data_dir}'"]
    resolution = str(cfg.registry.gate.get("resolution", "original"))
    if resolution != "original":
        shared.append(f"evaluation.resolution={resolution}")

    def evaluate_config(dataset: str, split: str) -> DictConfig:
        overrides = [*_data_overrides(dataset), f"split={split}", *shared]
        source = f"promote: evaluate config for dataset '{dataset}'"
        composed = compose("evaluate", overrides, source=source)
        recorded = trained_at.get(dataset)
        if not Path(composed.data.root).is_dir() and recorded and Path(recorded).is_dir():
            logger(__name__).info(f"gate: dataset '{dataset}' is not in {composed.data.root}; using {recorded}, "
                                  "where the version was trained")
            composed = compose("evaluate", [*overrides, f"data.root='{recorded}'"], source=source)
        return composed

    def splits(dataset: str) -> list[str]:
        from masklab.data.open import open_dataset

        data_cfg = evaluate_config(dataset, "val")
        opened = open_dataset(data_cfg.data, data_cfg.paths.cache_dir, check=False)
        return [s for s in opened.split_names if opened.labeled(s)]

    def evaluator(model_uri: str, dataset: str, split: str):
        from masklab.console import logger
        from masklab.tracking.evaluations import newest
        from masklab.workflows.evaluation import evaluate

        name, version = model_uri[len("models:/"):].rsplit("/", 1)
        logger(__name__).info(f"gate: scoring {model_uri} on {dataset} split={split} resolution={resolution}")
        done = evaluate(evaluate_config(dataset, split), output_dir / f"gate_{name}_v{version}_{split}",
                        model_ref=model_uri, split=split)
        record = getattr(done, "record", None)
        if record is None:  # the evaluate workflow attaches its record to the version: read it back
            record = newest(_registry(cfg).evaluations(name, version), dataset=dataset, split=split,
                            resolution=resolution)
        if record is None:
            from masklab.errors import UserError

            raise UserError(f"gate: evaluating {model_uri} on {dataset} split={split} left no evaluation record")
        return record

    return evaluator, splits


def promote(cfg: DictConfig) -> None:
    from masklab.commands.common import hydra_output_dir
    from masklab.workflows.registry import gate_from_config
    from masklab.workflows.registry import promote as promote_version

    gate = gate_from_config(cfg.registry.gate)
    tags = _registry(cfg).version(str(cfg.name), str(cfg.version)).tags or {}
    trained_at = {tags["masklab.dataset"]: tags["masklab.dataset_root"]} \
        if tags.get("masklab.dataset") and tags.get("masklab.dataset_root") else {}
    evaluator, splits = _gate_evaluation(cfg, Path(hydra_output_dir()), trained_at)
    if not cfg.registry.gate.get("evaluate_missing", True):
        evaluator = None
    done = promote_version(cfg.logger.tracking_uri, str(cfg.name), str(cfg.version), str(cfg.stage), gate,
                           force=bool(cfg.force), reason=str(cfg.reason or ""),
                           dataset=str(cfg.dataset) if cfg.get("dataset") else None,
                           evaluator=evaluator, splits=splits)
    result(done.describe(), __name__)


def _print_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    if not rows:
        Console().print(f"{title}: nothing yet")
        return
    for col in rows[0]:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*("-" if v is None or (isinstance(v, float) and math.isnan(v))
                        else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=220).print(table)


def models_list(cfg: DictConfig) -> None:
    from masklab.tasks import gate_metric
    from masklab.tracking.registry import Gate
    from masklab.workflows.registry import gate_from_config

    registry = _registry(cfg)
    gate = gate_from_config(cfg.registry.gate) or Gate()
    names = [str(cfg.name)] if cfg.name else registry.model_names()
    if not names:
        result(f"No registered models in {cfg.logger.tracking_uri}", __name__)
    for name in names:
        _print_table(f"model '{name}'", registry.list_versions(name, gate, gate_metric))


def _gate_summary(gate: dict[str, Any] | None) -> str:
    """A history entry's gate comparison in one cell: both numbers and what they were scored on."""
    if not gate:
        return ""
    sides = []
    for side in (gate.get("challenger"), gate.get("incumbent")):
        if side:
            value = side.get("value")
            sides.append(f"v{side['version']} {value:.4f}" if value is not None else f"v{side['version']} -")
    scored = (gate.get("challenger") or {}).get("scored") or ""
    on = scored.split(" on ", 1)[-1] if scored else "no score"
    return f"{gate['metric']}: {' vs '.join(sides)} ({on}){'' if gate.get('passed') else ' REFUSED'}"


def models_history(cfg: DictConfig) -> None:
    rows = [{"when": e["when"], "version": e["version"], "who": e["who"], "from": e["from"], "to": e["to"],
             "forced": e.get("forced", False), "reason": e.get("reason", ""), "gate": _gate_summary(e.get("gate"))}
            for e in _registry(cfg).history(str(cfg.name))]
    _print_table(f"history of model '{cfg.name}'", rows)
