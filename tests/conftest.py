"""Shared fixtures: every test runs masklab in its own temporary project folder."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


def share_the_cores() -> None:
    """Under pytest-xdist, each worker (and every masklab process it starts, through OMP_NUM_THREADS) gets its
    share of the cores, the rule `masklab sweep` uses for its workers. Two workers with two torch threads each
    on two cores made every training step 2-4x slower; a thread count given by the user is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


share_the_cores()
import torch  # noqa: E402  (after the thread count is set, before anything reads it)

if "OMP_NUM_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # also if a plugin imported torch before us

REPO = Path(__file__).resolve().parents[1]
# The slowest test modules (`pytest --durations=0`), scheduled first: under `--dist loadfile
# --no-loadscope-reorder` (make test) each worker takes the next module in collection order, so the
# modules left at the end are short ones. xdist's own order (most tests first) ran these 1-3 test
# modules last, one worker alone on a 3-minute DVC module while the other had finished.
LONGEST_FIRST = ("test_dvc_pipeline.py", "test_crash_safety.py", "test_ddp.py", "test_preset_expected.py",
                 "test_team_tracking.py", "test_sweep.py", "test_tune.py", "test_team_sweep.py",
                 "test_instance_task.py", "test_submitit.py", "test_al_simulation.py", "test_registry.py",
                 "test_dvc_experiments.py", "test_team_dvc.py", "test_presets_data_cli.py", "test_train.py",
                 "test_explorer_browser.py", "test_explore_server.py", "test_curation.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


SHARED_DATASETS = Path(os.environ.get("MASKLAB_SHARED", REPO.parent / "shared")) / "datasets"
MASKLAB = [sys.executable, "-m", "masklab.cli"]
# Tiny runs: 32 px images, 2 epochs of 2 batches.
# debug=fast trainings (a tiny dataset, 2 epochs of 2 batches) of the 0.77 M-parameter model=unet_tiny: the
# default UNet-resnet18 (14 M) made each one 2-3 times slower, most of it writing 170 MB checkpoints. A test that
# picks its own model or a preset (whose model must stay) uses DEBUG_FAST.
DEBUG_FAST = ["debug=fast"]
FAST = ["model=unet_tiny", *DEBUG_FAST]


@pytest.fixture(autouse=True)
def no_tracking_uri_leak():
    """``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI in ``os.environ``; a later test's config
    (``${oc.env:MLFLOW_TRACKING_URI,...}``) would log to an earlier test's store. masklab restores it
    (tracking.runs.fluent_tracking_uri), but tests call MLflow's fluent API themselves: put it back after each."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def in_project(patch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` the project masklab sees in this process (its cwd, no MLflow/MASKLAB_ROOT from outside)."""
    patch.chdir(folder)
    # setenv first: undoing it removes the variable again, also when MLflow set it meanwhile (see no_tracking_uri_leak)
    patch.setenv("MLFLOW_TRACKING_URI", "")
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    patch.delenv("MASKLAB_ROOT", raising=False)
    patch.delenv("HYDRA_FULL_ERROR", raising=False)
    patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder to run masklab in, with a private local MLflow store."""
    in_project(monkeypatch, tmp_path)
    return tmp_path


def run_masklab(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (exit codes, stderr and Hydra's argv handling included)."""
    full_env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONWARNINGS="ignore", **(env or {}))
    full_env.pop("MLFLOW_TRACKING_URI", None) if not env or "MLFLOW_TRACKING_URI" not in env else None
    return subprocess.run([*MASKLAB, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def mlflow_runs(project: Path, experiment: str):
    """All runs of ``experiment`` in the project's local store, as MLflow Run objects."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/experiments/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client, client.search_runs([exp.experiment_id])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", **(env or {}))
    env.pop("MLFLOW_TRACKING_URI", None)
    # Own process group: the server's workers are stopped with it.
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:  # the whole group has exited already
        proc.wait()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


# MLflow 3's job runner (a runner and 7 huey consumers for its GenAI features; 13 s of CPU per server start on 2
# cores) is of no use to masklab: `masklab ui` leaves it out, and so do the tests' servers.
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def assert_close(actual, expected, atol: float = 1e-6) -> None:
    """Element-wise equality to ``atol`` in float64, NaN equal to NaN, shapes equal."""
    # python floats must not go through torch.as_tensor: that would round them to float32
    a = actual.detach().cpu().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual, np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    np.testing.assert_allclose(a, e, rtol=0, atol=atol, equal_nan=True)


def miou_from_confusion(confusion) -> float:
    """mIoU from a pooled (C, C) confusion matrix [gt, pred] in plain numpy: a class absent from both
    ground truth and prediction is left out of the mean (masklab's rule)."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


# -- in-process helpers: workflows, commands and the CLI without a subprocess (each would import torch, Lightning,
# MLflow anew: 3-11 s, the more the busier the machine) --------------------------------------------------------------

def fit_in(project: Path, overrides: list[str], folder: str = "run"):
    """``workflows.fit`` of the ``train`` config with ``overrides``, in ``project``, into
    ``project/experiments/runs/<folder>`` (the run folder the CLI would make): a FitResult."""
    from masklab import workflows
    from masklab.config import compose

    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        return workflows.fit(compose("train", overrides), output_dir=project / "experiments" / "runs" / folder)


def composed(config_name: str, overrides: list[str]):
    """A command's config from Hydra's own compose API over masklab's conf/ (and the current folder's conf/, which
    masklab's search-path plugin adds), as a notebook gets it: what the README says the workflows accept."""
    from hydra import compose, initialize_config_dir

    from masklab.config import CONF_DIR

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides)


def command_in(project: Path, words: str, overrides: list[str], out: Path | None = None, func=None):
    """``masklab <words> <overrides>`` in this process: the command's function (or ``func``, given the same
    composed config) on its composed config, in ``project``, with ``out`` (default: a new folder under
    ``project/experiments/runs``) as Hydra's run folder (``hydra_output_dir()`` and ``paths.output_dir``).
    Returns what the function returns."""
    from importlib import import_module

    from masklab.cli import COMMANDS
    from masklab.config import compose

    config_name, target, _ = COMMANDS[tuple(words.split())]
    module_name, func_name = target.split(":")
    module = import_module(module_name)
    out = out or project / "experiments" / "runs" / f"{time.time_ns()}_{config_name}"
    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        # Hydra's run folder: commands import hydra_output_dir by name, or look it up in commands.common as they run
        patch.setattr("masklab.commands.common.hydra_output_dir", lambda: str(out))
        if hasattr(module, "hydra_output_dir"):
            patch.setattr(module, "hydra_output_dir", lambda: str(out))
        if hasattr(module, "hydra_single_run"):
            patch.setattr(module, "hydra_single_run", lambda: True)  # one job, not one of a -m sweep's
        cfg = compose(config_name, overrides)
        if "paths" in cfg:
            cfg.paths.output_dir = str(out)  # (it interpolates Hydra's run folder, which no Hydra run set here)
        return (func or getattr(module, func_name))(cfg)


@dataclass
class CliResult:
    """What ``masklab <args>`` did: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def cli_in_process(args: list[str], capsys: pytest.CaptureFixture) -> CliResult:
    """``masklab <args>`` through ``masklab.cli.main`` in this process (Hydra's parsing of the command line, its
    composition errors, the CLI's exit statuses), in the current folder. The state a CLI run leaves in a process
    (sys.argv, sys.path and the project's modules, logging handlers and levels, Hydra's singletons) is put back.
    ``run_masklab`` is for what only a real process shows."""
    from hydra.core.hydra_config import HydraConfig

    from masklab import console
    from masklab.cli import main

    capsys.readouterr()
    root, masklab_logger = logging.getLogger(), logging.getLogger("masklab")
    handlers, root_level, masklab_level = list(root.handlers), root.level, masklab_logger.level
    console_state = console._console, console._console_level
    hydra_config = HydraConfig.instance().cfg
    modules, path = set(sys.modules), list(sys.path)
    code: int | str | None = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["masklab"])
        patch.setattr(sys, "path", list(path))
        for name in (console.LOG_LEVEL_ENV, "MLFLOW_DISABLE_TELEMETRY"):  # main sets them; undo removes them
            patch.setenv(name, os.environ.get(name, ""))
            if not os.environ[name]:
                patch.delenv(name)
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
        finally:
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()  # Hydra's job log file
            root.handlers[:] = handlers
            root.setLevel(root_level)
            masklab_logger.setLevel(masklab_level)
            console._console, console._console_level = console_state
            HydraConfig.instance().cfg = hydra_config
            # the project's own modules (a conf/model's _target_), imported from the root main put on sys.path
            roots = [Path(p) for p in sys.path if p not in path]
            for name in set(sys.modules) - modules:
                file = getattr(sys.modules[name], "__file__", None)
                if file and any(Path(file).is_relative_to(root) for root in roots):
                    del sys.modules[name]
    out, err = capsys.readouterr()
    return CliResult(code if isinstance(code, int) else 1 if code else 0, out, err)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """``cli("train", "model=fpn", ...)``: :func:`cli_in_process` of those arguments (in the ``project`` fixture's
    folder when the test uses it)."""
    return lambda *args: cli_in_process(list(args), capsys)


def exits_as_user_error(label: str, func, capsys: pytest.CaptureFixture, one_line: bool = True) -> str:
    """Run ``func`` the way the CLI runs a command (``masklab.errors.run_reporting_errors``): it must end as a
    user's mistake (exit 2, no traceback) with one line on stderr (unless ``one_line=False``: a list of
    problems), which is returned."""
    from masklab.errors import run_reporting_errors

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(label, func)
    # MLflow's own log lines ("2026/01/31 12:00:00 INFO mlflow...": creating a store) are not masklab's output
    err = "\n".join(ln for ln in capsys.readouterr().err.splitlines() if not re.match(r"\d{4}/\d\d/\d\d ", ln))
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and (len(err.strip().splitlines()) == 1 or not one_line), err
    assert err.startswith(f"masklab {label}: error: "), err
    return err.strip()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, migrated once per test process (a fresh store's migration takes ~3.4 s)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_template")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's default experiment points at ./mlruns: keep that here
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()
    return folder / "mlflow.db"


def copy_store(template: Path, project: Path) -> Path:
    """Put the migrated, empty store ``template`` at ``project/experiments/mlflow.db`` (the default local store)."""
    import shutil

    target = project / "experiments" / "mlflow.db"
    assert not target.exists(), f"{target} exists already"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return target


@pytest.fixture
def seed_store(mlflow_template: Path):
    """Opt-in: ``seed_store(project)`` gives ``project`` a migrated, empty default store before masklab would
    create one. Not for tests that check which store a command uses (e.g. that a server's store is used)."""
    return lambda project: copy_store(mlflow_template, project)


# Debian's Chromium, headless, driven by Playwright (it never downloads a browser; `make browser` installs it).
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module's tests; skipped when Chromium or playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (make browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()
