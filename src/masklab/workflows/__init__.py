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

from typing import TYPE_CHECKING

import lazy_loader

import masklab.tasks  # noqa: F401  (registers ${masklab.task_monitor:...}, which composed train configs use)

# Imported on first use (lazy_loader): `masklab register` should not pay for pandas (report), Lightning (fit) or
# the evaluation stack, nor a notebook for what it never calls.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "active_learning": ["Selection", "record_selection", "select", "write_selection_explorer"],
    "cross_validation": ["CrossValidation", "cross_validate"],
    "curation": ["Duplicates", "Similarity", "describe_similarity", "embed", "find_duplicates", "make_embedder",
                 "write_similarity_explorer"],
    "data": ["Imported", "export_dataset", "import_dataset"],
    "evaluation": ["Evaluation", "evaluate", "evaluate_checkpoint", "evaluate_model"],
    "exploring": ["ExploreSources", "explore_sources", "open_explorer"],
    "exporting": ["Export", "ParityFailed", "export"],
    "fitting": ["FitResult", "fit"],
    "label_errors": ["LabelErrors", "find_label_errors", "write_label_error_explorer"],
    "prediction": ["Prediction", "predict"],
    "registry": ["Promotion", "RegisteredVersion", "gate_from_config", "promote", "register"],
    "reporting": ["Report", "report"],
})

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
    from masklab.workflows.exporting import Export, ParityFailed, export
    from masklab.workflows.fitting import FitResult, fit
    from masklab.workflows.label_errors import LabelErrors, find_label_errors, write_label_error_explorer
    from masklab.workflows.prediction import Prediction, predict
    from masklab.workflows.registry import Promotion, RegisteredVersion, gate_from_config, promote, register
    from masklab.workflows.reporting import Report, report
