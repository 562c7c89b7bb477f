"""trainer=ddp: Lightning DDP on CPU with gloo, 2 processes, through the real CLI.

Two ranks with 4 images each train what one process with 8 does: the same validation metrics every epoch, one
MLflow run, evaluation and registration once, and no folder or file of rank 1's own. The samplers, the BatchNorm
that reduces over ranks and the refusals are checked apart, in this process or with two gloo processes.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from test_crash_safety import LONGER, signal_once_checkpointed, start_training

from conftest import DEBUG_FAST, FAST, fit_in, free_port, mlflow_runs, run_masklab

pytestmark = pytest.mark.team

# A plain per-pixel mean loss (ce: a Dice term is computed per rank), SGD (Adam's first steps divide each gradient
# by its own size, so a gradient that is float noise moves its weight by a whole learning rate), and a UNet three
# stages deep: five stages bring 32 px images down to 1x1 maps whose BatchNorm over 8 values turns float noise
# into 1e-3 differences within a few steps even between two one-process runs with 1 and 2 threads.
SAME_TRAINING = [*DEBUG_FAST, "loss=ce", "optimizer=sgd", "+model.encoder_depth=3", "+model.decoder_channels=[32,16,8]",
                 "data.synth.count=36", "trainer.max_epochs=2", "trainer.limit_train_batches=null",
                 "trainer.limit_val_batches=null", "registry.register=true"]
# (the unused deepest encoder stage of a cut smp encoder still holds parameters)
TWO_RANKS = ["trainer=ddp", "data.batch_size=4", "trainer.strategy.find_unused_parameters=true"]
# What may differ between the two trainings, and how much. What is counted is compared exactly (the samples of every
# step and every validation, the pixels of each ground-truth class, the images scored); each training's logged
# validation metrics must be those of its own counts (to float32 logging, LOGGED_RTOL); what float arithmetic
# computes may differ by the order of its sums (2 ranks of 4 images and an all-reduce against one sum over 8;
# 8 SIMD lanes against 16 with AVX-512: 9.7e-4 on val/dice/background there, < 1e-4 here). The bound, derived:
#   u = 2**-24 (float32's unit roundoff). A sum of n terms in another order moves by at most (n - 1) u sum|x|: a
#   loss and every weight's gradient sum over n = 8 images x 32 x 32 = 8192 pixels, so each step's update differs
#   by at most n u = 4.9e-4 of itself. After STEPS = 6 SGD steps the weights differ by at most STEPS n u = 2.9e-3 of
#   the way they moved (first order), and so does a loss of what it lost on the way, at most all of it:
#   |loss_ddp - loss_one| <= STEPS n u loss_one. x 3 for what the first-order bound leaves out (a ReLU or BatchNorm
#   near its kink): LOSS_RTOL = 8.8e-3, relative, for train/loss* and val/loss.
#   The other validation metrics are counts of argmax pixels: a pixel changes class only where its two largest
#   logits are closer than their perturbation, a fraction of the pixels of the same order (FLIP_FRACTION = LOSS_RTOL,
#   counted exactly from the confusion matrices: 63 of the 7 x 32 x 32 val pixels). One moved pixel shifts pixel_acc
#   by 1 / 7168 and a class's IoU or Dice by about 1 / its area; VAL_ATOL = 1e-2 is ~70 pixels of pixel_acc and ten
#   times the AVX-512 machine's largest difference (about 8 background pixels).
# A real divergence is not a rounding: a skipped or repeated sample changes the exact counts, a doubly reduced loss
# is 100% off (test_the_comparison_catches_a_skipped_batch_a_sample_counted_twice_and_a_double_reduction).
STEPS, STEP_PIXELS = 6, 8 * 32 * 32
LOSS_RTOL = 3 * STEPS * STEP_PIXELS * 2.0 ** -24
FLIP_FRACTION = LOSS_RTOL
VAL_ATOL = 1e-2
LOGGED_RTOL = 1e-6  # (a float64 score logged as float32)
# What Hydra writes for `masklab train` in its run folder besides what `fit` writes.
HYDRA_FILES = {".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log"}


def histories(project: Path) -> tuple[object, dict[str, list[tuple[int, float]]]]:
    """The project's one MLflow run and every metric's (step, value) history."""
    client, runs = mlflow_runs(project, "synthetic")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    return run, {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                         key=lambda m: m.step)] for key in run.data.metrics}


def tree(project: Path, run_id: str) -> set[str]:
    """Every path under the project below the run folder's parents, the run folder, run id and logged-model id
    replaced by placeholders (data/ and the data-check cache aside: the same in both)."""
    run_dirs = [p for p in (project / "experiments" / "runs").rglob("*") if (p / "checkpoints").is_dir()]
    assert len(run_dirs) == 1, run_dirs
    names = set()
    for path in project.rglob("*"):
        rel = path.relative_to(project).as_posix()
        if rel.startswith(("data", "experiments/cache")) or run_dirs[0].is_relative_to(path):
            continue  # (Hydra's run folder is runs/<date>/<time>_train, fit_in's runs/run)
        rel = rel.replace(run_dirs[0].relative_to(project).as_posix(), "RUN")
        names.add(re.sub(r"/m-[0-9a-f]{32}", "/m-ID", rel.replace(run_id, "RUN_ID")))
    return names | {"RUN"}


class TrainingRecord(pl.Callback):
    """What one rank saw, for the comparison (``+callbacks.record={_target_:test_ddp.TrainingRecord,folder:...}``):
    the sample ids of every training step, and per validation the ids and the rank's own metric states before they
    are reduced over the ranks (callbacks' on_validation_epoch_end runs before the module's). Written to
    ``<folder>/rank<r>.json`` when training ends, outside the project (its files are compared too)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.steps: list[list] = []
        self.val: list[dict] = []
        self.val_ids: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append([trainer.current_epoch, trainer.global_step, list(batch["id"])])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_ids += list(batch["id"])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        states = {k: v.tolist() for k, v in pl_module.val_metrics.metric_state.items()}
        loss = pl_module.val_loss.metric_state
        states.update(loss_sum=float(loss["mean_value"]), loss_weight=float(loss["weight"]))
        self.val.append({"epoch": trainer.current_epoch, "ids": self.val_ids, "states": states})
        self.val_ids = []

    def on_fit_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "classes": list(pl_module.class_table.names), "steps": self.steps,
                  "val": self.val}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def recorded(folder: Path, world: int) -> list[dict]:
    records = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(world)]
    assert sorted(folder.iterdir()) == [folder / f"rank{r}.json" for r in range(world)]
    return records


