"""Reproduction that says what it promises: platform records on runs and metrics, and `masklab pipeline check`.

The check runs for real (the CLI, git) in a scratch repository holding pipeline metrics and
platform records; the full `dvc repro` + check round trip is in test_dvc_pipeline.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from masklab.pipeline.check import (
    ACROSS_PLATFORMS,
    EXACT,
    Tolerance,
    check_file,
    compare_metrics,
    flatten_metrics,
)
from masklab.platform import cpu_model, platform_fingerprint

from conftest import run_masklab

EVALUATE = {"val": {"mIoU": 0.894437, "mDice": 0.943271, "iou/circle": 0.902805, "mBoundaryIoU": 0.744506},
            "test": {"mIoU": 0.891002, "mDice": 0.94112}}
TRAIN = {"best_val/mIoU": 0.894437, "epochs": 12}
OTHER_CPU = "Intel(R) Xeon(R) Platinum 8480+"
# The default pipeline's val metrics from the same code and data on two CPU models (git history:
# eb6a377 committed them from another machine of this kind; its code, 6b04d4e, gives the second set
# here, as e8c1361 records).
VAL_OTHER_CPU = {
    "boundary_iou/background": 0.860903, "boundary_iou/circle": 0.719614, "boundary_iou/rectangle": 0.7247,
    "boundary_iou/triangle": 0.692136, "dice/background": 0.991894, "dice/circle": 0.947024,
    "dice/rectangle": 0.934173, "dice/triangle": 0.908291, "iou/background": 0.983918, "iou/circle": 0.899378,
    "iou/rectangle": 0.876477, "iou/triangle": 0.831991, "mBoundaryIoU": 0.749338, "mBoundaryIoU_image": 0.747061,
    "mDice": 0.945345, "mDice_image": 0.912458, "mIoU": 0.897941, "mIoU_image": 0.869089, "pixel_acc": 0.984265,
    "pixel_acc_image": 0.984265
}
VAL_THIS_CPU = {
    "boundary_iou/background": 0.860797, "boundary_iou/circle": 0.727027, "boundary_iou/rectangle": 0.711816,
    "boundary_iou/triangle": 0.678383, "dice/background": 0.991932, "dice/circle": 0.94892,
    "dice/rectangle": 0.928943, "dice/triangle": 0.90329, "iou/background": 0.983993, "iou/circle": 0.902805,
    "iou/rectangle": 0.867314, "iou/triangle": 0.823636, "mBoundaryIoU": 0.744506, "mBoundaryIoU_image": 0.746824,
    "mDice": 0.943271, "mDice_image": 0.912241, "mIoU": 0.894437, "mIoU_image": 0.868992, "pixel_acc": 0.984017,
    "pixel_acc_image": 0.984017
}
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_CONFIG_GLOBAL": os.devnull}


def here_platform() -> dict[str, str]:
    return platform_fingerprint()


def other_platform() -> dict[str, str]:
    return {**platform_fingerprint(), "cpu": OTHER_CPU, "threads": "16"}


def test_flatten_uses_dvc_names_and_keeps_nan_as_missing():
    assert flatten_metrics({"val": {"mIoU": 0.5, "iou/a": None}, "epochs": 3, "note": "x"}) == \
        {"val.mIoU": 0.5, "val.iou/a": None, "epochs": 3}


def test_same_platform_must_be_exact():
    nudged = {**EVALUATE, "val": {**EVALUATE["val"], "mIoU": 0.894438}}
    result = check_file("m.json", EVALUATE, nudged, here_platform(), here_platform())
    assert result.same_platform and result.tolerance == EXACT
    assert [m.metric for m in result.mismatches] == ["val.mIoU"]
    assert result.mismatches[0].describe() == \
        "val.mIoU: committed 0.894437, here 0.894438, |diff| 0.000001 must be equal (same platform)"
    assert not check_file("m.json", EVALUATE, EVALUATE, here_platform(), here_platform()).mismatches


def test_other_platform_allows_the_tolerance_and_names_the_difference():
    moved = {**EVALUATE, "val": {**EVALUATE["val"], "mIoU": 0.897941}}  # the two CPU models' measured values
    result = check_file("m.json", EVALUATE, moved, other_platform(), here_platform())
    assert not result.mismatches and result.tolerance == ACROSS_PLATFORMS
    assert result.differences == {"cpu": (OTHER_CPU, cpu_model()), "threads": ("16", here_platform()["threads"])}
    assert f"cpu '{OTHER_CPU}' committed, '{cpu_model()}' here" in result.describe_platform()
    assert result.largest == ("val.mIoU", pytest.approx(0.003504))



def test_each_metric_family_has_its_bound_and_the_bound_itself_passes():
    bounds = Tolerance(summary=0.01, per_class=0.02, boundary=0.03, boundary_per_class=0.04)
    family = {"val.mIoU": 0.01, "val.pixel_acc_image": 0.01, "best_val/mIoU": 0.01, "val.iou/circle": 0.02,
              "test.dice/triangle": 0.02, "val.mBoundaryIoU": 0.03, "val.mBoundaryIoU_image": 0.03,
              "val.boundary_iou/circle": 0.04}
    assert {name: bounds.allowed(name) for name in family} == family
    committed = dict.fromkeys(family, 0.894437)
    # Exactly the bound passes (despite the binary rounding of the difference); 0.000001 more fails.
    at_bound = {name: round(0.894437 - bound, 6) for name, bound in family.items()}
    assert compare_metrics(committed, at_bound, bounds)[0] == []
    beyond = {name: round(value - 0.000001, 6) for name, value in at_bound.items()}
    mismatches = compare_metrics(committed, beyond, bounds)[0]
    assert sorted(m.metric for m in mismatches) == sorted(family)
    miss = next(m for m in mismatches if m.metric == "val.mIoU")
    assert miss.describe() == "val.mIoU: committed 0.894437, here 0.884436, |diff| 0.010001 > tolerance 0.01"
    # The measured bounds: per-class values and boundary IoU are noisier than region means.
    assert ACROSS_PLATFORMS.summary < ACROSS_PLATFORMS.per_class < ACROSS_PLATFORMS.boundary_per_class
    assert ACROSS_PLATFORMS.summary < ACROSS_PLATFORMS.boundary < ACROSS_PLATFORMS.boundary_per_class


def test_the_two_measured_cpu_models_pass_across_platforms_only():
    across = check_file("m.json", {"val": VAL_OTHER_CPU}, {"val": VAL_THIS_CPU}, other_platform(), here_platform())
    assert not across.mismatches and across.largest == ("val.boundary_iou/triangle", pytest.approx(0.013753))
    same = check_file("m.json", {"val": VAL_OTHER_CPU}, {"val": VAL_THIS_CPU}, here_platform(), here_platform())
    assert len(same.mismatches) == len(VAL_THIS_CPU)  # every metric moved


def test_missing_metric_or_platform_record():
    fewer = {"val": {k: v for k, v in EVALUATE["val"].items() if k != "mDice"}, "test": EVALUATE["test"]}
    result = check_file("m.json", EVALUATE, fewer, here_platform(), here_platform())
    assert [(m.metric, m.committed, m.current) for m in result.mismatches] == [("val.mDice", 0.943271, None)]
    assert "val.mDice: committed 0.943271, here missing" == result.mismatches[0].describe()
    # Metrics committed before platform records existed: the platform is unknown, so the tolerance applies.
    unknown = check_file("m.json", EVALUATE, {**EVALUATE, "test": {"mIoU": 0.89, "mDice": 0.94112}}, None,
                         here_platform())
    assert not unknown.platform_recorded and unknown.tolerance == ACROSS_PLATFORMS and not unknown.mismatches
    assert "records no platform" in unknown.describe_platform()


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                          check=True).stdout


def write_outputs(root: Path, evaluate: dict, platform: dict[str, str]) -> None:
    for stage, metrics in (("train", TRAIN), ("evaluate", evaluate)):
        folder = root / "pipeline" / stage
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (folder / "platform.json").write_text(json.dumps(platform, indent=2, sort_keys=True) + "\n")


def commit(root: Path, evaluate: dict, platform: dict[str, str], message: str) -> None:
    write_outputs(root, evaluate, platform)
    git(root, "add", "pipeline")
    git(root, "commit", "-qm", message)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A git repository whose committed pipeline metrics were made on this platform."""
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, EVALUATE, here_platform(), "pipeline run here")
    return tmp_path


