"""Registry lifecycle against real MLflow: register, gated promotion, aliases, history, predict, server mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masklab.errors import UserError

from conftest import (
    DEBUG_FAST,
    FAST,
    command_in,
    copy_store,
    exits_as_user_error,
    fit_in,
    free_port,
    in_project,
    run_masklab,
)

NAME = "shapes"


def command(project: Path, words: str, *overrides: str) -> None:
    """``masklab <words> <overrides>`` in this process, with a run folder under ``project`` (where promote's gate
    writes the evaluations it makes)."""
    command_in(project, words, list(overrides))


def command_ok(project: Path, capsys: pytest.CaptureFixture, words: str, *overrides: str) -> str:
    """stdout of :func:`command` (which must not fail)."""
    capsys.readouterr()
    command(project, words, *overrides)
    return capsys.readouterr().out


def newest(records, **where):
    from masklab.tracking.evaluations import newest as pick

    return pick(records, **where)


def registry(uri: str):
    from masklab.tracking.registry import Registry

    return Registry(uri)


def local_uri(project: Path) -> str:
    return f"sqlite:///{project}/experiments/mlflow.db"


def stage_of(uri: str, version: int) -> str:
    return registry(uri).version(NAME, version).current_stage


def alias_version(uri: str, alias: str) -> str | None:
    return registry(uri)._alias_version(NAME, alias)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, mlflow_template):
    """A project with two registered versions of NAME trained on the same dataset (in this process; the CLI's
    train-and-register is in test_server_mode_register_promote_predict)."""
    project = tmp_path_factory.mktemp("registry")
    copy_store(mlflow_template, project)
    for version, extra in (("1", []), ("2", ["seed=7"])):
        done = fit_in(project, [*FAST, "trainer.max_epochs=1", "registry.register=true", f"registry.name={NAME}",
                                *extra], f"v{version}")
        assert done.registered == (NAME, version)
    return project


def ensure_production(project: Path) -> str:
    """The version in Production, forcing version 1 there if none is (tests may run alone)."""
    reg = registry(local_uri(project))
    held = reg.in_stage(NAME, "Production")
    if held is None:
        reg.promote(NAME, 1, "Production", None, force=True, reason="test set-up")
        return "1"
    return str(held.version)


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def record(split: str = "val", value: float = 0.5, manifest: str = "a" * 64, dataset: str = "shapes",
           resolution: str = "original", model: str = "runs:/x", created: float | None = None, **extra):
    from masklab.evaluation.record import EvaluationRecord

    metrics = {f"eval/{split}/mIoU": value, **extra}
    return EvaluationRecord(model=model, dataset=dataset, manifest_sha256=manifest, split=split,
                            resolution=resolution, metrics=metrics, input_rule={"mode": "resize", "size": [32, 32]},
                            created=time.time() if created is None else created)


@pytest.fixture(scope="module")
def bare_store(tmp_path_factory):
    """A SQLite MLflow store holding one run and version 1 of NAME made from it (no training)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("records")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("records", artifact_location=(folder / "artifacts").as_uri())
    run = client.create_run(exp)
    client.create_registered_model(NAME)
    client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run.info.run_id)
    return uri, run.info.run_id


def test_evaluation_records_on_runs_and_versions(bare_store):
    from masklab.tracking.evaluations import evaluations_for_run, evaluations_for_version, log_evaluation

    uri, run_id = bare_store
    log_evaluation(uri, record("val", 0.5, created=1.0), run_id=run_id)
    log_evaluation(uri, record("test", 0.4, created=2.0), run_id=run_id)
    log_evaluation(uri, record("val", 0.6, created=3.0), run_id=run_id)  # the same number, measured again
    on_run = evaluations_for_run(uri, run_id)
    assert [(r.split, r.metric("mIoU")) for r in on_run] == [("test", 0.4), ("val", 0.6)]
    # Another dataset version is another number: it sits beside the first, it does not replace it.
    log_evaluation(uri, record("val", 0.7, manifest="b" * 64, created=4.0), run_id=run_id)
    assert len(evaluations_for_run(uri, run_id)) == 3

    # The version sees its run's records; its own record of the same key wins over the run's.
    log_evaluation(uri, record("test", 0.45, model=f"models:/{NAME}/1", created=5.0), model_version=(NAME, "1"))
    on_version = {(r.split, r.manifest_sha256[:1]): r for r in evaluations_for_version(uri, NAME, 1)}
    assert set(on_version) == {("val", "a"), ("val", "b"), ("test", "a")}
    assert on_version["test", "a"].metric("mIoU") == 0.45 and on_version["test", "a"].model == f"models:/{NAME}/1"
    assert on_version["val", "a"].metric("eval/val/mIoU") == 0.6
    assert [r.split for r in evaluations_for_run(uri, run_id)].count("test") == 1  # the run's own is untouched
    assert evaluations_for_run(uri, run_id)[0].metric("mIoU") == 0.4