def summed_states(epoch_records: list[dict]) -> dict[str, np.ndarray]:
    """The ranks' metric states of one validation added up: what a reduction over the ranks holds."""
    return {k: sum(np.asarray(r["states"][k]) for r in epoch_records) for k in epoch_records[0]["states"]}


def scores_of(states: dict[str, np.ndarray], classes: list[str]) -> dict[str, float]:
    """The validation metrics SemanticModule logs for these metric states."""
    from masklab.metrics import SemanticMetrics, named_scalars

    metric = SemanticMetrics(len(classes), None)
    for name, default in metric.metric_state.items():
        setattr(metric, name, torch.as_tensor(states[name], dtype=default.dtype))
    # (the class's own compute, not the instance's wrapper: no reduction over ranks, no warning about updates)
    return {"val/loss": float(states["loss_sum"] / states["loss_weight"]),
            **named_scalars(SemanticMetrics.compute(metric), "val", classes)}


def compare_trainings(ddp: dict, single: dict) -> dict[str, float]:
    """Assert that the distributed training ``ddp`` trained what the one-process ``single`` did; each is
    ``{"ranks": [TrainingRecord's record per rank], "history": {metric: [(step, value)]}}``. Returns each float
    metric's largest difference."""
    # Training: each rank takes the same steps, and step k of the ranks together holds one process's step k.
    keys = [(e, s) for e, s, _ in single["ranks"][0]["steps"]]
    for rank in ddp["ranks"]:
        assert [(e, s) for e, s, _ in rank["steps"]] == keys, f"rank {rank['rank']} took other training steps"
    for i, (epoch, step, ids) in enumerate(single["ranks"][0]["steps"]):
        together = [sample for rank in ddp["ranks"] for sample in rank["steps"][i][2]]
        assert sorted(together) == sorted(ids), f"epoch {epoch} step {step}: other training samples"
    for epoch in {e for e, _ in keys}:
        seen = [sample for rank in ddp["ranks"] for e, _, ids in rank["steps"] if e == epoch for sample in ids]
        assert len(seen) == len(set(seen)), f"epoch {epoch}: a training sample seen twice"

    # Validation: every sample once, on one rank; the same pixels per ground-truth class and images scored, and the
    # logged metrics those of the ranks' states added up (reduced over the ranks once, nothing left out).
    classes = single["ranks"][0]["classes"]
    assert len(single["ranks"][0]["val"]) == len(single["history"]["val/mIoU"])
    for e, one in enumerate(single["ranks"][0]["val"]):
        shares = [rank["val"][e] for rank in ddp["ranks"]]
        ids = [sample for share in shares for sample in share["ids"]]
        assert len(ids) == len(set(ids)), f"validation {e}: a sample counted on two ranks: {sorted(ids)}"
        assert sorted(ids) == sorted(one["ids"]), f"validation {e}: other samples"
        states, alone = summed_states(shares), summed_states([one])
        confusion, confusion_alone = states["confmat"], alone["confmat"]
        assert (confusion.sum(1) == confusion_alone.sum(1)).all() and states["image_count"] == alone["image_count"] \
            and states["loss_weight"] == alone["loss_weight"], \
            f"validation {e}: other pixel counts {confusion.sum(1)} != {confusion_alone.sum(1)}"
        moved = int(np.abs(confusion - confusion_alone).sum()) // 2  # (a pixel leaves one cell for another)
        assert moved <= FLIP_FRACTION * confusion.sum(), f"validation {e}: {moved} pixels changed class"
        for name, run, local in (("ddp", ddp, states), ("single", single, alone)):
            expected = scores_of(local, classes)
            values = {k: run["history"][k][e][1] for k in run["history"] if k.startswith("val/")}
            assert set(values) == set(expected), f"{name}: validation {e} logged {set(values) ^ set(expected)}"
            wrong = {k: (v, expected[k]) for k, v in values.items()
                     if not math.isclose(v, expected[k], rel_tol=LOGGED_RTOL, abs_tol=LOGGED_RTOL)}
            assert not wrong, f"{name}: validation {e} logged other values than its samples' counts give: {wrong}"

    # Floats: within what another summation order makes of them (see LOSS_RTOL and VAL_ATOL).
    compared = {key for key in single["history"] if key.startswith(("val/", "train/loss"))}
    assert len(compared) > 10 and compared <= set(ddp["history"]), compared - set(ddp["history"])
    worst, over = {}, {}
    for key in sorted(compared):
        pairs = list(zip(ddp["history"][key], single["history"][key], strict=True))
        assert all(a == b for (a, _), (b, _) in pairs), f"{key}: logged at other steps"
        worst[key] = max(abs(a - b) for (_, a), (_, b) in pairs)
        for (_, a), (_, b) in pairs:
            bound = LOSS_RTOL * abs(b) if "loss" in key else VAL_ATOL
            if abs(a - b) > bound:
                over[key] = (a, b, bound)
    assert not over, f"differences over the bound (ddp, one process, bound): {over}"
    return worst


