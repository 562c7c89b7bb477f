"""Tasks: the only code that knows what a target looks like (semantic class maps, instance objects).

A task bundles, for one kind of target: the dataset item and batch (``datamodule``,
``eval_dataset``), model building (``build_model``, ``model_from_spec``), the loss, the
LightningModule's steps and validation metrics (``lightning_module``), post-processing of network
outputs into predictions (``predict``, given an inference Predictor), the evaluation metric set and per-sample columns
(``score``, ``evaluation_files``, ``summary_table``), how a prediction is written and drawn
(``write_prediction``, ``overlay``) and the registry package signature (``signature``).

Workflows ask :func:`task_for` for the task of a config, checkpoint or package and call these
methods; none of them branches on the task type. See docs/tasks.md for the interface and how
``tasks/instance.py`` drops in.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from masklab.errors import UserError
from masklab.tasks.base import Task

DEFAULT_TASK = "semantic"
# task name -> "module:class"; imported on first use so `masklab --help` stays light.
TASKS: dict[str, str] = {
    "semantic": "masklab.tasks.semantic:SemanticTask",
    "instance": "masklab.tasks.instance:InstanceTask",
}
# The validation metric each task logs to pick its best checkpoint (train.yaml's default ``monitor``).
TASK_MONITORS: dict[str, str] = {"semantic": "val/mIoU", "instance": "val/mask_AP"}
# The metric the promotion gate compares by default (registry.gate.metric=auto), as evaluation logs it.
TASK_GATE_METRICS: dict[str, str] = {"semantic": "mIoU", "instance": "mask_AP"}


def get_task(name: str) -> Task:
    """The task called ``name``; a UserError naming the known tasks otherwise."""
    if name not in TASKS:
        raise UserError(f"task={name}: unknown; expected one of {sorted(TASKS)}")
    module_name, class_name = TASKS[name].split(":")
    return getattr(import_module(module_name), class_name)()


def task_for(source: Mapping[str, Any] | Any) -> Task:
    """The task of a config (``task:`` key), checkpoint metadata or package spec; v1 files have none
    and are semantic."""
    name = source.get("task") if hasattr(source, "get") else None
    return get_task(str(name or DEFAULT_TASK))


__all__ = ["DEFAULT_TASK", "TASKS", "TASK_GATE_METRICS", "TASK_MONITORS", "Task", "get_task", "task_for"]