def test_large_records_keep_their_summary_on_a_version_tag(bare_store):
    from mlflow.tracking import MlflowClient

    from masklab.tracking.evaluations import (
        MAX_VERSION_TAG_BYTES,
        VERSION_TAG_PREFIX,
        evaluations_for_version,
        log_evaluation,
        storage_key,
    )

    uri, run_id = bare_store
    per_class = {f"eval/val/iou/class_{i:03d}": i / 400 for i in range(400)}
    big = record("val", 0.8, manifest="c" * 64, **per_class)
    assert len(big.to_json()) > MAX_VERSION_TAG_BYTES
    log_evaluation(uri, big, run_id=run_id, model_version=(NAME, "1"))
    tag = MlflowClient(uri).get_model_version(NAME, "1").tags[VERSION_TAG_PREFIX + storage_key(big)]
    assert len(tag.encode()) <= MAX_VERSION_TAG_BYTES and '"metrics_dropped": 400' in tag
    stored = next(r for r in evaluations_for_version(uri, NAME, 1) if r.manifest_sha256 == "c" * 64)
    assert stored.metrics == {"eval/val/mIoU": 0.8}
    from masklab.tracking.evaluations import evaluations_for_run

    on_run = next(r for r in evaluations_for_run(uri, run_id) if r.manifest_sha256 == "c" * 64)
    assert on_run.metrics == big.metrics  # the run's artifact keeps every metric


def test_evaluation_records_name_what_is_missing(bare_store):
    from masklab.tracking.evaluations import evaluations_for_run, evaluations_for_version, log_evaluation

    uri, _ = bare_store
    with pytest.raises(UserError, match="run_id=0123456789abcdef0123456789abcdef"):
        evaluations_for_run(uri, "0123456789abcdef0123456789abcdef")
    with pytest.raises(UserError, match=f"model '{NAME}' version 42"):
        evaluations_for_version(uri, NAME, 42)
    with pytest.raises(UserError, match=f"model '{NAME}' version 42"):
        log_evaluation(uri, record(), model_version=(NAME, "42"))
    with pytest.raises(ValueError, match="run_id and/or model_version"):
        log_evaluation(uri, record())


def new_model(uri: str, name: str, versions: int = 2) -> list[str]:
    """Register ``versions`` versions of ``name``, each from its own (empty) run; returns their run ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("records").experiment_id
    client.create_registered_model(name)
    runs = []
    for _ in range(versions):
        run = client.create_run(exp)
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        runs.append(run.info.run_id)
    return runs


class FakeEvaluator:
    """Stands in for the evaluate workflow: scores each version with a fixed value on manifest ``manifest``."""

    def __init__(self, values: dict[str, float], manifest: str):
        self.values, self.manifest, self.calls = values, manifest, []

    def __call__(self, model_uri: str, dataset: str, split: str):
        self.calls.append((model_uri, dataset, split))
        return record(split, self.values[model_uri], manifest=self.manifest, dataset=dataset, model=model_uri)


def test_gate_compares_records_of_the_same_data_and_keeps_them(bare_store):
    from masklab.tracking.evaluations import log_evaluation
    from masklab.tracking.registry import Gate, Registry
    from masklab.workflows.registry import promote

    uri, _ = bare_store
    name = "gate_same_data"
    run1, run2 = new_model(uri, name)
    reg = Registry(uri)
    reg.promote(name, 1, "Production", None, force=True, reason="set-up")
    log_evaluation(uri, record("val", 0.6, dataset="shapes", model=f"runs:/{run1}", created=1.0), run_id=run1)
    log_evaluation(uri, record("val", 0.7, dataset="shapes", model=f"runs:/{run2}", created=2.0), run_id=run2)
    # The run's latest metric is no longer what the gate reads.
    reg.client.log_metric(run1, "eval/val/mIoU", 0.99)

    with pytest.raises(UserError, match="mIoU of version 2 is 0.7000, Production version 1 has 0.6000") as refused:
        promote(uri, name, 2, "Production", Gate(min_delta=0.2))
    assert f"runs:/{run2} on shapes@aaaaaaaaaaaa split=val resolution=original" in str(refused.value)
    assert f"runs:/{run1} on shapes@aaaaaaaaaaaa split=val resolution=original" in str(refused.value)
    assert reg.version(name, 1).current_stage == "Production" and reg.version(name, 2).current_stage == "None"

    done = promote(uri, name, 2, "Production", Gate(min_delta=0.05))
    assert (done.from_stage, done.to_stage) == ("None", "Production")
    assert "0.7000" in done.describe() and "0.6000" in done.describe() and "gate passed" in done.describe()
    entry = [e for e in reg.history(name) if e["to"] == "Production"][-1]
    assert entry["version"] == 2 and entry["gate"]["passed"] is True
    assert entry["gate"]["challenger"]["value"] == 0.7 and entry["gate"]["incumbent"]["value"] == 0.6
    assert entry["gate"]["incumbent"]["scored"] == f"runs:/{run1} on shapes@aaaaaaaaaaaa split=val resolution=original"


def test_a_gate_metric_no_evaluation_logs_is_refused_before_anything_is_scored(bare_store):
    """`registry.gate.metric=boundary_mIoU` (what the registry config once offered) is refused at promote time,
    with the names the version's task logs, before the evaluator scores anything for it."""
    from masklab.tasks.semantic import SemanticTask
    from masklab.tracking.registry import Gate
    from masklab.workflows.registry import promote

    uri, _ = bare_store
    name = "gate_bad_metric"
    new_model(uri, name, versions=1)
    evaluator = FakeEvaluator({f"models:/{name}/1": 0.5}, "a" * 64)
    with pytest.raises(UserError, match=r"registry.gate.metric=boundary_mIoU: a semantic evaluation logs no such "
                                        r"metric; expected one of \['mIoU', 'mDice', .*'iou/<class>'"):
        promote(uri, name, 1, "Production", Gate(metric="boundary_mIoU"), dataset="shapes", evaluator=evaluator)
    assert evaluator.calls == []
    assert all(SemanticTask.logs_metric(m) for m in ("mBoundaryIoU", "iou/cœur ♥", "pixel_acc_image"))
    assert not any(SemanticTask.logs_metric(m) for m in ("boundary_mIoU", "iou/", "mask_AP", "loss"))