def test_two_ranks_train_what_one_process_trains_and_track_once(project: Path, tmp_path_factory, seed_store) -> None:
    seed_store(project)
    folders = {name: tmp_path_factory.mktemp(f"{name}_record") for name in ("ddp", "single")}
    record = {name: f"+callbacks.record={{_target_:test_ddp.TrainingRecord,folder:'{folder}'}}"
              for name, folder in folders.items()}
    tests = str(Path(__file__).parent)  # (TrainingRecord for both ranks' processes)
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    done = run_masklab(["train", *TWO_RANKS, *SAME_TRAINING, record["ddp"]], project, env={"PYTHONPATH": path})
    assert done.returncode == 0, done.stderr[-4000:]
    # Rank 1 shows nothing of its own: the config and the result once.
    assert done.stderr.count("masklab train — synthetic") == 1 and done.stdout.count("Best val/mIoU") == 1
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr  # (two processes did train)

    one = tmp_path_factory.mktemp("one_process")
    seed_store(one)
    alone = fit_in(one, [*SAME_TRAINING, "data.batch_size=8", record["single"]])

    run, ddp = histories(project)
    _, single = histories(one)
    assert run.info.status == "FINISHED"
    assert len(ddp["val/mIoU"]) == 2 and len(ddp["train/loss_step"]) == STEPS  # 2 epochs of 3 steps (29 samples / 8)
    worst = compare_trainings({"ranks": recorded(folders["ddp"], 2), "history": ddp},
                              {"ranks": recorded(folders["single"], 1), "history": single})
    print(f"largest difference, 2 ranks x 4 vs 1 process x 8: {max(worst.values()):.2e} ({max(worst, key=worst.get)})")

    # Evaluation and registration happened once, on rank zero, into the one run.
    assert all(len(ddp[key]) == 1 for key in ddp if key.startswith("eval/"))
    assert math.isclose(ddp["eval/val/mIoU"][0][1], single["eval/val/mIoU"][0][1], abs_tol=VAL_ATOL)
    client, _ = mlflow_runs(project, "synthetic")
    versions = client.search_model_versions("name='synthetic'")
    assert [(int(v.version), v.run_id) for v in versions] == [(1, run.info.run_id)]
    assert f"Registered run {run.info.run_id}" in done.stdout and alone.registered == ("synthetic", "1")

    # The same files as one process plus Hydra's of rank zero: no run folder, .hydra or log of rank 1, no mlruns/.
    ddp_tree = tree(project, run.info.run_id)
    single_tree = tree(one, mlflow_runs(one, "synthetic")[1][0].info.run_id)
    assert ddp_tree == single_tree | {f"RUN/{name}" for name in HYDRA_FILES}, ddp_tree ^ single_tree


