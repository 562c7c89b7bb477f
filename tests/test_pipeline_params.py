"""params.yaml -> Hydra overrides, and the guards of `masklab pipeline` (no DVC needed), in this process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from masklab.commands.pipeline import check_no_dvc_hydra, experiments_redirect
from masklab.config import compose
from masklab.errors import UserError
from masklab.pipeline.params import read_overrides, to_overrides

from conftest import REPO, SHARED_DATASETS, exits_as_user_error


def page_data(index: Path) -> dict:
    """The data an explorer page carries inline (what its script renders: samples, table columns, problems)."""
    match = re.search(r'<script type="application/json" id="masklab-data">(.*?)</script>', index.read_text(), re.S)
    assert match, f"{index}: no inline data"
    return json.loads(match.group(1))


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


def pipeline(args: list[str]) -> None:
    """``masklab pipeline <args>`` without the subprocess (a plain command: its config is params.yaml)."""
    from masklab.commands.pipeline import main

    main(args)


def test_stage_errors_are_one_line(project: Path, capsys):
    (project / "params.yaml").write_text("trainer:\n  max_epochz: 2\n")
    # Hydra's message for a key that does not exist adds its own hint line ("To append ... use +...")
    message = exits_as_user_error("pipeline prepare", lambda: pipeline(["prepare"]), capsys, one_line=False)
    assert "params.yaml" in message and "max_epochz" in message
    exits_as_user_error("pipeline evaluate", lambda: pipeline(["evaluate"]), capsys, one_line=False)
    assert "expected one of" in exits_as_user_error("pipeline nonsense", lambda: pipeline(["nonsense"]), capsys)


def test_prepare_synthesizes_or_imports_from_source(project: Path, capsys, monkeypatch):
    (project / "params.yaml").write_text("data:\n  image_size: 32\n  synth: {count: 6}\n")
    pipeline(["prepare", "data.root=data/synthetic"])
    assert len((project / "data/synthetic/manifest.jsonl").read_text().splitlines()) == 6
    # never over a folder DVC did not clear
    again = exits_as_user_error("pipeline prepare", lambda: pipeline(["prepare", "data.root=data/synthetic"]), capsys)
    assert "exists" in again

    (project / "params.yaml").write_text("experiment: unet-resnet18_membrane-256\n")
    assert "source:" in exits_as_user_error("pipeline prepare", lambda: pipeline(["prepare"]), capsys)
    if not (SHARED_DATASETS / "membrane").is_dir():
        pytest.skip("the shared membrane dataset is not present")
    (project / "params.yaml").write_text("experiment: unet-resnet18_membrane-256\nsource: membrane\n")
    monkeypatch.setenv("MASKLAB_SHARED", str(SHARED_DATASETS.parent))
    capsys.readouterr()
    pipeline(["prepare"])
    assert (project / "data/membrane/manifest.jsonl").is_file() and "Imported" in capsys.readouterr().out


def test_every_stage_runs_an_instance_experiment(project: Path, seed_store, capsys):
    """The DVC stages are task-blind: the bottom-up preset goes prepare -> train -> evaluate -> report
    (in this process; tests/dvc_project.py runs the semantic default through real `dvc repro`)."""
    import json

    (project / "params.yaml").write_text(
        "experiment: bottomup-resnet18_synthetic-64\n"
        "data:\n  image_size: 32\n  batch_size: 4\n"
        "  synth: {count: 12, fractions: {train: 0.5, val: 0.25, test: 0.25}}\n"
        "trainer: {max_epochs: 1, limit_train_batches: 2}\n")
    seed_store(project)
    for stage in ("prepare", "train", "evaluate", "report"):
        pipeline([stage])
    trained = json.loads((project / "pipeline/train/metrics.json").read_text())
    assert "best_val/mask_AP" in json.dumps(trained)
    evaluated = json.loads((project / "pipeline/evaluate/metrics.json").read_text())
    for split in ("val", "test"):
        assert {"mask_AP", "boundary_AP", "PQ", "mIoU"} <= set(evaluated[split]), evaluated[split].keys()
    assert (project / "pipeline/evaluate/per_class.csv").read_text().startswith("class")
    # The report: the trained run's val evaluation, one card per val sample with its objects and table row.
    page = page_data(project / "pipeline/report/index.html")
    rows = [json.loads(line) for line in (project / "data/synthetic_objects/manifest.jsonl").read_text().splitlines()]
    val = [row["id"] for row in rows if row["split"] == "val"]
    assert len(val) == 3 and sorted(page["samples"]["id"]) == sorted(val) and page["problems"] == []
    assert all(page["samples"]["ok"]) and all(page["samples"]["obj"])
    columns = {c["name"]: c["values"] for c in page["columns"]}
    assert {"mask_AP", "n_gt", "n_pred"} <= set(columns) and all(n >= 1 for n in columns["n_gt"]), columns.keys()


def test_cv_and_label_error_stages_cross_validate_the_prepared_folds(project: Path, seed_store, capsys):
    """`cv:` in params.yaml: prepare deals the folds into the manifest, the cv stage trains on them and writes
    mean ± std per metric and out-of-fold predictions, label-errors ranks every sample from them (in this
    process; the stages are what a dvc.yaml lists, see docs/label-errors.md)."""
    import json
    import shutil

    import pandas as pd

    from masklab.data.manifest import read_manifest

    params = ("data:\n  image_size: 32\n  batch_size: 4\n"
              "  synth: {count: 12, fractions: {train: 0.5, val: 0.25, test: 0.25}}\n"
              "trainer: {max_epochs: 1, limit_train_batches: 2}\n")
    (project / "params.yaml").write_text(params)
    seed_store(project)
    pipeline(["prepare"])
    assert "no `cv:` section" in exits_as_user_error("pipeline cv", lambda: pipeline(["cv"]), capsys)
    (project / "params.yaml").write_text(params + "cv: {folds: 2}\n")
    # prepared before `cv:` was in params.yaml: the cv stage does not change another stage's output
    assert "samples have no fold" in exits_as_user_error("pipeline cv", lambda: pipeline(["cv"]), capsys)
    shutil.rmtree(project / "data/synthetic")
    pipeline(["prepare"])
    covered = [s for s in read_manifest(project / "data/synthetic") if s.split in ("train", "val")]
    assert len(covered) == 9 and {s.fold for s in covered} == {0, 1}
    for stage in ("cv", "label-errors"):
        pipeline([stage])
    metrics = json.loads((project / "pipeline/cv/metrics.json").read_text())
    assert set(metrics["mIoU"]) == {"mean", "std"} and 0 <= metrics["mIoU"]["mean"] <= 1
    assert len(list((project / "pipeline/cv/out_of_fold").glob("*.npy"))) == 9
    assert not list((project / "pipeline/cv").glob("fold_*"))  # checkpoints stay out of the stage's outputs
    ranked = pd.read_parquet(project / "pipeline/label_errors/label_errors.parquet")
    assert sorted(ranked["id"]) == sorted(s.id for s in covered) and list(ranked["rank"]) == list(range(1, 10))
    # The explorer of likely label errors: the ranked samples in rank order, each with image, mask and prediction.
    page = page_data(project / "pipeline/label_errors/explorer/index.html")
    assert page["samples"]["id"] == list(ranked["id"]) and page["problems"] == []
    assert {c["name"]: c["values"] for c in page["columns"]}["rank"] == list(range(1, 10))
    assert set(page["samples"]["files"]) == {"igpe"} and page["view"]["name"] == "Likely label errors"