def test_gate_rescores_the_incumbent_on_a_fixed_dataset_version(bare_store):
    from masklab.tracking.evaluations import log_evaluation
    from masklab.tracking.registry import Gate, Registry
    from masklab.workflows.registry import promote

    uri, _ = bare_store
    name = "gate_label_fix"
    run1, run2 = new_model(uri, name)
    reg = Registry(uri)
    reg.promote(name, 1, "Production", None, force=True)
    log_evaluation(uri, record("val", 0.9, dataset="shapes", manifest="a" * 64, created=1.0), run_id=run1)
    # Labels fixed: version 2 was scored on the new dataset version only.
    log_evaluation(uri, record("val", 0.7, dataset="shapes", manifest="b" * 64, created=2.0), run_id=run2)

    with pytest.raises(UserError, match="gate: model 'gate_label_fix' version 1 has no mIoU") as refused:
        promote(uri, name, 2, "Production", Gate())
    assert "version 1 has no mIoU on shapes@bbbbbbbbbbbb split=val resolution=original" in str(refused.value)
    assert f"masklab evaluate model=models:/{name}/1 data=shapes split=val" in str(refused.value)

    evaluator = FakeEvaluator({f"models:/{name}/1": 0.65}, manifest="b" * 64)
    done = promote(uri, name, 2, "Production", Gate(), evaluator=evaluator)
    assert evaluator.calls == [(f"models:/{name}/1", "shapes", "val")]  # the challenger's score stood
    assert done.gate.incumbent_record.manifest_sha256 == "b" * 64 and done.gate.refusal is None
    assert reg.version(name, 2).current_stage == "Production"
    # The new score belongs to version 1 from now on (the gate does not score it twice).
    rescored = [r for r in reg.evaluations(name, 1) if r.manifest_sha256 == "b" * 64]
    assert [r.metric("mIoU") for r in rescored] == [0.65] and rescored[0].model == f"models:/{name}/1"


def test_gate_split_auto_takes_test_and_scores_what_is_missing(bare_store):
    from masklab.tracking.evaluations import log_evaluation
    from masklab.tracking.registry import Gate, Registry
    from masklab.workflows.registry import promote

    uri, _ = bare_store
    name = "gate_auto_split"
    run1, run2 = new_model(uri, name)
    Registry(uri).promote(name, 1, "Production", None, force=True)
    for run, value in ((run1, 0.5), (run2, 0.9)):  # val scores only: the gate must not use them
        log_evaluation(uri, record("val", value, dataset="shapes"), run_id=run)
    evaluator = FakeEvaluator({f"models:/{name}/2": 0.4, f"models:/{name}/1": 0.45}, manifest="a" * 64)
    with pytest.raises(UserError, match="mIoU of version 2 is 0.4000, Production version 1 has 0.4500"):
        promote(uri, name, 2, "Production", Gate(), evaluator=evaluator, splits=lambda d: ["train", "val", "test"])
    assert evaluator.calls == [(f"models:/{name}/2", "shapes", "test"), (f"models:/{name}/1", "shapes", "test")]
    # Forced: promoted, and the history says past which numbers.
    done = promote(uri, name, 2, "Production", Gate(), force=True, reason="hotfix", evaluator=evaluator,
                   splits=lambda d: ["train", "val", "test"])
    assert done.forced and done.gate.refusal and "forced past the gate" in done.describe()
    assert len(evaluator.calls) == 2  # the scores made by the refused attempt were kept on the versions
    entry = [e for e in Registry(uri).history(name) if e["to"] == "Production"][-1]
    assert entry["forced"] and entry["gate"]["passed"] is False and "hotfix" in entry["reason"]
    assert entry["gate"]["challenger"]["scored"].endswith("split=test resolution=original")


