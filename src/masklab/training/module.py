"""The LightningModule base every task shares: optimizers, schedulers, checkpoint metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from masklab.data.format import ClassTable
from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY


class TaskModule(pl.LightningModule):
    """What every task's LightningModule shares: the model, loss, optimizer and scheduler factories,
    and ``meta`` (plain values only: task, model spec, class table, config), stored in every
    checkpoint under ``"masklab"`` so a checkpoint alone rebuilds the model.

    A task subclasses it with ``training_step``, ``validation_step`` and its validation metrics.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        class_table: ClassTable,
        meta: dict[str, Any],
    ):
        super().__init__()
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_table = class_table
        self.meta = meta

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer),
                                                          "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_META_KEY] = self.meta
