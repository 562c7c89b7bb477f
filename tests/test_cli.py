"""The CLI surface: help, composed configs, clear errors for mistyped keys and options, sweeps.

``masklab.cli.main`` runs in this process (the ``cli`` fixture): Hydra's parsing of the command line and its
errors are the same there, without a subprocess's 8-11 s of imports. Only the import cost of a fresh
interpreter needs one (the --help test).
"""

from __future__ import annotations

import subprocess
import sys

from conftest import FAST, mlflow_runs


def test_help_lists_every_command_without_importing_the_heavy_stack(project):
    # How fast `masklab --help` starts is measured in benchmarks/cli_startup.py; here: what makes it fast.
    # A fresh interpreter (a subprocess): this process has imported the heavy stack already.
    code = ("import sys; from masklab.cli import main; main(['--help']); "
            "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'mlflow', 'hydra', 'omegaconf', 'rich') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for words in ("train", "evaluate", "data synth", "data import", "data check", "data preview", "ui"):
        assert f"\n  {words} " in out.stdout
    assert out.stdout.rstrip().splitlines()[-1] == "HEAVY []"


def test_unknown_command_is_an_error(project, cli):
    res = cli("trian")
    assert res.returncode == 2
    assert "unknown command 'trian'" in res.stderr


def test_cfg_job_prints_composed_config(project, cli):
    res = cli("train", "model=fpn", "model.encoder=resnet34", "--cfg", "job", "--resolve")
    assert res.returncode == 0, res.stderr
    assert "arch: FPN" in res.stdout and "encoder: resnet34" in res.stdout
    assert "monitor: val/mIoU" in res.stdout  # the semantic task's default monitor


def test_mistyped_key_is_short_clear_error(project, cli):
    res = cli("train", "trainer.max_epoch=3")
    assert res.returncode == 2  # a config mistake is the user's, not a bug
    assert "max_epoch" in res.stderr
    assert "Traceback" not in res.stderr


def test_mistyped_group_option_lists_valid_options(project, cli):
    res = cli("train", "model=unett")
    assert res.returncode == 2
    assert "unett" in res.stderr
    for option in ("unet", "fpn", "deeplabv3plus", "segformer"):
        assert option in res.stderr
    assert "Traceback" not in res.stderr


def test_null_for_a_config_group_is_one_line_and_null_for_a_value_is_kept(project, cli):
    """Hydra raises a ValueError (and prints its traceback) for `<group>=null`; masklab names the group instead."""
    (project / "conf" / "mygroup").mkdir(parents=True)  # a project's own config group counts too
    for override, group in (("experiment=null", "experiment"), ("+mygroup=null", "mygroup")):
        res = cli("train", override)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines() == [
            f"masklab: error: {override}: '{group}' is a config group and takes one of its options "
            f"(masklab {group}=<name>); to drop its default, write ~{group}"]
    res = cli("train", "seed=null", "--cfg", "job")  # a value may be null
    assert res.returncode == 0 and "seed: null" in res.stdout, res.stderr


def test_user_error_in_command_has_no_traceback(project, cli):
    res = cli("evaluate", "ckpt_path=missing.ckpt")
    assert res.returncode == 2
    assert "missing.ckpt" in res.stderr and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_grid_sweep_gives_one_mlflow_run_per_job(project, seed_store, cli):
    seed_store(project)  # a migrated store: the multirun skips MLflow's migrations
    res = cli("train", *FAST, "trainer.max_epochs=1", "evaluate_after=false", "-m", "optimizer.lr=0.001,0.003")
    assert res.returncode == 0, res.stderr[-3000:]
    _, runs = mlflow_runs(project, "synthetic")
    lrs = sorted(r.data.params["optimizer.lr"] for r in runs)
    assert lrs == ["0.001", "0.003"]
    assert all("val/mIoU" in r.data.metrics for r in runs)
    assert len(list((project / "experiments" / "multiruns").rglob("checkpoints/last.ckpt"))) == 2