def test_gate_settings_are_checked(bare_store):
    from omegaconf import OmegaConf

    from masklab.tracking.registry import Gate
    from masklab.workflows.registry import gate_from_config

    cfg = OmegaConf.create({"metric": "mIoU", "mode": "maximum", "min_delta": 0.0})
    with pytest.raises(UserError, match=r"registry.gate.mode='maximum': expected one of \['max', 'min'\]"):
        gate_from_config(cfg)
    with pytest.raises(UserError, match="registry.gate.metric='eval/val/mIoU': expected a metric name without"):
        Gate(metric="eval/val/mIoU")
    with pytest.raises(UserError, match="registry.gate.resolution='full'"):
        Gate(resolution="full")
    assert gate_from_config(OmegaConf.create({"metric": "loss", "mode": "min", "min_delta": 0.1})) == \
        Gate(metric="loss", mode="min", min_delta=0.1)


# Metadata with what JSON must carry back exactly: nesting, unicode, floats to the last bit, big ints, None,
# booleans, and a megabyte of text (the safetensors header holds up to 100 MB).
RICH_META = {"task": "semantic", "model": {"arch": "Unet", "encoder": "resnet18", "weights_path": None},
             "classes": {"ignore_index": 255, "classes": [{"id": 0, "name": "fond", "color": [0, 0, 0]},
                                                          {"id": 1, "name": "cœur ♥", "color": [255, 0, 0],
                                                           "thing": True}]},
             "config": {"lr": 0.1 + 0.2, "tiny": 5e-324, "big": 2**62 + 1, "flags": [True, False, None],
                        "nested": {"a": {"b": [{"c": [1.5, "x"]}]}}, "empty": {}, "notes": "n" * 1_000_000},
             "mlflow_run_id": "0" * 32, "input_rule": {"mode": "resize", "height": 32, "width": 32}}


def fake_checkpoint(path: Path, extra_weight=None) -> dict:
    """A torch.save file shaped like a masklab Lightning checkpoint: model weights (one stored transposed, so not
    contiguous, one tied to another, a 0-d int64 counter, a bool mask), a loss buffer, optimizer state and masklab's
    metadata."""
    import torch

    gen = torch.Generator().manual_seed(0)
    conv = torch.randn(4, 3, 3, 3, generator=gen)
    state = {"model.mean": torch.tensor([[[[123.7]], [[116.3]], [[103.5]]]]),
             "model.net.conv.weight": conv,
             "model.net.tied.weight": conv,  # one storage for two names (tied weights)
             "model.net.fc.weight": torch.randn(5, 6, generator=gen).t(),  # a strided view
             "model.net.bn.num_batches_tracked": torch.tensor(7),
             "model.net.mask": torch.tensor([True, False, True]),
             "loss.weight": torch.ones(3)}
    if extra_weight is not None:
        state["model.net.extra"] = extra_weight
    ckpt = {"epoch": 3, "state_dict": state, "masklab": RICH_META,
            "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(4, 3, 3, 3, generator=gen)}}}]}
    torch.save(ckpt, path)
    return ckpt


def test_safetensors_checkpoint_round_trips_weights_and_metadata_exactly(tmp_path):
    """The tracked best model (safetensors: the model's weights, masklab's metadata as JSON in the header) reads
    back as the Lightning checkpoint it was written from: same metadata, same tensors bit for bit; registering
    reads it as numpy arrays, and a .ckpt still reads through torch."""
    import torch
    from safetensors.torch import save_file

    from masklab.evaluation.checkpoint import (
        is_safetensors,
        read_checkpoint,
        read_checkpoint_meta,
        write_inference_checkpoint,
    )
    from masklab.tracking import packaging

    saved = fake_checkpoint(tmp_path / "a.ckpt")
    best = write_inference_checkpoint(tmp_path / "a.ckpt", tmp_path / "best.safetensors")
    assert is_safetensors(best) and not is_safetensors(tmp_path / "a.ckpt")
    expected = {k[len("model."):]: v for k, v in saved["state_dict"].items() if k.startswith("model.")}

    meta, weights = read_checkpoint(best)
    assert meta == saved["masklab"] and read_checkpoint_meta(best) == {"masklab": saved["masklab"]}
    assert weights.keys() == expected.keys()  # the model's weights only: no loss buffers, no optimizer state
    for key, tensor in expected.items():
        assert weights[key].dtype == tensor.dtype and weights[key].shape == tensor.shape, key
        assert torch.equal(weights[key], tensor), key

    meta, arrays = packaging.read_checkpoint_weights(best)  # without torch: numpy arrays
    assert meta == saved["masklab"] and arrays.keys() == expected.keys()
    for key, tensor in expected.items():
        assert isinstance(arrays[key], np.ndarray) and arrays[key].dtype == tensor.numpy().dtype, key
        assert arrays[key].shape == tuple(tensor.shape) and np.array_equal(arrays[key], tensor.numpy()), key
    meta, from_ckpt = packaging.read_checkpoint_weights(tmp_path / "a.ckpt")  # a .ckpt: torch
    assert meta == saved["masklab"] and from_ckpt.keys() == expected.keys()
    assert all(torch.equal(from_ckpt[k], v) and from_ckpt[k].is_contiguous() for k, v in expected.items())

    # bfloat16 has no numpy dtype: that file is read with torch instead, and packaged all the same.
    fake_checkpoint(tmp_path / "b.ckpt", extra_weight=torch.ones(2, dtype=torch.bfloat16))
    write_inference_checkpoint(tmp_path / "b.ckpt", tmp_path / "b.safetensors")
    meta, state = packaging.read_checkpoint_weights(tmp_path / "b.safetensors")
    assert isinstance(state["net.extra"], torch.Tensor) and state["net.extra"].dtype == torch.bfloat16
    packaging.save_weights(state, tmp_path / "package.safetensors")
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "package.safetensors"))["net.fc.weight"], expected["net.fc.weight"])

    save_file({"w": torch.ones(2)}, str(tmp_path / "other.safetensors"))  # safetensors, but not masklab's
    for read in (read_checkpoint_meta, packaging.read_checkpoint_weights):
        with pytest.raises(UserError, match="not written by masklab"):
            read(tmp_path / "other.safetensors")