def _fake_trainings(flips: int = 8, noise: float = 1e-3) -> tuple[dict, dict]:
    """A distributed and a one-process training as the test above records them, built without training: 29 train
    samples in 2 epochs of 3 steps of 8 (4 per rank), 7 validation images of 32 x 32 px (4 on rank 0, 3 on rank 1)
    whose predictions differ by ``flips`` pixels, losses that differ by ``noise`` relative: rounding, no more."""
    from masklab.metrics import SemanticMetrics

    gen = torch.Generator().manual_seed(3)
    classes = ["background", "circle", "square", "triangle"]
    train_ids = [f"synth_{i:05d}" for i in range(29)]
    single_steps, rank_steps = [], [[], []]
    for epoch in range(2):
        order = torch.randperm(29, generator=gen).tolist()
        for k in range(3):
            ids = [train_ids[i] for i in order[8 * k:8 * k + 8]]
            single_steps.append([epoch, 3 * epoch + k, ids])
            for r in range(2):
                rank_steps[r].append([epoch, 3 * epoch + k, ids[r::2]])
    val_ids = [f"synth_{i:05d}" for i in range(29, 36)]
    target = torch.randint(0, 4, (7, 32, 32), generator=gen)
    wrong = torch.randint(0, 4, (7, 32, 32), generator=gen)
    pred = torch.where(torch.rand(7, 32, 32, generator=gen) < 0.8, target, wrong)
    pred_ddp = pred.clone().view(-1)
    pred_ddp[:flips] = (pred_ddp[:flips] + 1) % 4  # pixels near a tie that the other summation order tips over
    pred_ddp = pred_ddp.view(7, 32, 32)
    losses = [1.4 - 0.1 * i for i in range(6)]

    def states(p: torch.Tensor, t: torch.Tensor, loss: float) -> dict:
        metric = SemanticMetrics(4, None)
        metric.update(p, t)
        return {**{k: v.tolist() for k, v in metric.metric_state.items()}, "loss_sum": loss * len(t),
                "loss_weight": float(len(t))}

    def history(ranks: list[dict], scale: float) -> dict:
        out = {"train/loss_step": [(i, v * scale) for i, v in enumerate(losses)],
               "train/loss_epoch": [(2, 1.3 * scale), (5, 1.0 * scale)]}
        for e, step in enumerate((2, 5)):
            for key, value in scores_of(summed_states([r["val"][e] for r in ranks]), classes).items():
                out.setdefault(key, []).append((step, value))
        return out

    single_val = [{"epoch": e, "ids": val_ids, "states": states(pred, target, 1.2)} for e in range(2)]
    single = {"ranks": [{"rank": 0, "classes": classes, "steps": single_steps, "val": single_val}]}
    ddp = {"ranks": [{"rank": r, "classes": classes, "steps": rank_steps[r],
                      "val": [{"epoch": e, "ids": val_ids[r::2],
                               "states": states(pred_ddp[r::2], target[r::2], 1.2 * (1 + noise))} for e in range(2)]}
                     for r in range(2)]}
    single["history"], ddp["history"] = history(single["ranks"], 1.0), history(ddp["ranks"], 1 + noise)
    return ddp, single


