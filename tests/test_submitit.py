"""SLURM through hydra-submitit-launcher: masklab's submitit_slurm / submitit_local presets.

The team-marked tests run real submitit jobs with the local executor (processes on this machine, what SLURM jobs
run, without a cluster): a Hydra grid of `masklab train`, a job's mistake reported by the submitting command, and
`masklab sweep` with its workers as jobs. The submitting command runs in this process (``masklab.cli.main``, the
``cli`` fixture); its jobs are processes. The others check, without a cluster, what the SLURM preset asks sbatch
for, the mistakes caught before anything is submitted, and the pre-emption signal submitit sends before the limit.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from conftest import FAST, mlflow_runs

LOCAL = "hydra/launcher=submitit_local"


def needs_plugin() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the team extra is not installed")


def only_multirun(project: Path) -> Path:
    folders = list((project / "experiments" / "multiruns").glob("*/*"))
    assert len(folders) == 1, folders
    return folders[0]


def one_line_error(res, code: int = 2) -> str:
    """The command's error line: exit ``code``, no traceback, a single ``masklab ... error:`` line."""
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("masklab ")]
    assert res.returncode == code and "Traceback" not in res.stderr and len(errors) == 1, res.stderr[-3000:]
    return errors[0]


@pytest.mark.team
def test_train_grid_runs_as_submitit_jobs(project, cli):
    needs_plugin()
    res = cli("train", *FAST, "evaluate_after=false", LOCAL, "--multirun", "optimizer.lr=0.01,0.02")
    assert res.returncode == 0, res.stderr[-3000:]
    multirun = only_multirun(project)
    # both jobs finished: submitit's folder holds each job's result and logs, the run folders their checkpoints
    jobs = sorted(p for p in (multirun / ".submitit").iterdir() if p.name != "%j")
    assert len(jobs) == 2 and all(list(j.glob("*_result.pkl")) and list(j.glob("*_log.err")) for j in jobs)
    for n in ("0", "1"):
        assert (multirun / n / "checkpoints" / "last.ckpt").is_file() and (multirun / n / "train.log").is_file()
        assert (multirun / n / ".hydra" / "config.yaml").is_file()
    assert "job #0 (" in res.stdout and "job #1 (" in res.stdout and str(multirun / "1") in res.stdout
    # the jobs resolved the project's store (paths under the project root), each run its own lr
    client, runs = mlflow_runs(project, "synthetic")
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.01", "0.02"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_lr = {r.data.params["optimizer.lr"]: r for r in runs}
    assert by_lr["0.02"].data.tags["masklab.output_dir"] == str((multirun / "1").resolve())
    assert Path(by_lr["0.01"].data.params["paths.root_dir"]) == project.resolve()


@pytest.mark.team
def test_a_jobs_mistake_is_one_line_of_the_submitting_command(project, seed_store, cli):
    needs_plugin()
    seed_store(project)  # (the grid test above starts from no store: the jobs must not race its creation)
    # one run, no grid: a multirun of a single job
    res = cli("train", *FAST, "data.image_size=-3", LOCAL, "-m")
    line = one_line_error(res)
    assert "data.image_size=-3: expected a positive int" in line and "job #0 of 1" in line, line
    log = Path(line.rsplit("log ", 1)[1].rstrip(")"))
    assert log.is_file() and "data.image_size=-3" in log.read_text()  # the job's own stderr, in submitit's folder