def package_files(uri: str, name: str, version: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(spec, weights) of a registered version's package, read as stored."""
    import tempfile

    import mlflow
    import yaml
    from safetensors.numpy import load_file

    from masklab.tracking.runs import fluent_tracking_uri

    with tempfile.TemporaryDirectory() as dest, fluent_tracking_uri(uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=dest))
        (spec_file,) = local.rglob("masklab_model.yaml")
        return yaml.safe_load(spec_file.read_text()), load_file(str(spec_file.parent / "weights.safetensors"))


def assert_same_package(a: tuple[dict, dict[str, np.ndarray]], b: tuple[dict, dict[str, np.ndarray]]) -> None:
    assert a[0] == b[0] and a[1].keys() == b[1].keys() and a[1]
    for key in a[1]:
        assert a[1][key].dtype == b[1][key].dtype and np.array_equal(a[1][key], b[1][key]), key


def test_lifecycle_stages_aliases_gate_and_history(two_versions, capsys):
    project = two_versions
    uri = local_uri(project)
    staged = run_masklab(["promote", f"name={NAME}", "version=1", "stage=Staging"], project)
    assert staged.returncode == 0, staged.stderr[-2000:]
    assert "Warning" not in staged.stderr and "deprecated" not in staged.stderr  # MLflow's stage warnings hidden
    assert stage_of(uri, 1) == "Staging" and alias_version(uri, "staging") == "1"
    command_ok(project, capsys, "promote", f"name={NAME}", "version=1", "stage=Production")
    assert stage_of(uri, 1) == "Production" and alias_version(uri, "production") == "1"
    assert alias_version(uri, "staging") is None  # no version is in Staging any more

    # Version 2 must beat version 1 on the gate metric; a min_delta of 1.0 is unreachable. Both were
    # scored on synthetic's val split (it has no test split) by the evaluation that ends training.
    refused = exits_as_user_error("promote", lambda: command(
        project, "promote", f"name={NAME}", "version=2", "stage=Production", "registry.gate.min_delta=1.0"), capsys,
        one_line=False)
    assert "gate refused: mIoU of version 2" in refused
    from masklab.tasks.semantic import SemanticTask

    for version in (1, 2):  # both numbers and where each came from are in the message
        scored = newest(registry(uri).evaluations(NAME, version), split="val", resolution="original")
        assert f"{scored.metric('mIoU'):.4f}" in refused and scored.describe() in refused
        # every number an evaluation logs is one a gate may name (SemanticTask.evaluation_metrics)
        assert [m for m in scored.metrics if not SemanticTask.logs_metric(m.split("/", 2)[-1])] == []
    assert stage_of(uri, 1) == "Production" and stage_of(uri, 2) == "None"  # nothing half-changed

    out = command_ok(project, capsys, "promote", f"name={NAME}", "version=2", "stage=Production", "force=true",
                     "registry.gate.min_delta=1.0", "reason=hotfix")
    assert "forced" in out
    assert stage_of(uri, 2) == "Production" and stage_of(uri, 1) == "Archived"
    assert alias_version(uri, "production") == "2"

    history = registry(uri).history(NAME)
    moves = [(e["version"], e["from"], e["to"]) for e in history]
    assert moves == [(1, "None", "None"), (2, "None", "None"), (1, "None", "Staging"), (1, "Staging", "Production"),
                     (2, "None", "Production"), (1, "Production", "Archived")]
    forced = [e for e in history if e["forced"]]
    assert len(forced) == 1 and "hotfix" in forced[0]["reason"] and "gate" in forced[0]["reason"]

    listing = command_ok(project, capsys, "models list", f"name={NAME}")
    assert "Production" in listing and "Archived" in listing and "production" in listing
    # The gate number of each version is listed with the data it was scored on.
    v1 = newest(registry(uri).evaluations(NAME, 1), split="val", resolution="original")
    assert f"{v1.metric('mIoU'):.4f}" in listing and f"synthetic@{v1.manifest_sha256[:12]} val original" in listing
    # A version names its code and data versions (copied from its run's tags).
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(uri).get_model_version(NAME, "1").tags
    assert tags["masklab.git_commit"] and tags["masklab.dataset_dvc_md5"] == "untracked"
    shown = command_ok(project, capsys, "models history", f"name={NAME}")
    assert shown.count("Production") >= 3
    assert "REFUSED" in shown  # the forced promotion keeps the comparison it overrode
    assert [e["gate"]["passed"] for e in history if "gate" in e] == [True, False]


