"""The LightningModule for semantic segmentation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from masklab.data.format import ClassTable
from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY
from masklab.metrics import SemanticMetrics, named_scalars


class SegmentationModule(pl.LightningModule):
    """Trains ``model`` with ``loss``; validation accumulates a confusion matrix and reduces once per epoch.

    ``meta`` (plain values only: model spec, class table, config) is stored in every checkpoint
    under ``"masklab"`` so a checkpoint alone rebuilds the model.
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
        self.val_metrics = SemanticMetrics(class_table.num_classes, class_table.ignore_index)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss(logits, batch["mask"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["id"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        self.log("val/loss", self.loss(logits, batch["mask"]), on_epoch=True, batch_size=len(batch["id"]))
        self.val_metrics.update(logits.argmax(dim=1), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        scores = named_scalars(self.val_metrics.compute(), "val", self.class_table.names)
        self.val_metrics.reset()
        miou = scores.pop("val/mIoU")
        self.log("val/mIoU", miou, prog_bar=True)  # the default monitor: shown in the progress bar
        self.log_dict(scores)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer),
                                                          "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_META_KEY] = self.meta
