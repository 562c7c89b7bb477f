"""The DVC pipeline with real DVC and git, in a temporary copy of the project.

One repository is built per module (``repo``: the first `dvc repro`, committed as v1). What a test
needs beyond that is a fixture too, never a test that ran before it: ``fixed`` commits a label fix
(v2) once, for the label-fix test and the fresh-clone test. So every test also runs alone
(``pytest tests/test_dvc_pipeline.py::test_x``). params.yaml is the project's own with tiny sizes
(the debug=fast values), so a pipeline run takes about 25 s, nearly all of it process start-up.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from masklab.data.format import file_sha256
from masklab.data.versioning import data_version
from masklab.platform import cpu_model

from conftest import REPO

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
           MLFLOW_DISABLE_TELEMETRY="true", PYTHONWARNINGS="ignore", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
           GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_GLOBAL=os.devnull)
ENV.pop("MLFLOW_TRACKING_URI", None)
ENV.pop("MASKLAB_ROOT", None)
FAST_PARAMS = {"data": {"image_size": 32, "batch_size": 4, "synth": {"count": 16, "seed": 0}},
               "trainer": {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 2}}
EDITED_MASK = "data/synthetic/masks/synth_00014.png"  # a val sample of the 16-image dataset


def sh(args: list[str], cwd: Path, check: bool = True, timeout: int = 300,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done


def dvc(*args: str, cwd: Path, check: bool = True, timeout: int = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return sh([str(BIN / "dvc"), *args], cwd, check, timeout, env)


def git(*args: str, cwd: Path) -> str:
    return sh(["git", *args], cwd).stdout.strip()


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The project's dvc.yaml, .dvc/config, .dvcignore, conf/ and code in a fresh git repo, reproduced once."""
    root = tmp_path_factory.mktemp("dvcproj") / "project"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / name, root / ".dvc" / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "conf", root / "conf")  # the project's own configs, searched before the package's
    text = (REPO / "params.yaml").read_text()
    comments = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    params = merge(yaml.safe_load(text), FAST_PARAMS)
    (root / "params.yaml").write_text(comments + yaml.safe_dump(params, sort_keys=False))
    git("init", "-q", "-b", "main", cwd=root)
    # Repository-level identity: DVC's experiment commits (pygit2/dulwich) read it even where no
    # global git config exists, as on a fresh CI machine.
    git("config", "user.name", "masklab tests", cwd=root)
    git("config", "user.email", "tests@masklab.invalid", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    done = dvc("repro", cwd=root)
    assert ran_stages(done.stdout) == ["prepare", "train", "evaluate", "report"]
    git("add", "-A", cwd=root)
    git("commit", "-qm", "v1: first pipeline run", cwd=root)
    return root


def metrics(root: Path) -> dict:
    return json.loads((root / "pipeline/evaluate/metrics.json").read_text())


def test_repro_writes_metrics_plots_and_traceable_run(repo):
    assert set(metrics(repo)["val"]) >= {"mIoU", "mBoundaryIoU", "mDice", "iou/background"}
    train_metrics = json.loads((repo / "pipeline/train/metrics.json").read_text())
    assert train_metrics["epochs"] == 2
    history = (repo / "pipeline/train/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 3
    # The best checkpoint is the epoch with the highest val/mIoU (monitor_mode max): the same number.
    rows = list(csv.DictReader(history))
    assert train_metrics["best_val/mIoU"] == max(float(r["val/mIoU"]) for r in rows)
    # Data and masks are DVC's, never git's.
    tracked = git("ls-files", cwd=repo).splitlines()
    assert not [f for f in tracked if f.startswith("data/") or f.endswith(".ckpt")]
    assert "pipeline/evaluate/metrics.json" in tracked and "dvc.lock" in tracked
    # The platform the numbers came from is committed beside them.
    assert {"pipeline/train/platform.json", "pipeline/evaluate/platform.json"} <= set(tracked)
    platform = json.loads((repo / "pipeline/train/platform.json").read_text())
    assert platform["cpu"] == cpu_model() and platform["deterministic_algorithms"] == "True"  # trainer=cpu

    shown = json.loads(dvc("metrics", "show", "--json", cwd=repo).stdout)
    assert shown, "dvc metrics show found nothing"
    plots = json.loads(dvc("plots", "show", "--json", cwd=repo).stdout)["data"]
    assert any("Validation scores per epoch" in key for key in plots), list(plots)
    assert any(key.endswith("val_confusion.png") for key in plots), list(plots)

    # The MLflow run names the commit and the exact data version (DVC hash of data/synthetic in dvc.lock).
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    data_md5 = lock["stages"]["prepare"]["outs"][0]["md5"]
    run_info = json.loads((repo / "pipeline/train/run.json").read_text())
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{repo}/experiments/mlflow.db").get_run(run_info["mlflow_run_id"])
    assert run.data.tags["masklab.dataset_dvc_md5"] == data_md5 == run_info["dataset_dvc_md5"]
    assert run.data.tags["masklab.dvc_stage"] == "train"
    # `dvc repro` ran on the parent of the commit that recorded its outputs (v1 here, or v2 after a label fix).
    recorded_in = git("log", "-1", "--format=%H", "--", "pipeline/train/run.json", cwd=repo)
    assert run.data.tags["masklab.git_commit"].startswith(git("rev-parse", f"{recorded_in}~1", cwd=repo))
    assert run.data.metrics["eval/val/mIoU"] == pytest.approx(metrics(repo)["val"]["mIoU"], abs=1e-6)
    # ... and the run carries the same platform record as tags.
    assert {key: run.data.tags[f"masklab.platform.{key}"] for key in platform} == platform


def test_second_repro_does_nothing(repo):
    done = dvc("repro", cwd=repo)
    assert ran_stages(done.stdout) == [] and "up to date" in done.stdout
    assert "up to date" in dvc("status", cwd=repo).stdout


@dataclass
class LabelFix:
    """What the label fix saw on its way (for the test that checks it) and the two mask versions."""

    original: str  # sha256 of the mask before the fix
    fixed: str  # and after
    mIoU_before: float
    recorded_md5: str  # the data version in dvc.lock before the fix
    committed_md5: str  # and after `data record-edits`
    status_before_record: tuple[str, str]  # data_version() of the edited, unrecorded folder
    record_output: str  # stdout of `masklab data record-edits`
    dvc_status_after_record: dict
    ran_after_record: list[str]  # stages `dvc repro` ran after the fix
    metrics_diff: dict


@pytest.fixture(scope="module")
def fixed(repo) -> LabelFix:
    """A hand-fixed mask recorded with `masklab data record-edits`, reproduced and committed as v2."""
    mask_path = repo / EDITED_MASK
    original = file_sha256(mask_path)
    before = metrics(repo)["val"]["mIoU"]
    mask = np.array(Image.open(mask_path))
    mask[: mask.shape[0] // 2] = 1  # "fix" the top half to class 1
    Image.fromarray(mask).save(mask_path)
    recorded = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"]
    status_before = data_version(repo / "data/synthetic")
    record = sh([str(BIN / "masklab"), "data", "record-edits", "data.root=data/synthetic"], repo)
    dvc_status = json.loads(dvc("status", "--json", cwd=repo).stdout)
    committed = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"]
    done = dvc("repro", cwd=repo)
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "v2: fixed synth_00014", cwd=repo)
    return LabelFix(original, file_sha256(mask_path), before, recorded, committed, status_before, record.stdout,
                    dvc_status, ran_stages(done.stdout), diff)


def test_label_fix_reruns_only_dependents_and_checkout_restores_bytes(repo, fixed):
    mask_path = repo / EDITED_MASK
    # A run started before recording, outside DVC, would be tagged with the bytes on disk, marked as not committed.
    md5, status = fixed.status_before_record
    assert status == "modified" and md5 != fixed.recorded_md5 and md5.endswith(".dir")
    assert "recorded 1 edited mask(s): synth_00014" in fixed.record_output and "dvc commit" in fixed.record_output
    assert "prepare" not in fixed.dvc_status_after_record, fixed.dvc_status_after_record
    assert fixed.committed_md5 not in (fixed.recorded_md5, md5)  # a new version: the new bytes and checksums
    assert data_version(repo / "data/synthetic") == (fixed.committed_md5, "committed")

    assert fixed.ran_after_record == ["train", "evaluate", "report"]
    changed = fixed.metrics_diff["pipeline/evaluate/metrics.json"]["val.mIoU"]
    assert changed["old"] == pytest.approx(fixed.mIoU_before) and changed["new"] != pytest.approx(fixed.mIoU_before)
    original, fixed_sha = fixed.original, fixed.fixed

    # The previous data version comes back byte for byte, and the fix with it.
    git("checkout", "-q", "HEAD~1", cwd=repo)
    dvc("checkout", "--force", cwd=repo)
    assert file_sha256(mask_path) == original
    git("checkout", "-q", "main", cwd=repo)
    dvc("checkout", "--force", cwd=repo)
    assert file_sha256(mask_path) == fixed_sha
    assert "up to date" in dvc("status", cwd=repo).stdout


def test_push_then_fresh_clone_pulls_data_and_reproduces_metrics(repo, fixed):
    dvc("push", cwd=repo)
    remote = (repo / ".dvc" / "../../masklab-dvc-remote").resolve()
    assert remote.is_dir() and any(remote.rglob("*")), "the default local remote got nothing"

    clone = repo.parent / "clone"  # a sibling: the default remote (../masklab-dvc-remote) is the same folder
    sh(["git", "clone", "-q", str(repo), str(clone)], repo.parent)
    # Without the data, prepare would regenerate the unfixed masks: it refuses and says what to do.
    refused = dvc("repro", cwd=clone, check=False)
    assert refused.returncode != 0
    assert "dvc pull data/synthetic" in refused.stdout + refused.stderr

    dvc("pull", "data/synthetic", cwd=clone)
    assert file_sha256(clone / EDITED_MASK) == file_sha256(repo / EDITED_MASK)
    done = dvc("repro", cwd=clone)
    assert ran_stages(done.stdout) == ["train", "evaluate", "report"]
    # Deterministic CPU training: the same numbers as the committed ones.
    assert json.loads(dvc("metrics", "diff", "--json", cwd=clone).stdout) == {}
    # The check the README gives for this: same platform, so exact, and it says so.
    checked = sh([str(BIN / "masklab"), "pipeline", "check"], clone)
    assert "against HEAD: passed" in checked.stdout and "same platform as the commit" in checked.stdout

    dvc("pull", cwd=clone)  # everything else the remote holds arrives too
    assert (clone / "pipeline/train/model.ckpt").is_file()


def test_exp_run_set_param(repo):
    done = dvc("exp", "run", "-S", "model=fpn", "-S", "optimizer.lr=0.0003", cwd=repo)
    assert ran_stages(done.stdout) == ["train", "evaluate", "report"]
    params = (repo / "params.yaml").read_text()
    assert yaml.safe_load(params)["model"] == "fpn" and params.startswith("# ")  # edited in place, comments kept
    config = yaml.safe_load((repo / "pipeline/train/config.yaml").read_text())
    assert config["model"]["arch"] == "FPN" and config["optimizer"]["lr"] == 0.0003
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    exps = [e for row in rows for e in (row.get("experiments") or [])]
    values = [r["data"] for e in exps for r in e["revs"]]
    assert any(v["params"]["params.yaml"]["data"]["model"] == "fpn"
               and v["metrics"]["pipeline/evaluate/metrics.json"]["data"]["val"]["mIoU"] is not None for v in values)
    git("checkout", "-q", "--", ".", cwd=repo)
    dvc("checkout", "--force", cwd=repo)


def test_queued_grid_runs_and_logs_to_the_main_store(repo):
    dvc("exp", "run", "--queue", "-S", "optimizer.lr=0.001,0.003", cwd=repo)
    dvc("queue", "start", cwd=repo)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            status = dvc("queue", "status", cwd=repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(3)
    finally:
        dvc("queue", "stop", "--kill", cwd=repo, check=False)  # no worker outlives the test
    assert status.count("Success") == 2, status
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    lrs = {r["data"]["params"]["params.yaml"]["data"]["optimizer"]["lr"]
           for row in rows for e in (row.get("experiments") or []) for r in e["revs"]}
    assert {0.001, 0.003} <= lrs
    # Queued experiments run in .dvc/tmp/exps/<tmp>; their MLflow runs still land in the project's store.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/experiments/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    queued = [r for r in runs if r.data.params.get("optimizer.lr") in ("0.001", "0.003")]
    assert len(queued) == 2 and all(r.data.tags.get("masklab.dvc_experiment") for r in queued)
    assert all("eval/val/mIoU" in r.data.metrics for r in queued)
