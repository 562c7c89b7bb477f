"""``register`` and ``promote``: model versions in the MLflow registry (through masklab.tracking)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.errors import UserError


@dataclass
class RegisteredVersion:
    """A new registry version: model name, version, source run and how long registering took (s)."""

    name: str
    version: str
    run_id: str
    seconds: float


def register(tracking_uri: str, run_id: str, name: str | None = None,
             checkpoint: str | Path | None = None) -> RegisteredVersion:
    """Register the best checkpoint of ``run_id`` as a new version of model ``name`` (default: the run's
    experiment name). ``checkpoint``: the same checkpoint on disk, when the caller has it (saves a download);
    else the run's tracked ``checkpoints/best.ckpt`` is used."""
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
    local = contextlib.nullcontext(Path(checkpoint)) if checkpoint else downloaded_checkpoint(tracking_uri, run_id)
    with local as ckpt:
        mv = registry.register(run_id, name, Path(ckpt))
    return RegisteredVersion(str(name), str(mv.version), run_id, time.perf_counter() - start)


def gate_from_config(gate_cfg: Any):
    """The promotion gate of a ``registry.gate`` config node (None when it names no metric)."""
    from masklab.tracking.registry import Gate

    if not gate_cfg or not gate_cfg.get("metric"):
        return None
    return Gate(str(gate_cfg.metric), float(gate_cfg.min_delta), str(gate_cfg.get("mode", "max")))


def promote(tracking_uri: str, name: str, version: str | int, stage: str, gate: Any = None, force: bool = False,
            reason: str = "") -> tuple[str, str]:
    """Move version ``version`` of ``name`` to ``stage`` (Staging/Production/Archived), gated by ``gate``
    for Production unless ``force``; returns (from stage, to stage). The transition is recorded."""
    from masklab.tracking.registry import Registry

    return Registry(tracking_uri).promote(str(name), str(version), str(stage), gate, force=bool(force),
                                          reason=str(reason or ""))