def test_the_comparison_catches_a_skipped_batch_a_sample_counted_twice_and_a_double_reduction() -> None:
    """compare_trainings, on trainings made up in a few milliseconds: what rounding makes of two trainings passes;
    each kind of real divergence fails, and the float ones by far more than the bound."""
    import copy

    ddp, single = _fake_trainings()
    worst = compare_trainings(ddp, single)
    assert 0 < max(worst.values()) < VAL_ATOL  # (8 pixels of 7168 moved, losses 1e-3 apart: rounding, allowed)

    # A rank that skips a batch: its next batch in that step's place (as one more step at the end would be).
    skipped = copy.deepcopy(ddp)
    skipped["ranks"][1]["steps"][1][2] = ddp["ranks"][1]["steps"][2][2]
    with pytest.raises(AssertionError, match="epoch 0 step 1: other training samples"):
        compare_trainings(skipped, single)
    fewer = copy.deepcopy(ddp)
    del fewer["ranks"][1]["steps"][4]
    with pytest.raises(AssertionError, match="rank 1 took other training steps"):
        compare_trainings(fewer, single)

    # A validation sample seen twice: a padding sampler gives rank 1 rank 0's first image too (its id, its pixels).
    padded = copy.deepcopy(ddp)
    for e in range(2):
        share = padded["ranks"][1]["val"][e]
        share["ids"].append(ddp["ranks"][0]["val"][e]["ids"][0])
        share["states"]["confmat"] = (np.asarray(share["states"]["confmat"]) + 256 * np.eye(4, dtype=int)).tolist()
    with pytest.raises(AssertionError, match="a sample counted on two ranks"):
        compare_trainings(padded, single)
    # ... and were the ids not recorded, its 1024 pixels counted twice would give it away.
    for e in range(2):
        padded["ranks"][1]["val"][e]["ids"].pop()
    with pytest.raises(AssertionError, match="other pixel counts"):
        compare_trainings(padded, single)

    # A loss reduced twice: summed over the ranks, not averaged, every logged value doubles.
    summed = copy.deepcopy(ddp)
    summed["history"]["train/loss_step"] = [(s, 2 * v) for s, v in ddp["history"]["train/loss_step"]]
    with pytest.raises(AssertionError, match="train/loss_step"):
        compare_trainings(summed, single)
    over = [abs(a - b) / (LOSS_RTOL * b) for (_, a), (_, b) in zip(summed["history"]["train/loss_step"],
                                                                    single["history"]["train/loss_step"])]
    assert min(over) > 100  # (each difference is a whole loss: over 100 times the bound)

    # Validation metrics of rank zero's share only (reduced over no rank): not what the counts of all samples give.
    unreduced = copy.deepcopy(ddp)
    for e, step in enumerate((2, 5)):
        rank_zero = summed_states([unreduced["ranks"][0]["val"][e]])
        for key, value in scores_of(rank_zero, single["ranks"][0]["classes"]).items():
            unreduced["history"][key][e] = (step, value)
    with pytest.raises(AssertionError, match="ddp: validation 0 logged other values"):
        compare_trainings(unreduced, single)


