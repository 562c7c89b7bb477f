"""`masklab register | promote | models list | models history`."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig

from masklab.errors import UserError


def _registry(cfg: DictConfig):
    from masklab.tracking.registry import Registry

    return Registry(cfg.logger.tracking_uri)


def _gate(cfg: DictConfig):
    from masklab.tracking.registry import Gate

    g = cfg.registry.gate
    return Gate(str(g.metric), float(g.min_delta), str(g.get("mode", "max"))) if g and g.metric else None


def register_run(tracking_uri: str, run_id: str, name: str | None, checkpoint: Path | None = None) -> tuple[str, str]:
    """Register the best checkpoint of ``run_id`` (``checkpoint`` when the caller has it on disk,
    else the run's tracked copy); returns (model name, version)."""
    import contextlib
    import time

    from masklab.tracking.registry import Registry
    from masklab.tracking.runs import client, downloaded_checkpoint

    start = time.perf_counter()
    registry = Registry(tracking_uri)
    try:
        run = client(tracking_uri).get_run(run_id)
    except Exception as exc:
        raise UserError(f"run_id={run_id}: no such MLflow run in {tracking_uri}") from exc
    if not name:
        name = client(tracking_uri).get_experiment(run.info.experiment_id).name
    local = contextlib.nullcontext(checkpoint) if checkpoint else downloaded_checkpoint(tracking_uri, run_id)
    with local as ckpt:
        mv = registry.register(run_id, name, Path(ckpt))
    print(f"Registered run {run_id} as model '{name}' version {mv.version} "
          f"({time.perf_counter() - start:.1f} s). Promote it with:\n"
          f"  masklab promote name={name} version={mv.version} stage=Staging")
    return name, str(mv.version)


def register(cfg: DictConfig) -> None:
    register_run(cfg.logger.tracking_uri, str(cfg.run_id), cfg.registry.name)


def promote(cfg: DictConfig) -> None:
    registry = _registry(cfg)
    from_stage, to_stage = registry.promote(str(cfg.name), str(cfg.version), str(cfg.stage), _gate(cfg),
                                            force=bool(cfg.force), reason=str(cfg.reason or ""))
    print(f"Model '{cfg.name}' version {cfg.version}: {from_stage} -> {to_stage}"
          + (" (forced)" if cfg.force else ""))


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
    Console(width=200).print(table)


def models_list(cfg: DictConfig) -> None:
    registry = _registry(cfg)
    names = [str(cfg.name)] if cfg.name else registry.model_names()
    if not names:
        print(f"No registered models in {cfg.logger.tracking_uri}")
    for name in names:
        _print_table(f"model '{name}'", registry.list_versions(name, str(cfg.registry.gate.metric)))


def models_history(cfg: DictConfig) -> None:
    rows = [{"when": e["when"], "version": e["version"], "who": e["who"], "from": e["from"], "to": e["to"],
             "forced": e.get("forced", False), "reason": e.get("reason", "")}
            for e in _registry(cfg).history(str(cfg.name))]
    _print_table(f"history of model '{cfg.name}'", rows)
