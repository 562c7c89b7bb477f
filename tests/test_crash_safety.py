"""Never losing work: a training stopped by SIGTERM saves where it stands and its resume continues the same MLflow
run; a training killed with SIGKILL resumes from its last checkpoint to the metrics of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, MASKLAB, copy_store, fit_in, mlflow_runs

# Real processes killed by real signals, each trained twice: run beside the team tests (`make test`).
pytestmark = pytest.mark.slow

# A training long enough to be stopped in the middle: 8 epochs of 2 batches of 32 px images.
LONGER = [*FAST, "trainer.max_epochs=8", "evaluate_after=false"]


def start_training(project: Path, folder: Path, overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([*MASKLAB, "train", *overrides, f"hydra.run.dir={folder}"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_once_checkpointed(proc: subprocess.Popen, folder: Path, signum: int) -> str:
    """Send ``signum`` as soon as the training has written its first last.ckpt (epoch 0 validated); its stderr."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if (folder / "checkpoints" / "last.ckpt").is_file():
            proc.send_signal(signum)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    return err


def test_sigterm_saves_a_checkpoint_exits_143_and_the_resume_continues_the_run(project: Path, seed_store,
                                                                               cli) -> None:
    seed_store(project)
    folder = project / "experiments" / "runs" / "preempted"
    proc = start_training(project, folder, LONGER)
    err = signal_once_checkpointed(proc, folder, signal.SIGTERM)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM at epoch" in err and "Traceback" not in err, err[-3000:]
    saved = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    stopped_at = saved["global_step"]
    assert 2 <= stopped_at < 16, stopped_at  # saved where the signal found it, not at the end
    client, (run,) = mlflow_runs(project, "synthetic")
    assert run.info.status == "KILLED"
    assert f"the same MLflow run {run.info.run_id} continues" in err

    done = cli("train", *LONGER, "ckpt_path=last", f"resume_dir={folder}")  # (the resume needs no new process)
    assert done.returncode == 0, done.stderr[-3000:]
    client, (resumed,) = mlflow_runs(project, "synthetic")
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "val/mIoU")})
    assert len(steps) == 8 and steps[-1] == 15  # every epoch validated once (at step 2k + 1), across both processes


def test_sigkill_then_resume_ends_with_the_metrics_of_an_uninterrupted_run(project: Path, seed_store, tmp_path: Path,
                                                                          mlflow_template, cli) -> None:
    """kill -9 mid-training, resume from last.ckpt: every validation of the resumed run (and of the killed one, up
    to its last checkpoint) equals the uninterrupted run's, and so does the best value. The order of each epoch
    and every item's augmentation depend only on (seed, epoch, index), and the checkpoint keeps the random states."""
    seed_store(project)
    folder = project / "experiments" / "runs" / "killed"
    proc = start_training(project, folder, LONGER)
    err = signal_once_checkpointed(proc, folder, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    done = cli("train", *LONGER, "ckpt_path=last", f"resume_dir={folder}")
    assert done.returncode == 0, done.stderr[-3000:]
    client, (run,) = mlflow_runs(project, "synthetic")

    other = tmp_path / "uninterrupted"
    other.mkdir()
    copy_store(mlflow_template, other)
    straight = fit_in(other, LONGER)
    other_client, (straight_run,) = mlflow_runs(other, "synthetic")
    expected = {m.step: m.value for m in other_client.get_metric_history(straight_run.info.run_id, "val/mIoU")}
    resumed = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/mIoU")]
    assert len(expected) == 8 and {s for s, _ in resumed} == set(expected)
    assert all(value == expected[step] for step, value in resumed), (resumed, expected)
    assert run.data.metrics["val/mIoU"] == straight_run.data.metrics["val/mIoU"]
    assert max(v for _, v in resumed) == straight.best_value


def test_two_trainings_and_a_promotion_racing_on_sqlite_lose_nothing(project: Path, seed_store) -> None:
    """Two `masklab train` and a `masklab promote` start while another connection holds the SQLite store locked
    (each connection waits 1 s here, then MLflow raises "database is locked"): they retry, and once the lock
    is released all three finish; every run is there and the store passes SQLite's integrity check."""
    import sqlite3
    import threading

    seed_store(project)
    first = fit_in(project, [*FAST, "evaluate_after=false", "registry.register=true", "registry.name=racer"])
    assert first.registered == ("racer", "1")
    store = project / "experiments" / "mlflow.db"
    lock = sqlite3.connect(store, timeout=0, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore",
           "MASKLAB_SQLITE_BUSY_TIMEOUT_S": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    commands = [["train", *FAST, "evaluate_after=false", "seed=1"], ["train", *FAST, "evaluate_after=false", "seed=2"],
                ["promote", "name=racer", "version=1", "stage=Staging", "force=true", "reason=race"]]
    procs = [subprocess.Popen([*MASKLAB, *c], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    errs: list[list[str]] = [[] for _ in procs]
    readers = [threading.Thread(target=lambda p=p, e=e: e.extend(p.stderr), daemon=True) for p, e in zip(procs, errs)]
    for r in readers:
        r.start()
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not any("database is locked" in line for e in errs for line in e):
            assert all(p.poll() is None for p in procs), "".join(sum(errs, []))[-3000:]
            time.sleep(0.1)
        time.sleep(2)  # the others hit the lock too
    finally:
        lock.rollback()
        lock.close()
    for p in procs:
        p.wait(timeout=180)
    for r in readers:
        r.join(timeout=10)
    for p, e in zip(procs, errs):
        assert p.returncode == 0, "".join(e)[-3000:]
    assert any("retrying" in line for e in errs for line in e)
    client, runs = mlflow_runs(project, "synthetic")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    assert client.get_model_version("racer", "1").current_stage == "Staging"
    with sqlite3.connect(store) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


WRITER = """
import sys
from pathlib import Path

import numpy as np
import torch
from lightning_fabric.utilities.cloud_io import _atomic_save

from masklab.files import atomic_write

target, kind = Path(sys.argv[1]), sys.argv[2]
for i in range(1, 10**6):
    payload = np.full(8_000_000, i % 251, np.uint8)
    if kind == "file":
        atomic_write(target, lambda tmp: tmp.write_bytes(payload.tobytes()))
    else:  # how Lightning writes every checkpoint (TorchCheckpointIO.save_checkpoint)
        _atomic_save({"step": i, "weights": torch.from_numpy(payload)}, target)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    """kill -9 a process that rewrites an 8 MB file (masklab's atomic_write) or checkpoint (Lightning's) in a loop,
    at several moments: the file on disk is always one whole version, never a torn one."""
    import numpy as np

    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for kind in ("file", "checkpoint"):
        target = tmp_path / f"{kind}.bin"
        for delay in (0.05, 0.21, 0.43):
            proc = subprocess.Popen([sys.executable, str(script), str(target), kind], stderr=subprocess.PIPE)
            deadline = time.time() + 120
            while not target.exists() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
            if kind == "file":
                data = np.frombuffer(target.read_bytes(), np.uint8)
                assert len(data) == 8_000_000 and (data == data[0]).all()
            else:
                saved = torch.load(target, weights_only=True)
                assert (saved["weights"] == saved["step"] % 251).all()