def test_ddp_refuses_a_multirun_and_callers_that_train_several_models(project: Path, seed_store, cli) -> None:
    """-m: Lightning would start rank 1 by re-running the whole sweep; cv, sweeps and AL rounds train several models
    in one process (workflows.fit without distributed_entry). Both: one line, before any MLflow run."""
    seed_store(project)
    done = cli("train", "trainer=ddp", *FAST, "-m", "seed=1,2")
    assert done.returncode == 2, done.stderr[-3000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("masklab train: error:")]
    assert len(error) == 1 and "in one job of -m/--multirun" in error[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    from masklab.errors import UserError

    with pytest.raises(UserError, match=r"2 processes .* distributed_entry=True"):
        fit_in(project, ["trainer=ddp", *FAST])
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{project}/experiments/mlflow.db")
    assert store.search_runs([e.experiment_id for e in store.search_experiments()]) == []


def test_sigterm_stops_both_ranks_at_one_batch_saves_and_ends_the_run_killed(project: Path, seed_store) -> None:
    """A scheduler's SIGTERM to rank zero: both ranks stop at the same training batch, the checkpoint is saved, the
    run ends KILLED and the command exits 143 (Lightning's own handler broadcast from inside the signal handler and
    hung here)."""
    seed_store(project)
    folder = project / "experiments" / "runs" / "preempted"
    proc = start_training(project, folder, ["trainer=ddp", *LONGER])
    try:
        err = signal_once_checkpointed(proc, folder, signal.SIGTERM)  # (returns once both ranks closed stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM at epoch" in err and "Traceback" not in err, err[-3000:]
    saved = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert 1 <= saved["global_step"] < 8, saved["global_step"]  # where the signal found it, not at the end
    _, (run,) = mlflow_runs(project, "synthetic")
    assert run.info.status == "KILLED"


def test_num_nodes_places_each_machine_s_ranks_and_rank_zero_is_one_process(monkeypatch) -> None:
    """trainer.num_nodes by config: the command on the second machine (NODE_RANK=1) holds global ranks 2 and 3 of 4,
    so fit creates no MLflow run there; the Trainer knows it before any process group exists."""
    from hydra.utils import instantiate
    from pytorch_lightning.utilities import rank_zero_only

    from masklab.config import compose

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # (the Trainer sets it for the process)
    for node, ranks in (("0", (0, True)), ("1", (2, False))):
        monkeypatch.setenv("NODE_RANK", node)
        cfg = compose("train", ["trainer=ddp", "trainer.num_nodes=2"])
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, default_root_dir=".")
        assert (trainer.global_rank, trainer.is_global_zero, trainer.world_size) == (*ranks, 4)


