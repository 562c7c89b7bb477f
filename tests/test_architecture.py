"""The layer map as a contract (.importlinter, checked by import-linter, which also reads function-local imports),
and the task seam: a third task is a class in one registry and a config value, nothing else.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import FAST, fit_in

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path, config: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the ``masklab`` package found in ``src``, with the contract file ``config``."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=src,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)}, capture_output=True, text=True,
                          timeout=120)


def test_the_layer_contract_holds():
    done = lint_imports(ROOT / "src", ROOT / ".importlinter")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout and "3 kept" in done.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # a piece looking the task up instead of being handed it (function-local: still an import)
    ("tracking/probe.py", "def f():\n    from masklab.tasks import task_for\n", "masklab.tracking is not allowed"),
    # a sweep worker re-entering the CLI
    ("sweep/probe.py", "import masklab.cli\n", "masklab.sweep is not allowed"),
    # two pieces in one layer that must stay independent
    ("report/probe.py", "import masklab.evaluation.record\n", "masklab.report is not allowed"),
    # a command importing another command (edges stand alone)
    ("commands/predict.py", "def f():\n    from masklab.commands.data import preview\n",
     "Edges do not import other edges"),
    # a cycle between two modules of one package
    ("metrics/labels.py", "import masklab.metrics.semantic\n", "No cycles are allowed in masklab.metrics"),
])
def test_the_contract_catches_a_forbidden_import(tmp_path, module, line, broken):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "masklab", src / "masklab", ignore=shutil.ignore_patterns("__pycache__"))
    target = src / "masklab" / module
    target.write_text((target.read_text() if target.exists() else "") + "\n" + line)
    done = lint_imports(src, ROOT / ".importlinter")
    assert done.returncode != 0 and broken in done.stdout, done.stdout[-3000:]


def test_workflows_need_no_hydra_runtime():
    """Hydra's runtime singleton is the edges' business (import-linter sees packages, not this attribute)."""
    for folder in ("workflows", "tasks", "sweep"):
        for path in (ROOT / "src" / "masklab" / folder).rglob("*.py"):
            assert "HydraConfig" not in path.read_text(), f"{path} reads Hydra's runtime"


def test_a_task_must_implement_the_whole_interface():
    from masklab.tasks.base import Task

    class Half(Task):
        name: ClassVar[str] = "half"

    with pytest.raises(TypeError, match="abstract"):
        Half()


@pytest.fixture
def toy_task():
    """A third task, registered as a plugin would (no edit of masklab's files): a semantic task whose best
    checkpoint and gate follow Dice instead of IoU."""
    from masklab.tasks import TASKS, register_task
    from masklab.tasks.semantic import SemanticTask

    class DiceTask(SemanticTask):
        name: ClassVar[str] = "dice_toy"
        monitor: ClassVar[str] = "val/mDice"
        gate_metric: ClassVar[str] = "mDice"

    register_task(DiceTask)
    yield DiceTask
    TASKS.pop("dice_toy")


def test_a_new_task_is_a_class_and_a_config_value(toy_task, tmp_path, seed_store):
    """``task=dice_toy`` picks the monitor, the checkpoint, the run's tag and the evaluation, through the same
    workflows as the built-in tasks."""
    from masklab.config import compose
    from masklab.tasks import gate_metric, register_task, task_for
    from masklab.tracking.runs import client

    assert str(compose("train", ["task=dice_toy"]).monitor) == "val/mDice"
    assert gate_metric("dice_toy") == "mDice"
    with pytest.raises(ValueError, match="registered already"):
        register_task(type("Other", (toy_task,), {}))
    seed_store(tmp_path)
    done = fit_in(tmp_path, [*FAST, "task=dice_toy"])
    history = [m.value for m in client(done.tracking_uri).get_metric_history(done.run_id, "val/mDice")]
    assert done.monitor == "val/mDice" and done.best_value == pytest.approx(max(history))
    run = client(done.tracking_uri).get_run(done.run_id)
    assert run.data.tags["masklab.task"] == "dice_toy"
    assert isinstance(task_for({"task": "dice_toy"}), toy_task)
    assert "eval/val/mDice" in run.data.metrics and set(done.evaluations) >= {"val"}
