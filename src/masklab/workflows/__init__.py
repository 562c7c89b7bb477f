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
:func:`predict`, :func:`cross_validate`, :func:`find_label_errors` (and :func:`write_label_error_explorer`),
:func:`embed`, :func:`find_duplicates`, :func:`describe_similarity` (and :func:`make_embedder`),
:func:`open_explorer` (and :func:`explore_sources`), :func:`select` (and :func:`record_selection`,
:func:`write_selection_explorer`),
:func:`register`, :func:`promote`, :func:`report`, :func:`import_dataset`, :func:`export_dataset`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

import masklab.tasks  # noqa: F401  (registers ${masklab.task_monitor:...}, which composed train configs use)

# name -> the workflows module defining it. Imported on first use: `masklab register` should not pay
# for pandas (report), Lightning (fit) or the evaluation stack, nor a notebook for what it never calls.
_EXPORTS = {
    "CrossValidation": "cross_validation", "cross_validate": "cross_validation",
    "LabelErrors": "label_errors", "find_label_errors": "label_errors", "write_label_error_explorer": "label_errors",
    "Selection": "active_learning", "record_selection": "active_learning", "select": "active_learning",
    "write_selection_explorer": "active_learning",
    "Duplicates": "curation", "Similarity": "curation", "describe_similarity": "curation", "embed": "curation",
    "find_duplicates": "curation", "make_embedder": "curation", "write_similarity_explorer": "curation",
    "ExploreSources": "exploring", "explore_sources": "exploring", "open_explorer": "exploring",
    "Imported": "data", "export_dataset": "data", "import_dataset": "data",
    "Evaluation": "evaluation", "evaluate": "evaluation", "evaluate_checkpoint": "evaluation",
    "evaluate_model": "evaluation",
    "FitResult": "fitting", "fit": "fitting",
    "Prediction": "prediction", "predict": "prediction",
    "Promotion": "registry", "RegisteredVersion": "registry", "gate_from_config": "registry", "promote": "registry",
    "register": "registry",
    "Report": "reporting", "report": "reporting",
}

if TYPE_CHECKING:
    from masklab.workflows.active_learning import Selection, record_selection, select, write_selection_explorer
    from masklab.workflows.cross_validation import CrossValidation, cross_validate
    from masklab.workflows.curation import (
        Duplicates,
        Similarity,
        describe_similarity,
        embed,
        find_duplicates,
        make_embedder,
        write_similarity_explorer,
    )
    from masklab.workflows.data import Imported, export_dataset, import_dataset
    from masklab.workflows.evaluation import Evaluation, evaluate, evaluate_checkpoint, evaluate_model
    from masklab.workflows.exploring import ExploreSources, explore_sources, open_explorer
    from masklab.workflows.fitting import FitResult, fit
    from masklab.workflows.label_errors import LabelErrors, find_label_errors, write_label_error_explorer
    from masklab.workflows.prediction import Prediction, predict
    from masklab.workflows.registry import Promotion, RegisteredVersion, gate_from_config, promote, register
    from masklab.workflows.reporting import Report, report

__all__ = ["CrossValidation", "Duplicates", "Evaluation", "ExploreSources", "FitResult", "Imported", "LabelErrors",
           "Prediction", "Promotion", "RegisteredVersion", "Report", "Selection", "Similarity", "cross_validate",
           "describe_similarity", "embed", "evaluate", "evaluate_checkpoint", "evaluate_model", "explore_sources",
           "export_dataset", "find_duplicates", "find_label_errors", "fit", "gate_from_config", "import_dataset",
           "make_embedder", "open_explorer", "predict", "promote", "record_selection", "register", "report", "select",
           "write_label_error_explorer", "write_selection_explorer", "write_similarity_explorer"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'masklab.workflows' has no attribute {name!r}")
    value = getattr(import_module(f"masklab.workflows.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