def test_training_shards_cover_one_process_steps_and_evaluation_shards_repeat_nothing() -> None:
    """Rank r takes perm[r::W] (cut to a multiple of W): step k of W ranks with batch b holds the samples of one
    process's step k with batch W b; every rank has as many steps; one rank alone keeps the order it always had.
    Validation shards hold each sample once (no padding with repeats)."""
    from masklab.data.datamodule import EpochShuffle, SegmentationDataModule, item_seed

    for size in (7, 9, 29, 36):
        for epoch in (0, 3):
            alone = EpochShuffle(size, seed=42)
            alone.set_epoch(epoch)
            order = [i for _, i in alone]
            expected = torch.randperm(size, generator=torch.Generator().manual_seed(item_seed(42, epoch))).tolist()
            assert order == expected
            for world in (2, 3):
                shards = []
                for rank in range(world):
                    sampler = EpochShuffle(size, seed=42, num_replicas=world, rank=rank)
                    sampler.set_epoch(epoch)
                    shards.append([i for e, i in sampler if e == epoch])
                    assert len(shards[-1]) == len(sampler) == size // world
                for b in (1, 2, 4):
                    for k in range(size // world // b):
                        step = {i for shard in shards for i in shard[k * b:(k + 1) * b]}
                        assert step == set(order[k * world * b:(k + 1) * world * b]), (size, world, b, k)

    class Split(list):
        def __init__(self, dataset, samples, transform, seed=0):
            super().__init__(samples)

    for size in (7, 8):
        data = SimpleNamespace(labeled=lambda name, size=size: list(range(size)))
        seen = []
        for rank in range(2):
            module = SegmentationDataModule(data, None, None, batch_size=2, split_class=Split,
                                            collate_fn=lambda items: items)
            module.trainer = SimpleNamespace(world_size=2, global_rank=rank)
            seen += [i for batch in module.val_dataloader() for i in batch]
        assert sorted(seen) == list(range(size))


def _batchnorm_rank(rank: int, world: int, port: int, out: str) -> None:
    """One rank of the test below: a small network with masklab's SyncBatchNorm on its share of the batch."""
    import numpy as np
    import torch.distributed as dist

    from masklab.training.distributed import SyncBatchNorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = SyncBatchNorm().apply(_batchnorm_net())
        images = _batchnorm_images()[rank::world]
        result = model(images)
        (result ** 2).mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        for g in grads:  # what DDP does with the gradients
            dist.all_reduce(g)
            g /= world
        if rank == 0:
            np.savez(out, *[g.numpy() for g in grads], result=result.detach().numpy(),
                     running_mean=model[1].running_mean.numpy(), running_var=model[1].running_var.numpy())
    finally:
        dist.destroy_process_group()


def _batchnorm_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, bias=False), torch.nn.BatchNorm2d(5), torch.nn.ReLU(True),
                               torch.nn.Conv2d(5, 6, 3, bias=False), torch.nn.BatchNorm2d(6), torch.nn.ReLU(True),
                               torch.nn.Conv2d(6, 2, 1))


def _batchnorm_images() -> torch.Tensor:
    return torch.randn(8, 3, 9, 9, generator=torch.Generator().manual_seed(1)) * 3 + 2


def test_sync_batchnorm_on_cpu_equals_batchnorm_over_the_whole_batch(tmp_path: Path) -> None:
    """Two gloo ranks with 4 images each: the outputs, gradients and running statistics of torch's BatchNorm over all
    8 (torch's own SyncBatchNorm refuses CPU modules); after training the layers are plain BatchNorm2d again."""
    import numpy as np
    import torch.multiprocessing as mp

    from masklab.training.distributed import SyncBatchNorm

    out = tmp_path / "rank0.npz"
    mp.start_processes(_batchnorm_rank, args=(2, free_port(), str(out)), nprocs=2, start_method="spawn")
    model = _batchnorm_net()
    result = model(_batchnorm_images())
    (result ** 2).mean().backward()
    saved = np.load(out)
    np.testing.assert_allclose(saved["result"], result.detach().numpy()[0::2], rtol=0, atol=1e-5)
    for i, p in enumerate(model.parameters()):
        np.testing.assert_allclose(saved[f"arr_{i}"], p.grad.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(saved["running_mean"], model[1].running_mean.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(saved["running_var"], model[1].running_var.numpy(), rtol=1e-6, atol=1e-6)
    layers = SyncBatchNorm().revert(SyncBatchNorm().apply(_batchnorm_net()))
    assert type(layers[1]) is torch.nn.BatchNorm2d and re.search(r"BatchNorm2d\(5", repr(layers))
