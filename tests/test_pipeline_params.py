"""params.yaml -> Hydra overrides, and the guards of `masklab pipeline` (no DVC needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from masklab.commands.pipeline import check_no_dvc_hydra, experiments_redirect
from masklab.config import compose
from masklab.errors import UserError
from masklab.pipeline.params import read_overrides, to_overrides

from conftest import REPO, SHARED_DATASETS, run_masklab


def test_nested_params_become_dotted_overrides_that_hydra_reads_back():
    params = {"experiment": "unet-resnet18_synthetic-96", "model": "fpn", "optimizer": {"lr": 0.0003},
              "data": {"synth": {"fractions": {"train": 0.8}}}, "tags": {"note": "two words"},
              "loss": {"weights": [1, 2.5]}, "resume_dir": None, "flag": True, "name": "1.0", "empty": {}}
    overrides = to_overrides(params)
    assert overrides[:4] == ["experiment=unet-resnet18_synthetic-96", "model=fpn", "optimizer.lr=0.0003",
                             "data.synth.fractions.train=0.8"]
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    assert parsed["tags.note"] == "two words" and parsed["loss.weights"] == [1, 2.5]
    assert parsed["resume_dir"] is None and parsed["flag"] is True and parsed["name"] == "1.0"


def test_project_params_compose_to_the_demo_config():
    cfg = compose("train", read_overrides(REPO / "params.yaml"), "params.yaml")
    assert cfg.experiment_name == "unet-resnet18_synthetic-96" and cfg.model.arch == "Unet"
    assert cfg.data.synth.count == 400 and cfg.trainer.max_epochs == 12


def test_bad_params_are_errors_naming_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("model: nosuchmodel\n")
    with pytest.raises(UserError, match="params.yaml.*nosuchmodel"):
        compose("train", read_overrides(bad), str(bad))
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="expected a mapping"):
        read_overrides(bad)
    with pytest.raises(UserError, match="no such file"):
        read_overrides(tmp_path / "missing.yaml")


def test_dvc_hydra_composition_is_refused(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = local\n")
    check_no_dvc_hydra(tmp_path)
    (tmp_path / ".dvc" / "config.local").write_text("[hydra]\n    enabled = True\n")
    with pytest.raises(UserError, match="hydra.enabled"):
        check_no_dvc_hydra(tmp_path)


def test_queued_experiments_keep_runs_in_the_main_checkout(tmp_path):
    temp_workspace = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12"
    temp_workspace.mkdir(parents=True)
    assert experiments_redirect(temp_workspace) == [f"paths.experiments_dir={tmp_path / 'proj' / 'experiments'}"]
    assert experiments_redirect(tmp_path) == []


def test_stage_errors_are_one_line(project: Path):
    (project / "params.yaml").write_text("trainer:\n  max_epochz: 2\n")
    res = run_masklab(["pipeline", "prepare"], project)
    assert res.returncode == 2 and "params.yaml" in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = run_masklab(["pipeline", "evaluate"], project)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = run_masklab(["pipeline", "nonsense"], project)
    assert res.returncode == 2 and "expected one of" in res.stderr


def test_prepare_synthesizes_or_imports_from_source(project: Path):
    (project / "params.yaml").write_text("data:\n  image_size: 32\n  synth: {count: 6}\n")
    res = run_masklab(["pipeline", "prepare", "data.root=data/synthetic"], project)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len((project / "data/synthetic/manifest.jsonl").read_text().splitlines()) == 6
    again = run_masklab(["pipeline", "prepare", "data.root=data/synthetic"], project)
    assert again.returncode == 2 and "exists" in again.stderr  # never over a folder DVC did not clear

    (project / "params.yaml").write_text("experiment: unet-resnet18_membrane-256\n")
    res = run_masklab(["pipeline", "prepare"], project)
    assert res.returncode == 2 and "source:" in res.stderr, res.stderr
    if not (SHARED_DATASETS / "membrane").is_dir():
        pytest.skip("the shared membrane dataset is not present")
    (project / "params.yaml").write_text("experiment: unet-resnet18_membrane-256\nsource: membrane\n")
    res = run_masklab(["pipeline", "prepare"], project, env={"MASKLAB_SHARED": str(SHARED_DATASETS.parent)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert (project / "data/membrane/manifest.jsonl").is_file() and "Imported" in res.stdout
