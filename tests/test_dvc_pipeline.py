"""The DVC pipeline with real DVC and git, in a temporary copy of the project.

One repository is built per module (``repo``: the first `dvc repro`, committed as v1; see
dvc_project.py, also used by test_dvc_experiments.py). What a test
needs beyond that is a fixture too, never a test that ran before it: ``fixed`` commits a label fix
(v2) once, for the label-fix test and the fresh-clone test. So every test also runs alone
(``pytest tests/test_dvc_pipeline.py::test_x``). params.yaml is the project's own with tiny sizes
(the debug=fast values) and a 0.77 M-parameter model of the project's conf/ (dvc_project.TINY_MODELS), so a
pipeline run's time is nearly all process start-up: one masklab process per stage, started by DVC. The masklab
commands a user types between DVC's (`data record-edits`, `pipeline check`) run in this process.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from masklab.data.sample_files import file_sha256
from masklab.data.versioning import data_version
from masklab.platform import cpu_model

from conftest import command_in, copy_store, in_project
from dvc_project import EDITED_MASK, ENV, dvc, git, git_clone, ran_stages, reproduced_project


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mlflow_template) -> Path:
    return reproduced_project(tmp_path_factory, mlflow_template)


def masklab_in(root: Path, run):
    """``run()`` (a masklab command in this process) in the DVC project ``root``, with the environment the DVC
    commands get (the command may run DVC itself)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ENV.items():
            patch.setenv(key, value)
        in_project(patch, root)
        return run()


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
    with contextlib.redirect_stdout(io.StringIO()) as record:  # in this process: a command like any other
        masklab_in(repo, lambda: command_in(repo, "data record-edits", ["data.root=data/synthetic"]))
    dvc_status = json.loads(dvc("status", "--json", cwd=repo).stdout)
    committed = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"]
    done = dvc("repro", cwd=repo)
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "v2: fixed synth_00014", cwd=repo)
    return LabelFix(original, file_sha256(mask_path), before, recorded, committed, status_before, record.getvalue(),
                    dvc_status, ran_stages(done.stdout), diff)


def test_label_fix_reruns_only_dependents_and_checkout_restores_bytes(repo, fixed):
    mask_path = repo / EDITED_MASK
    # A run started before recording, outside DVC, would be tagged with the bytes on disk, marked as not committed.
    md5, status = fixed.status_before_record
    assert status == "modified" and md5 != fixed.recorded_md5 and md5.endswith(".dir")
    assert "recorded 1 new or edited label(s): synth_00014" in fixed.record_output
    assert "dvc commit" in fixed.record_output
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


def test_push_then_fresh_clone_pulls_data_and_reproduces_metrics(repo, fixed, mlflow_template, cli):
    dvc("push", cwd=repo)
    remote = (repo / ".dvc" / "../../masklab-dvc-remote").resolve()
    assert remote.is_dir() and any(remote.rglob("*")), "the default local remote got nothing"

    clone = git_clone(repo, repo.parent / "clone")  # a sibling: the default remote (../masklab-dvc-remote) is shared
    # Without the data, prepare would regenerate the unfixed masks: it refuses and says what to do.
    refused = dvc("repro", cwd=clone, check=False)
    assert refused.returncode != 0
    assert "dvc pull data/synthetic" in refused.stdout + refused.stderr

    dvc("pull", "data/synthetic", cwd=clone)
    copy_store(mlflow_template, clone)  # (the clone's own MLflow store, migrated already)
    assert file_sha256(clone / EDITED_MASK) == file_sha256(repo / EDITED_MASK)
    done = dvc("repro", cwd=clone)
    assert ran_stages(done.stdout) == ["train", "evaluate", "report"]
    # Deterministic CPU training: the same numbers as the committed ones.
    assert json.loads(dvc("metrics", "diff", "--json", cwd=clone).stdout) == {}
    # The check the README gives for this: same platform, so exact, and it says so.
    checked = masklab_in(clone, lambda: cli("pipeline", "check"))
    assert checked.returncode == 0, checked.stderr
    assert "against HEAD: passed" in checked.stdout and "same platform as the commit" in checked.stdout

    dvc("pull", cwd=clone)  # everything else the remote holds arrives too
    assert (clone / "pipeline/train/model.ckpt").is_file()