def test_stage_uri_and_alias_uri_name_the_same_version(two_versions):
    from masklab.tracking.model_ref import load_model_ref

    uri = local_uri(two_versions)
    ensure_production(two_versions)
    by_stage = load_model_ref(f"models:/{NAME}/Production", uri)
    by_alias = load_model_ref(f"models:/{NAME}@production", uri)
    for a, b in zip(by_stage.model.state_dict().values(), by_alias.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_predict_from_registry_is_pixel_identical_to_checkpoint(two_versions, tmp_path, cli, monkeypatch):
    from masklab.inference import predict_image
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.runs import downloaded_checkpoint

    project = two_versions
    uri = local_uri(project)
    ensure_production(project)
    images = tmp_path / "in"
    write_images(images, [(32, 32), (50, 70), (97, 33)])
    out = tmp_path / "out"
    in_project(monkeypatch, project)
    done = cli("predict", f"model=models:/{NAME}@production", f"input={images}", f"output={out}", "overlay=true")
    assert done.returncode == 0 and "Wrote 3 masks" in done.stdout, done.stderr[-3000:]
    version = registry(uri).version(NAME, alias_version(uri, "production"))
    with downloaded_checkpoint(uri, version.run_id) as ckpt:
        in_process = load_model_ref(str(ckpt), uri)
    for path in sorted(images.glob("*.png")):
        written = np.asarray(Image.open(out / path.name))
        image = np.asarray(Image.open(path).convert("RGB"))
        assert written.shape == image.shape[:2]
        assert np.array_equal(written, predict_image(in_process.model, image, in_process.input_rule))
        assert (out / f"{path.stem}_overlay.png").is_file()
    again = cli("predict", f"model=models:/{NAME}@production", f"input={images}", f"output={out}")
    assert again.returncode == 2 and "overwrite=true" in again.stderr  # never overwrite unasked


def test_pyfunc_load_matches_and_package_has_no_pickle(two_versions, tmp_path):
    import mlflow

    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.registry import quiet_mlflow

    uri = local_uri(two_versions)
    ensure_production(two_versions)
    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}/Production", dst_path=str(tmp_path)))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"weights.safetensors", "masklab_model.yaml", "MLmodel", "pyfunc_model.py"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth", ".ckpt"))]
    with quiet_mlflow():
        pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/Production")
    batch = np.random.default_rng(1).integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    from masklab.inference import predict_image

    package = load_model_ref(f"models:/{NAME}/Production", uri)
    expected = np.stack([predict_image(package.model, im, package.input_rule) for im in batch])
    assert np.array_equal(np.asarray(pyfunc.predict(batch)), expected)
    # The signature declares the inference path's params; a batch of 1 gives the same masks.
    assert {p.name for p in pyfunc.metadata.get_params_schema().params} == {"device", "batch_size"}
    assert np.array_equal(np.asarray(pyfunc.predict(batch, params={"device": "cpu", "batch_size": 1})), expected)


