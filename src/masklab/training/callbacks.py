"""Lightning callbacks of masklab."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import WeightAveraging


class ThroughputMonitor(pl.Callback):
    """Logs ``train/images_per_s`` once per epoch: training images per wall-clock second (of all ranks together;
    ``history`` keeps this process's own rates).

    The clock runs from the end of the ``warmup_steps``-th batch to the end of the last
    training batch, so it includes data loading, augmentation, forward, backward, optimizer
    and logging, and excludes start-up and validation.
    """

    def __init__(self, warmup_steps: int = 2):
        self.warmup_steps = warmup_steps
        self.images = 0
        self.started: float | None = None
        self.last_end = 0.0
        self.seen = 0
        self.history: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.images, self.started, self.seen = 0, None, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        self.seen += 1
        if self.started is None:
            if self.seen >= self.warmup_steps:
                self.started = now
            return
        self.images += len(batch["image"])
        self.last_end = now

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.started is None or self.images == 0:
            return
        rate = self.images / (self.last_end - self.started)
        self.history.append(rate)
        # Under DDP each rank counts its own images: the run's throughput is their sum.
        pl_module.log("train/images_per_s", rate, sync_dist=True, reduce_fx="sum")


class NonFiniteLossGuard(pl.Callback):
    """Stops training at the first NaN or infinite training loss, before its backward pass can spoil the weights.

    The weights and optimizer state of the step before are saved to ``<dirpath>/last-good.ckpt`` first, with the
    buffers (BatchNorm running statistics) as they were before the bad forward pass, which already updated them
    (a copy of the buffers is kept at each batch start: a few thousand numbers for a ResNet). Every
    rank takes part: the check is reduced over the ranks of a distributed run, so no rank waits for another
    that stopped), then :class:`masklab.errors.TrainingDiverged` names the epoch, the global step, the batch's
    sample ids and that checkpoint. Lightning ends the MLflow run as FAILED.
    """

    FILE = "last-good.ckpt"

    def __init__(self, dirpath: str):
        self.dirpath = dirpath
        self.ids: list[str] = []
        self.batch_idx = 0
        self.buffers: dict[str, Any] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.ids = [str(i) for i in batch.get("id", [])] if isinstance(batch, dict) else []
        self.batch_idx = batch_idx
        self.buffers = {name: b.detach().clone() for name, b in pl_module.named_buffers()}

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Any) -> None:
        import math
        from pathlib import Path

        import torch

        from masklab.errors import TrainingDiverged

        finite = bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            return
        path = Path(self.dirpath) / self.FILE
        with torch.no_grad():
            for name, b in pl_module.named_buffers():
                if name in self.buffers:
                    b.copy_(self.buffers[name])
        trainer.save_checkpoint(path)
        value = float(loss.detach().float().mean()) if loss.numel() else math.nan
        shown = ", ".join(self.ids[:16]) + (f" and {len(self.ids) - 16} more" if len(self.ids) > 16 else "")
        raise TrainingDiverged(
            f"training stopped: the loss is {value} at epoch {trainer.current_epoch}, step {trainer.global_step} "
            f"(batch {self.batch_idx} of the epoch; samples {shown or 'on another rank'}). The weights before this "
            f"step are in {path}. Lower optimizer.lr (or set trainer.gradient_clip_val), or check those samples "
            "with `masklab data check`.")


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM (what a scheduler sends before pre-emption), save ``<dirpath>/last.ckpt`` where training stands.

    Lightning turns the signal into ``SIGTERMException`` at the next batch boundary; this writes the checkpoint
    then (Lightning writes checkpoints atomically), so ``ckpt_path=last resume_dir=<run folder>`` continues from
    that batch, in the same MLflow run. ``saved``: the path written, or None.

    In a submitit job (SLURM or local, ``SUBMITIT_EXECUTOR`` set), submitit's warning signal (USR2, or
    ``$SUBMITIT_PREEMPT_SIGNAL``), sent ``signal_delay_s`` before the time limit, counts as SIGTERM too while
    training runs: submitit's own handler would end the job at once, with no checkpoint.
    """

    FILE = "last.ckpt"

    def __init__(self, dirpath: str):
        self.dirpath = dirpath
        self.saved: Any = None
        self._replaced: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # (not at fit start: Lightning records the handlers to restore after that, and would restore this one)
        import os
        import signal
        import threading

        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        signum = getattr(signal, f"SIG{name}", None)
        if not os.environ.get("SUBMITIT_EXECUTOR") or signum is None \
                or threading.current_thread() is not threading.main_thread():
            return

        def as_sigterm(received: int, frame: Any) -> None:
            # Lightning's SIGTERM handler (installed for fit) marks the stop; it is looked up now, not at fit start
            handler = signal.getsignal(signal.SIGTERM)
            if callable(handler):
                handler(received, frame)

        self._replaced[signum] = signal.signal(signum, as_sigterm)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_signals()

    def _restore_signals(self) -> None:
        import signal

        for signum, handler in self._replaced.items():
            signal.signal(signum, handler)
        self._replaced.clear()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pathlib import Path

        from pytorch_lightning.utilities.exceptions import SIGTERMException

        self._restore_signals()  # Lightning calls no teardown hook after an exception
        if isinstance(exception, SIGTERMException):
            self.saved = Path(self.dirpath) / self.FILE
            trainer.save_checkpoint(self.saved)


