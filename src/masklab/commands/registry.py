"""`masklab register | promote | models list | models history`."""

from __future__ import annotations

import math

from omegaconf import DictConfig


def _registry(cfg: DictConfig):
    from masklab.tracking.registry import Registry

    return Registry(cfg.logger.tracking_uri)


def register(cfg: DictConfig) -> None:
    from masklab.workflows import register as register_run

    done = register_run(cfg.logger.tracking_uri, str(cfg.run_id), cfg.registry.name)
    print(f"Registered run {done.run_id} as model '{done.name}' version {done.version} "
          f"({done.seconds:.1f} s). Promote it with:\n"
          f"  masklab promote name={done.name} version={done.version} stage=Staging")


def promote(cfg: DictConfig) -> None:
    from masklab.workflows import gate_from_config
    from masklab.workflows import promote as promote_version

    from_stage, to_stage = promote_version(cfg.logger.tracking_uri, str(cfg.name), str(cfg.version), str(cfg.stage),
                                           gate_from_config(cfg.registry.gate), force=bool(cfg.force),
                                           reason=str(cfg.reason or ""))
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