def test_register_imports_no_training_stack(two_versions):
    """Registering (package + MLflow model + version) from a run's tracked best.safetensors needs neither torch nor
    Lightning nor the model libraries, leaves no MLFLOW_TRACKING_URI behind (the next command in the process would
    log to this store), and packages the same weights as registering the run folder's .ckpt (version 1: ``fit``
    registers its local best checkpoint)."""
    from mlflow.tracking import MlflowClient

    uri = local_uri(two_versions)
    run_id = registry(uri).version(NAME, 1).run_id
    tracked = {f.path for f in MlflowClient(uri).list_artifacts(run_id, "checkpoints")}
    assert tracked == {"checkpoints/best.safetensors"}
    code = ("import os, sys; from masklab.workflows import register; "
            f"done = register({uri!r}, {run_id!r}, 'imports'); "
            "print(os.environ.get('MLFLOW_TRACKING_URI')); "
            "print(done.version, sorted(m for m in ('torch', 'pytorch_lightning', 'lightning', "
            "'segmentation_models_pytorch', 'timm', 'torchvision') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    res = subprocess.run([sys.executable, "-c", code], cwd=two_versions, capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    leaked, imported = res.stdout.strip().splitlines()[-2:]
    assert leaked == "None"
    assert imported.endswith(" []"), res.stdout
    version = registry(uri).version("imports", imported.split()[0])
    assert (version.tags or {}).get("masklab.dataset") == "synthetic"
    assert_same_package(package_files(uri, "imports", version.version), package_files(uri, NAME, "1"))


def test_a_run_tracked_before_safetensors_still_registers_and_evaluates(two_versions, tmp_path):
    """A run logged the old way has only checkpoints/best.ckpt (a torch file): it registers (the same package as
    from the run folder's checkpoint), loads by run id and evaluates to the score its training run logged."""
    from mlflow.tracking import MlflowClient

    from masklab import workflows
    from masklab.config import compose
    from masklab.evaluation.checkpoint import write_inference_checkpoint
    from masklab.tracking.model_ref import load_model_ref
    from masklab.workflows import register

    project = two_versions
    uri = local_uri(project)
    trained = registry(uri).version(NAME, 1).run_id
    (best,) = (project / "experiments" / "runs" / "v1" / "checkpoints").glob("best*.ckpt")
    client = MlflowClient(uri)
    old = client.create_run(client.get_run(trained).info.experiment_id, run_name="tracked-before").info.run_id
    client.log_artifact(old, str(write_inference_checkpoint(best, tmp_path / "best.ckpt")), "checkpoints")
    client.set_terminated(old)

    done = register(uri, old, "legacy")
    assert_same_package(package_files(uri, "legacy", done.version), package_files(uri, NAME, "1"))
    by_run = load_model_ref(old, uri)
    from_folder = load_model_ref(str(best), uri)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in
               zip(by_run.model.state_dict().values(), from_folder.model.state_dict().values(), strict=True))
    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        scored = workflows.evaluate(compose("evaluate", DEBUG_FAST), tmp_path / "eval", run_id=old)
    assert scored.run_id == old
    logged = client.get_run(old).data.metrics
    assert logged["eval/val/mIoU"] == client.get_run(trained).data.metrics["eval/val/mIoU"]


def test_evaluate_registered_model(two_versions, tmp_path, capsys):
    from masklab import workflows
    from masklab.config import compose
    from masklab.tracking import model_ref

    version = ensure_production(two_versions)
    capsys.readouterr()
    loaded: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, two_versions)
        load = model_ref.load_model_ref
        patch.setattr(model_ref, "load_model_ref", lambda ref, uri: loaded.append(ref) or load(ref, uri))
        done = workflows.evaluate(compose("evaluate", DEBUG_FAST), tmp_path, model_ref=f"models:/{NAME}@production")
    assert "mean" in capsys.readouterr().out  # the per-class table
    run = registry(local_uri(two_versions)).client.get_run(done.run_id)  # a new run, tagged with the model
    assert run.data.tags["masklab.model"] == f"models:/{NAME}@production"
    # The alias is resolved once, to the version the package is loaded from and the record is attached to
    assert loaded == [f"models:/{NAME}/{version}"] and run.data.tags["masklab.model_version"] == f"{NAME}/{version}"
    record = json.loads((tmp_path / "evaluation" / "val_evaluation.json").read_text())
    assert record["model"] == f"models:/{NAME}/{version}"


def test_bad_requests_are_one_line_errors(two_versions, capsys):
    project = two_versions
    cases = {
        ("promote", "name=nope", "version=1", "stage=Staging"): "no registered model 'nope'",
        ("promote", f"name={NAME}", "version=99", "stage=Staging"): "has no version 99",
        ("promote", f"name={NAME}", "version=1", "stage=Prod"): "stage 'Prod' does not exist",
        ("predict", "model_ref=models:/nope/Production", "input=.", "output=o"): "no registered model 'nope'",
        ("predict", f"model_ref=models:/{NAME}/Staging", "input=.", "output=o"): "no version of",
        ("models history", "name=nope"): "registered models",
    }
    for (words, *overrides), message in cases.items():
        shown = exits_as_user_error(words, lambda w=words, o=overrides: command(project, w, *o), capsys)
        assert message in shown, (words, overrides, shown)


