"""Lightning callbacks of masklab."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    """Logs ``train/images_per_s`` once per epoch: training images per wall-clock second.

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
        pl_module.log("train/images_per_s", rate)