def check_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_masklab(["pipeline", "check", *args], root, timeout=120)


def test_check_cli_on_a_tampered_commit_and_on_another_platform(scratch):
    done = check_cli(scratch)
    assert done.returncode == 0 and "against HEAD: passed" in done.stdout, done.stdout + done.stderr
    assert "pipeline/evaluate/metrics.json: ok, 6 metrics compared (exact); all equal" in done.stdout

    # Someone commits a better val mIoU than the pipeline produces; the work tree holds a real run's output.
    commit(scratch, {**EVALUATE, "val": {**EVALUATE["val"], "mIoU": 0.897437}}, here_platform(), "tampered")
    write_outputs(scratch, EVALUATE, here_platform())
    done = check_cli(scratch)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "masklab pipeline check against HEAD: FAILED" in done.stdout
    assert "same platform as the commit, so every metric must be equal" in done.stdout
    assert "val.mIoU: committed 0.897437, here 0.894437, |diff| 0.003000 must be equal (same platform)" in done.stdout
    assert "pipeline/train/metrics.json: ok" in done.stdout  # only the tampered file fails
    assert check_cli(scratch, "rev=HEAD~1").returncode == 0  # the untampered commit still matches

    # Metrics committed on another CPU model: within the tolerance passes, and says what differs.
    commit(scratch, {**EVALUATE, "val": {**EVALUATE["val"], "mIoU": 0.897941}}, other_platform(), "other cpu")
    write_outputs(scratch, EVALUATE, here_platform())
    done = check_cli(scratch)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"cpu '{OTHER_CPU}' committed, '{cpu_model()}' here" in done.stdout
    assert f"({ACROSS_PLATFORMS.describe()}); largest |diff| 0.003504 (val.mIoU)" in done.stdout

    # ... and beyond it fails, naming the metric, both values, the tolerance and the platform difference.
    far_off = round(0.894437 + ACROSS_PLATFORMS.summary + 0.01, 6)
    commit(scratch, {**EVALUATE, "val": {**EVALUATE["val"], "mIoU": far_off}}, other_platform(), "far off")
    write_outputs(scratch, EVALUATE, here_platform())
    done = check_cli(scratch)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"val.mIoU: committed {far_off}, here 0.894437, |diff| {far_off - 0.894437:.6f} "
            f"> tolerance {ACROSS_PLATFORMS.summary:g}") in done.stdout
    assert f"cpu '{OTHER_CPU}' committed" in done.stdout and "threads '16' committed" in done.stdout
    assert check_cli(scratch, f"tolerance={ACROSS_PLATFORMS.summary + 0.02}").returncode == 0  # one bound for all
    assert check_cli(scratch, "tolerance=-1").returncode == 2


