"""Tasks: the only code that knows what a target looks like (semantic class maps, instance objects).

A task (:class:`masklab.tasks.base.Task`) bundles, for one kind of target: the dataset item and batch, model
building, the loss, the LightningModule, post-processing of network outputs into predictions, the metric set
and per-sample columns, how a prediction is written and drawn, and the registry package signature; its
constants (``monitor``, ``gate_metric``, ``curve_metrics``, ``output_kind``) are class attributes.

This module is the one place tasks are registered: :data:`TASKS` names the built-in ones (imported on first
use so `masklab --help` stays light), :func:`register_task` adds another (a plugin, a test). Workflows ask
:func:`task_for` for the task of a config, checkpoint or package and hand it to the pieces they call; none of
them branches on the task type. Importing this package registers the ``${masklab.task_monitor:<task>}``
resolver that train.yaml's ``monitor`` uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module

from omegaconf import OmegaConf

from masklab.config import DEFAULT_TASK
from masklab.errors import UserError
from masklab.tasks.base import Task, TensorSpec

# task name -> "module:class" of the built-in tasks, or the class itself once imported or registered.
TASKS: dict[str, str | type[Task]] = {
    "semantic": "masklab.tasks.semantic:SemanticTask",
    "instance": "masklab.tasks.instance:InstanceTask",
}


def register_task(cls: type[Task]) -> type[Task]:
    """Add a task class under its ``name`` (usable as a decorator); a second class under a taken name is a bug."""
    current = TASKS.get(cls.name)
    if current is not None and current is not cls and not (isinstance(current, str) and
                                                           current == f"{cls.__module__}:{cls.__qualname__}"):
        raise ValueError(f"task {cls.name!r} is registered already ({current})")
    TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    """The task class called ``name``; a UserError naming the known tasks otherwise."""
    entry = TASKS.get(name)
    if entry is None:
        raise UserError(f"task={name}: unknown; expected one of {sorted(TASKS)}")
    if isinstance(entry, str):
        module_name, class_name = entry.split(":")
        entry = TASKS[name] = getattr(import_module(module_name), class_name)
    return entry


def get_task(name: str) -> Task:
    """A new task object called ``name``; a UserError naming the known tasks otherwise."""
    return task_class(name)()


def task_for(source: Mapping[str, object] | object) -> Task:
    """The task of a config (``task:`` key), checkpoint metadata or package spec; v1 files have none
    and are semantic."""
    name = source.get("task") if hasattr(source, "get") else None  # (a dict, a DictConfig, a package spec)
    return get_task(str(name or DEFAULT_TASK))


def task_monitor(name: object) -> str:
    """The validation metric that picks the best checkpoint of a task (``monitor: ${masklab.task_monitor:${task}}``)."""
    return task_class(str(name)).monitor


def tagged_task(name: str | None) -> type[Task]:
    """The task class a run's or version's ``masklab.task`` tag names; a run with no tag (v1), or with a task
    this installation does not know, is read as a semantic one."""
    return task_class(name if name in TASKS else DEFAULT_TASK)


def gate_metric(name: str | None) -> str:
    """The promotion gate's default metric for a model of task ``name`` (a version's ``masklab.task`` tag)."""
    return tagged_task(name).gate_metric


def package_signature(spec: Mapping[str, object]) -> tuple[TensorSpec, TensorSpec]:
    """The (input, output) tensor specs of a package whose spec names its task."""
    return task_for(spec).signature()


OmegaConf.register_new_resolver("masklab.task_monitor", task_monitor, replace=True)

__all__ = ["DEFAULT_TASK", "TASKS", "Task", "TensorSpec", "gate_metric", "get_task", "package_signature",
           "register_task", "tagged_task", "task_class", "task_for", "task_monitor"]
