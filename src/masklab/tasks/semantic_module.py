"""The semantic task's LightningModule (kept apart from tasks/semantic.py so prediction never imports Lightning)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from masklab.data.format import ClassTable
from masklab.metrics import SemanticMetrics, argmax_classes, named_scalars
from masklab.training.module import TaskModule


class SemanticModule(TaskModule):
    """Semantic steps: batches ``{image (N,3,H,W) uint8, mask (N,H,W) int64, id}``, logits (N,C,H,W);
    validation accumulates a confusion matrix and reduces once per epoch."""

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None, class_table: ClassTable, meta: dict[str, Any]):
        super().__init__(model, loss, optimizer, scheduler, class_table, meta)
        self.val_metrics = SemanticMetrics(class_table.num_classes, class_table.ignore_index)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss(logits, batch["mask"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["id"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        self.log("val/loss", self.loss(logits, batch["mask"]), on_epoch=True, batch_size=len(batch["id"]))
        self.val_metrics.update(argmax_classes(logits), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        scores = named_scalars(self.val_metrics.compute(), "val", self.class_table.names)
        self.val_metrics.reset()
        miou = scores.pop("val/mIoU")
        self.log("val/mIoU", miou, prog_bar=True)  # the default monitor: shown in the progress bar
        self.log_dict(scores)