class ChannelsLast(pl.Callback):
    """Train in the channels-last memory format (``trainer.channels_last: true``, on in ``trainer=gpu``).

    Convolutions on tensor cores (and oneDNN on CPU) read NHWC without the transposes NCHW costs them; the numbers
    are the same up to summation order. At setup the model's 4-D weights move to channels-last (before Lightning
    moves the model to the device, which keeps the format, builds the optimizer and wraps it for DDP); each batch's
    4-D ``image`` tensor does so after its transfer to the device, before the step sees it. Other batch entries
    (masks, instance targets, lists of images) stay as they are.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        import torch

        pl_module.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        to_channels_last(batch)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        to_channels_last(batch)


def to_channels_last(batch: Any) -> None:
    """Put a batch's 4-D ``image`` tensor in channels-last, in place (the step receives this same dict)."""
    import torch

    image = batch.get("image") if isinstance(batch, dict) else None
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        batch["image"] = image.contiguous(memory_format=torch.channels_last)


class RankZeroStop(pl.Callback):
    """Under DDP, SIGTERM stops all ranks together, at the start of a training batch, on rank zero's word.

    Lightning's own handler broadcasts from inside the signal handler, where the other rank may be in another
    collective: a SIGTERM hung a 2-rank CPU training. While several processes train, this replaces it: SIGTERM only
    sets a flag on rank zero (the other ranks ignore it: a scheduler signals every rank, and rank zero's decision
    reaches them), each training batch starts by reducing that flag over the ranks, and all of them raise Lightning's
    ``SIGTERMException`` there, so :class:`PreemptionCheckpoint` saves on all of them (its barrier meets). A signal
    during validation takes effect at the next training batch. One process: Lightning's handling, unchanged.
    Lightning puts the handler it found before training back when training ends.
    """

    def __init__(self) -> None:
        self.stop = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import signal

        if trainer.world_size > 1:
            signal.signal(signal.SIGTERM, self._rank_zero_handler if trainer.is_global_zero else signal.SIG_IGN)

    def _rank_zero_handler(self, signum: int, frame: Any) -> None:
        self.stop = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self.stop, all=False):
            raise SIGTERMException


class TimeBudget(pl.Callback):
    """With ``trainer.max_time``: the run ends on time at an epoch's end, with its learning rate annealed.

    Lightning's own ``max_time`` stops wherever the clock runs out, mid-epoch, and a schedule sized by ``max_epochs``
    never decays when ``max_epochs`` is only a cap. After each training epoch (its validation included) this
    estimates how many more whole epochs fit in the time Lightning's timer has left (the slowest of the last three
    epochs after the first, which also pays for start-up, as the estimate: erring long loses at most one epoch,
    erring short lets the timer cut the last one),
    lowers ``max_epochs`` to that (never above the configured cap) and hands the new length to every
    :class:`~masklab.training.schedules.ProgressSchedule`. No ``max_time``: it does nothing.
    """

    def __init__(self) -> None:
        self.cap: int | None = None
        self.last_end: float | None = None
        self.durations: list[float] = []

    @staticmethod
    def timer(trainer: pl.Trainer) -> Any:
        from pytorch_lightning.callbacks import Timer

        return next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.cap = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        self.last_end, self.durations = time.monotonic(), []
        if self.timer(trainer) is None:
            return
        from masklab.training.schedules import ProgressSchedule

        others = [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs
                  if not isinstance(c.scheduler, ProgressSchedule)]
        if others:
            from masklab.console import logger

            logger(__name__).warning(
                f"trainer.max_time: the scheduler {others[0]} keeps the length it was built with; scheduler=cosine or "
                "scheduler=one_cycle anneal within the time budget")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        timer = self.timer(trainer)
        if timer is None or self.last_end is None:
            return
        now = time.monotonic()
        self.durations.append(now - self.last_end)
        self.last_end = now
        done = trainer.current_epoch + 1
        recent = self.durations[1:][-3:] or self.durations  # the first epoch also pays for start-up
        more = int(max(timer.time_remaining(), 0.0) // max(recent))
        planned = done + more if self.cap is None else min(done + more, self.cap)
        trainer.fit_loop.max_epochs = planned  # ends the run after this epoch when nothing more fits
        from masklab.training.schedules import ProgressSchedule

        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, ProgressSchedule):
                config.scheduler.set_horizon(planned)