def test_check_cli_user_errors(scratch):
    done = check_cli(scratch, "rev=no-such-rev")
    assert done.returncode == 2 and "'no-such-rev' is not a commit" in done.stderr
    (scratch / "pipeline/evaluate/platform.json").unlink()
    done = check_cli(scratch)
    assert done.returncode == 2 and "platform.json does not exist" in done.stderr and "dvc repro" in done.stderr


def test_new_runs_carry_the_platform_and_existing_runs_keep_theirs(tmp_path):
    from masklab.tracking.runs import PLATFORM_TAG_PREFIX, open_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = open_run(uri, None, str(tmp_path / "artifacts"), "e", {"masklab.command": "evaluate"})
    tags = run.run_data()[2]
    assert {k[len(PLATFORM_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(PLATFORM_TAG_PREFIX)} == \
        platform_fingerprint()
    run.tags({f"{PLATFORM_TAG_PREFIX}cpu": OTHER_CPU})  # as if made elsewhere
    again = open_run(uri, run.run_id, str(tmp_path / "artifacts"), "e", {})
    assert again.run_id == run.run_id and again.run_data()[2][f"{PLATFORM_TAG_PREFIX}cpu"] == OTHER_CPU


def test_training_run_platform_tags_say_how_training_ran(tmp_path):
    """Tags are refreshed when Lightning finalizes the logger, after the Trainer set deterministic mode."""
    import torch

    from masklab.tracking.runs import RunLog, make_lightning_logger

    key = "masklab.platform.deterministic_algorithms"
    before = torch.are_deterministic_algorithms_enabled()
    logger = make_lightning_logger(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "a"), "e", None, {"x": "1"})
    run = RunLog(logger._tracking_uri, logger.run_id)
    assert run.run_data()[2][key] == str(before) and run.run_data()[2]["x"] == "1"
    try:
        torch.use_deterministic_algorithms(not before)
        logger.finalize("success")
    finally:
        torch.use_deterministic_algorithms(before)
    assert run.run_data()[2][key] == str(not before)
