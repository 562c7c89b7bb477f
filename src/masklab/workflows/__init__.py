"""masklab's public Python API: plain functions that take composed configs and explicit paths, return results.

Every edge (CLI commands, sweep trials, DVC pipeline stages) calls these; they never need Hydra's
runtime or global state. Compose a config with :func:`masklab.config.compose` (or
``hydra.compose``) and call, e.g.::

    from masklab import workflows
    from masklab.config import compose

    cfg = compose("train", ["debug=fast"])
    result = workflows.fit(cfg, output_dir="experiments/runs/mine")
    print(result.best_value, result.run_id, result.best_checkpoint)

Workflows: :func:`fit`, :func:`evaluate` (and :func:`evaluate_checkpoint`, :func:`evaluate_model`),
:func:`predict`, :func:`register`, :func:`promote`, :func:`report`, :func:`import_dataset`.
"""

from __future__ import annotations

from masklab.workflows.data import Imported, import_dataset
from masklab.workflows.evaluation import Evaluation, evaluate, evaluate_checkpoint, evaluate_model
from masklab.workflows.fitting import FitResult, fit
from masklab.workflows.prediction import Prediction, predict
from masklab.workflows.registry import RegisteredVersion, gate_from_config, promote, register
from masklab.workflows.reporting import Report, report

__all__ = ["Evaluation", "FitResult", "Imported", "Prediction", "RegisteredVersion", "Report", "evaluate",
           "evaluate_checkpoint", "evaluate_model", "fit", "gate_from_config", "import_dataset", "predict",
           "promote", "register", "report"]
