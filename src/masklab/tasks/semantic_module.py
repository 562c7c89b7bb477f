"""The semantic task's LightningModule (kept apart from tasks/semantic.py so prediction never imports Lightning)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from masklab.data.classes import ClassTable
from masklab.metrics import SemanticMetrics, argmax_classes, named_scalars
from masklab.training.module import TaskModule


class SemanticModule(TaskModule):
    """Semantic steps: batches ``{image (N,3,H,W) uint8, mask (N,H,W) int64, id}``, logits (N,C,H,W);
    validation accumulates a confusion matrix and reduces once per epoch."""

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None, class_table: ClassTable, meta: dict[str, Any]):
        super().__init__(model, loss, optimizer, scheduler, class_table, meta)
        self.val_metrics = SemanticMetrics(class_table.num_classes, class_table.ignore_index)
        # The mean of the batches' losses weighted by their sizes, as float sums reduced over ranks (Lightning's own
        # sync_dist mean rounds the summed batch sizes to an integer after dividing by the world size on gloo: 7
        # validation images on 2 ranks counted as 3).
        self.val_loss = MeanMetric()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss(logits, batch["mask"])
        # sync_dist: under DDP the logged value is the mean over all ranks' images, not rank zero's share.
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["id"]),
                 sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        self.val_loss.update(self.loss(logits, batch["mask"]).detach(), weight=len(batch["id"]))
        self.val_metrics.update(argmax_classes(logits), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        # compute() reduces the metric states over the ranks of a distributed run: each rank has the split's scores.
        scores = {"val/loss": float(self.val_loss.compute()),
                  **named_scalars(self.val_metrics.compute(), "val", self.class_table.names)}
        self.val_metrics.reset()
        self.val_loss.reset()
        self.log_reduced(scores, prog_bar=("val/mIoU",))  # the default monitor: shown in the progress bar
