"""trainer=ddp: Lightning DDP on CPU with gloo, 2 processes, through the real CLI.

Two ranks with 4 images each train what one process with 8 does: the same validation metrics every epoch, one
MLflow run, evaluation and registration once, and no folder or file of rank 1's own. The samplers, the BatchNorm
that reduces over ranks and the refusals are checked apart, in this process or with two gloo processes.
"""

from __future__ import annotations

import math
import os
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_crash_safety import LONGER, signal_once_checkpointed, start_training

from conftest import FAST, fit_in, free_port, mlflow_runs, run_masklab

pytestmark = pytest.mark.team

# A plain per-pixel mean loss (ce: a Dice term is computed per rank), SGD (Adam's first steps divide each gradient
# by its own size, so a gradient that is float noise moves its weight by a whole learning rate), and a UNet three
# stages deep: five stages bring 32 px images down to 1x1 maps whose BatchNorm over 8 values turns float noise
# into 1e-3 differences within a few steps even between two one-process runs with 1 and 2 threads.
SAME_TRAINING = [*FAST, "loss=ce", "optimizer=sgd", "+model.encoder_depth=3", "+model.decoder_channels=[32,16,8]",
                 "data.synth.count=36", "trainer.max_epochs=2", "trainer.limit_train_batches=null",
                 "trainer.limit_val_batches=null", "registry.register=true"]
# (the unused deepest encoder stage of a cut smp encoder still holds parameters)
TWO_RANKS = ["trainer=ddp", "data.batch_size=4", "trainer.strategy.find_unused_parameters=true"]
TOLERANCE = 1e-4
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


def test_two_ranks_train_what_one_process_trains_and_track_once(project: Path, tmp_path_factory, seed_store) -> None:
    seed_store(project)
    done = run_masklab(["train", *TWO_RANKS, *SAME_TRAINING], project)
    assert done.returncode == 0, done.stderr[-4000:]
    # Rank 1 shows nothing of its own: the config and the result once.
    assert done.stderr.count("masklab train — synthetic") == 1 and done.stdout.count("Best val/mIoU") == 1
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr  # (two processes did train)

    one = tmp_path_factory.mktemp("one_process")
    seed_store(one)
    alone = fit_in(one, [*SAME_TRAINING, "data.batch_size=8"])

    run, ddp = histories(project)
    _, single = histories(one)
    assert run.info.status == "FINISHED"
    compared = {key for key in single if key.startswith(("val/", "train/loss"))}
    assert len(compared) > 10 and compared <= set(ddp), compared - set(ddp)
    worst = {}
    for key in sorted(compared):
        assert [s for s, _ in ddp[key]] == [s for s, _ in single[key]], key  # the same steps and epochs
        worst[key] = max(abs(a - b) for (_, a), (_, b) in zip(ddp[key], single[key]))
    print(f"largest difference, 2 ranks x 4 vs 1 process x 8: {max(worst.values()):.2e} ({max(worst, key=worst.get)})")
    assert max(worst.values()) <= TOLERANCE, {k: v for k, v in worst.items() if v > TOLERANCE}
    assert len(ddp["val/mIoU"]) == 2 and len(ddp["train/loss_step"]) == 6  # 2 epochs of 3 steps (29 samples / 8)

    # Evaluation and registration happened once, on rank zero, into the one run.
    assert all(len(ddp[key]) == 1 for key in ddp if key.startswith("eval/"))
    assert math.isclose(ddp["eval/val/mIoU"][0][1], single["eval/val/mIoU"][0][1], abs_tol=TOLERANCE)
    client, _ = mlflow_runs(project, "synthetic")
    versions = client.search_model_versions("name='synthetic'")
    assert [(int(v.version), v.run_id) for v in versions] == [(1, run.info.run_id)]
    assert f"Registered run {run.info.run_id}" in done.stdout and alone.registered == ("synthetic", "1")

    # The same files as one process plus Hydra's of rank zero: no run folder, .hydra or log of rank 1, no mlruns/.
    ddp_tree = tree(project, run.info.run_id)
    single_tree = tree(one, mlflow_runs(one, "synthetic")[1][0].info.run_id)
    assert ddp_tree == single_tree | {f"RUN/{name}" for name in HYDRA_FILES}, ddp_tree ^ single_tree


def test_ddp_refuses_a_multirun_and_callers_that_train_several_models(project: Path, seed_store) -> None:
    """-m: Lightning would start rank 1 by re-running the whole sweep; cv, sweeps and AL rounds train several models
    in one process (workflows.fit without distributed_entry). Both: one line, before any MLflow run."""
    seed_store(project)
    done = run_masklab(["train", "trainer=ddp", *FAST, "-m", "seed=1,2"], project)
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