def test_gate_scores_what_is_missing_on_the_challengers_dataset(project, seed_store, capsys):
    from masklab.commands.data import synth

    uri = local_uri(project)
    seed_store(project)
    trained = [*FAST, "trainer.max_epochs=1", "registry.register=true", f"registry.name={NAME}"]
    fit_in(project, [*trained, "evaluate_after=false"], "v1")  # version 1 has no score anywhere
    refused = exits_as_user_error("promote", lambda: command(
        project, "promote", f"name={NAME}", "version=1", "stage=Production", "registry.gate.evaluate_missing=false"),
        capsys, one_line=False)
    assert f"masklab evaluate model=models:/{NAME}/1 data=synthetic split=val" in refused
    assert stage_of(uri, 1) == "None"
    # By default promote scores it (the evaluate workflow) and keeps that score on the version.
    out = command_ok(project, capsys, "promote", f"name={NAME}", "version=1", "stage=Production")
    assert "gate passed (no Production version to beat)" in out
    assert f"models:/{NAME}/1 on synthetic@" in out and stage_of(uri, 1) == "Production"
    assert [r.dataset for r in registry(uri).evaluations(NAME, 1)] == ["synthetic"]

    # Version 2 was trained and scored on another dataset: the gate scores Production on that one.
    from masklab.config import compose

    synth(compose("data_synth", [*DEBUG_FAST, "data.name=other", "data.synth.seed=3"]))
    fit_in(project, [*trained, "data.name=other", "experiment_name=synthetic"], "v2")
    refused = exits_as_user_error("promote", lambda: command(
        project, "promote", f"name={NAME}", "version=2", "stage=Production", "registry.gate.min_delta=1.0"), capsys,
        one_line=False)
    assert "gate refused: mIoU of version 2" in refused
    on_other = newest(registry(uri).evaluations(NAME, 1), dataset="other")
    assert on_other is not None and on_other.model == f"models:/{NAME}/1"
    assert on_other.describe() in refused and f"{on_other.metric('mIoU'):.4f}" in refused
    assert stage_of(uri, 1) == "Production" and stage_of(uri, 2) == "None"


def test_the_gate_finds_data_kept_outside_the_project(project, seed_store, capsys):
    """A version trained with `paths.data_dir=<dir>`: promote finds the dataset where the version recorded it was
    trained; once the folder moved, `promote ... paths.data_dir=<new dir>` is honoured."""
    from masklab.commands.registry import _gate_evaluation
    from masklab.config import compose

    uri = local_uri(project)
    seed_store(project)
    elsewhere = project.parent / "disk" / "datasets"
    fit_in(project, [*FAST, "trainer.max_epochs=1", "registry.register=true", f"registry.name={NAME}",
                     "evaluate_after=false", f"paths.data_dir={elsewhere}"], "v1")
    assert (elsewhere / "synthetic" / "manifest.jsonl").is_file() and not (project / "data" / "synthetic").exists()
    recorded = registry(uri).version(NAME, 1).tags["masklab.dataset_root"]
    assert recorded == str((elsewhere / "synthetic").resolve())
    out = command_ok(project, capsys, "promote", f"name={NAME}", "version=1", "stage=Production")
    assert "gate passed" in out and f"models:/{NAME}/1 on synthetic@" in out and stage_of(uri, 1) == "Production"
    assert not (project / "data" / "synthetic").exists()  # scored where it was trained, nothing made anew

    moved = project.parent / "other_disk"
    elsewhere.rename(moved)
    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        cfg = compose("promote", [f"name={NAME}", "version=1", "stage=Production", f"paths.data_dir={moved}"])
        evaluator, splits = _gate_evaluation(cfg, project / "gate", {"synthetic": recorded})
        assert splits("synthetic") == ["train", "val"]  # read from the moved folder: the one place it is now
    assert not (project / "data" / "synthetic").exists()


def test_concurrent_promotions_end_with_exactly_one_production(two_versions):
    project = two_versions
    uri = local_uri(project)
    env_cmd = [sys.executable, "-m", "masklab.cli", "promote", f"name={NAME}", "stage=Production", "force=true"]
    before = len(registry(uri).history(NAME))
    procs = [subprocess.Popen([*env_cmd, f"version={v}"], cwd=project, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for v in (1, 2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    stages = {v: stage_of(uri, v) for v in (1, 2)}
    assert sorted(stages.values()) == ["Archived", "Production"], stages
    winner = next(v for v, s in stages.items() if s == "Production")
    assert alias_version(uri, "production") == str(winner)
    new = registry(uri).history(NAME)[before:]
    assert sorted(e["version"] for e in new if e["to"] == "Production") == [1, 2]


def test_unreachable_registry_fails_fast_with_one_line(project, cli, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    res = cli("models", "list")
    assert res.returncode == 2
    assert "cannot reach the registry" in res.stderr and url in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert time.perf_counter() - start < 60


def test_a_gate_metric_the_evaluation_lacks_is_refused_with_the_names_it_has():
    """`boundary_mIoU` (what the registry config once offered) is no metric evaluations log: the refusal lists the
    names the gate can take, per-class ones as a pattern."""
    from masklab.evaluation.record import EvaluationRecord
    from masklab.tracking.registry import Gate, judge

    record = EvaluationRecord(model="models:/shapes/2", dataset="synthetic", manifest_sha256="0" * 64, split="test",
                              resolution="original", input_rule={},
                              metrics={"eval/test/mIoU": 0.5, "eval/test/mBoundaryIoU": 0.3,
                                       "eval/test/iou/circle": 0.4, "eval/test/iou/square": 0.6})
    refused = judge(Gate(metric="boundary_mIoU"), NAME, "2", record, None, None).refusal
    assert refused is not None and "has no metric 'boundary_mIoU' (registry.gate.metric)" in refused
    assert refused.endswith("expected one of ['iou/<class>', 'mBoundaryIoU', 'mIoU']"), refused
    assert judge(Gate(metric="mBoundaryIoU"), NAME, "2", record, None, None).refusal is None