def test_launcher_mistakes_are_caught_before_submitting(project, cli):
    needs_plugin()
    # the trainer's devices decide the tasks and GPUs per node: "auto" is not a number a job can ask for
    line = one_line_error(cli("train", *FAST, "trainer.devices=auto", "hydra/launcher=submitit_slurm", "-m"))
    assert "trainer.devices=auto: a job asks the scheduler for a number" in line, line
    # without -m Hydra would run here (a login node), not as a job
    line = one_line_error(cli("train", *FAST, LOCAL))
    assert "submits jobs only with --multirun (-m)" in line, line
    assert not (project / "experiments" / "mlflow.db").exists()  # nothing ran
    # a misspelt setting: Hydra's composition error (several lines, as for any key), exit 2, no traceback
    res = cli("train", "hydra/launcher=submitit_slurm", "hydra.launcher.partiton=gpu", "-m")
    assert res.returncode == 2 and "Key 'partiton' not in 'SlurmQueueConf'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_slurm_preset_asks_sbatch_for_the_trainers_devices(project, monkeypatch, tmp_path):
    needs_plugin()
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from masklab.config import CONF_DIR
    from masklab.jobs import check_params, make_executor

    with initialize_config_dir(CONF_DIR, version_base="1.3", job_name="train"):
        cfg = compose("train", ["hydra/launcher=submitit_slurm", "trainer=gpu", "trainer.devices=4",
                                "++trainer.num_nodes=2", "hydra.launcher.partition=gpu"], return_hydra_config=True)
        cpu = compose("train", ["hydra/launcher=submitit_slurm"], return_hydra_config=True)
        local = compose("train", ["hydra/launcher=submitit_local", "trainer=gpu"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"] == "hydra_plugins.masklab_submitit.SlurmLauncher"
    assert {k: params[k] for k in ("nodes", "tasks_per_node", "gpus_per_node", "partition", "timeout_min", "mem_gb",
                                   "cpus_per_task", "signal_delay_s", "max_num_timeout", "name")} == {
        "nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4, "partition": "gpu", "timeout_min": 240, "mem_gb": 32,
        "cpus_per_task": 8, "signal_delay_s": 120, "max_num_timeout": 0, "name": "train"}
    folder = Path(params["submitit_folder"])
    assert folder.name == "%j" and folder.parent.name == ".submitit" and project.resolve() in folder.parents
    assert type(instantiate(cfg.hydra.launcher)).__module__ == "hydra_plugins.masklab_submitit"
    cpu_params = OmegaConf.to_container(cpu.hydra.launcher, resolve=True)
    assert (cpu_params["nodes"], cpu_params["tasks_per_node"], cpu_params["gpus_per_node"]) == (1, 1, 0)
    local_params = OmegaConf.to_container(local.hydra.launcher, resolve=True)
    assert (local_params["tasks_per_node"], local_params["gpus_per_node"]) == (1, 1)  # Lightning starts its ranks

    # what sbatch gets, through submitit's own translation (a stand-in srun: no cluster here)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    del params["_target_"]
    script = make_executor("slurm", check_params("slurm", params, cfg))._executor._make_submission_file_text(
        "python -u -m submitit.core._submit x", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=240",
                 "--mem=32GB", "--cpus-per-task=8", "--signal=USR2@120", "--job-name=train"):
        assert f"#SBATCH {line}\n" in script, (line, script)


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SignalAt(pl.Callback):
    """Sends this process ``signum`` at the end of batch ``at`` (what submitit sends before the time limit)."""

    def __init__(self, signum: int, at: int) -> None:
        self.signum, self.at = signum, at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.at:
            os.kill(os.getpid(), self.signum)


def test_submitits_warning_signal_saves_last_checkpoint(tmp_path, monkeypatch):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from masklab.training.callbacks import PreemptionCheckpoint

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # as in a submitit job
    before = signal.getsignal(signal.SIGUSR2)
    saver = PreemptionCheckpoint(str(tmp_path / "checkpoints"))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, callbacks=[saver, _SignalAt(signal.SIGUSR2, 2)],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    with pytest.raises(SIGTERMException):
        trainer.fit(_Tiny(), train_dataloaders=torch.utils.data.DataLoader(torch.randn(32, 4), batch_size=4))
    assert saver.saved == tmp_path / "checkpoints" / "last.ckpt" and saver.saved.is_file()
    assert torch.load(saver.saved, weights_only=False)["global_step"] == 3  # where training stood
    assert signal.getsignal(signal.SIGUSR2) == before  # submitit's handler is back after training


@pytest.mark.team
def test_sweep_workers_run_as_submitit_jobs(project, seed_store, cli):
    needs_plugin()
    seed_store(project)
    res = cli("sweep", "sweep=fast_grid", "workers=2", LOCAL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 complete, 0 pruned, 0 failed" in res.stdout, res.stdout
    assert "as submitit_local jobs" in res.stderr and "Submitted 2 worker job(s)" in res.stderr, res.stderr
    sweep_dir = next((project / "experiments" / "runs").glob("*/*_sweep"))
    jobs = [p for p in (sweep_dir / "workers").iterdir() if p.is_dir() and p.name != "%j"]
    assert len(jobs) == 2 and all(list(j.glob("*_result.pkl")) for j in jobs)
    client, runs = mlflow_runs(project, "synthetic")
    parent = next(r for r in runs if r.data.tags.get("masklab.command") == "sweep")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["optimizer.lr"] for r in trials) == ["0.001", "0.003"]
    assert {r.info.status for r in [parent, *trials]} == {"FINISHED"}