class ValidationLine(pl.Callback):
    """One plain log line per validation where no progress bar is drawn (stderr a log file, CI, a SLURM job):
    epoch, step, the losses, the monitored metric and its best, time elapsed and an estimate of the time left.

    On a terminal, Lightning's progress bar shows the same figures and this stays silent (``MASKLAB_PROGRESS=1``/``0``
    forces the choice, as for masklab's own bars). Rank zero only."""

    def __init__(self, monitor: str, mode: str = "max"):
        self.monitor, self.mode = monitor, mode
        self.started = 0.0
        self.best: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started, self.best = time.perf_counter(), None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # (not on_validation_epoch_end: callbacks' run before the module's, which logs the epoch's scores)
        from masklab.console import logger, progress_enabled

        if trainer.sanity_checking or not trainer.is_global_zero or progress_enabled():
            return
        logger(__name__).info(self.line(trainer, time.perf_counter() - self.started))

    def line(self, trainer: pl.Trainer, elapsed: float) -> str:
        """The line for where ``trainer`` stands after ``elapsed`` seconds of fitting."""
        from masklab.console import duration

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        value = metrics.get(self.monitor)
        better = max if self.mode == "max" else min
        if value is not None:
            self.best = value if self.best is None else better(self.best, value)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        # train/loss: the last step's (train/loss_epoch is logged after validation: the epoch before's)
        losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.endswith("loss"))
        shown = f"{self.monitor} {value:.4f} (best {self.best:.4f})" if value is not None else f"{self.monitor} -"
        left = ""
        if total and total > 0 and epoch < total:
            left = f", about {duration(elapsed / epoch * (total - epoch))} left"
        return (f"epoch {epoch}/{total if total and total > 0 else '?'} step {trainer.global_step}: "
                f"{losses + '; ' if losses else ''}{shown}; {duration(elapsed)} elapsed{left}")


def ema_with_warmup(decay: float) -> Any:
    """An AveragedModel ``avg_fn``: ``avg <- d avg + (1 - d) weight`` with ``d = min(decay, (1 + n) / (10 + n))`` after
    n updates (timm's warm-up), so a short run's average is not stuck near the initial weights."""

    def average(averaged: Any, current: Any, num_averaged: Any) -> Any:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return d * averaged + (1.0 - d) * current

    return average


class EMAWeights(WeightAveraging):
    """An exponential moving average of the weights, updated after every optimizer step (``decay`` per step, with
    a warm-up: :func:`ema_with_warmup`). Validation scores the average, and the checkpoints hold it: the best one
    (weights only) is what was scored, and ``last.ckpt`` keeps both the average and the current weights to resume.

    Lightning's ``EMAWeightAveraging`` puts the current weights back at the end of each validation epoch, before
    masklab's best checkpoint is written (at validation end; a weights-only checkpoint runs no callback hook), so that
    file would hold weights that were never scored. This one keeps the average in place until the next training
    batch instead.
    """

    def __init__(self, decay: float = 0.99):
        if not 0.0 < decay < 1.0:
            from masklab.errors import UserError

            raise UserError(f"callbacks.ema.decay={decay!r}: expected a number in (0, 1), such as 0.99")
        super().__init__(avg_fn=ema_with_warmup(decay))
        self.decay = decay
        self.swapped = False

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None and not self.swapped:
            self._swap_models(pl_module)
            self.swapped = True

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # the average stays in place for the checkpoints written at validation end

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.swapped:
            self._swap_models(pl_module)
            self.swapped = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.swapped:
            self._swap_models(pl_module)
            self.swapped = False
        super().on_train_end(trainer, pl_module)  # the model ends with the average

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self.swapped and "current_model_state" in checkpoint:
            # While swapped the module holds the average and the AveragedModel the current weights: Lightning's hook
            # filed each under the other's key.
            checkpoint["state_dict"], checkpoint["current_model_state"] = (checkpoint["current_model_state"],
                                                                           checkpoint["state_dict"])
