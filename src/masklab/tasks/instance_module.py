"""The instance task's LightningModule (apart from tasks/instance.py so prediction never imports Lightning)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from masklab.data.classes import ClassTable
from masklab.metrics.instance import InstanceMetrics
from masklab.training.module import TaskModule

# Validation scores mask AP only (Boundary AP and PQ come with `evaluate`): it runs every epoch.
VAL_HEADLINES = ("mask_AP", "mask_AP50", "mask_AP75")


def window_max(values: torch.Tensor, radius: int) -> torch.Tensor:
    """(H, W): the maximum of ``values`` (H, W) over each pixel's (2 radius + 1)^2 window, counting only
    pixels inside the image (as ``max_pool2d`` with -inf padding). Written as shifted maxima because
    torch's CPU ``max_pool2d`` with stride 1 takes ~4 ms for one 256x256 channel, 16x this."""
    for dim in (0, 1):
        source, values = values, values.clone()
        size = values.shape[dim]
        for d in range(1, min(radius, size - 1) + 1):
            ahead, behind = source.narrow(dim, d, size - d), source.narrow(dim, 0, size - d)
            values.narrow(dim, d, size - d).copy_(torch.maximum(values.narrow(dim, d, size - d), behind))
            values.narrow(dim, 0, size - d).copy_(torch.maximum(values.narrow(dim, 0, size - d), ahead))
    return values


def interior_ids(things: torch.Tensor, width: int) -> torch.Tensor:
    """(H, W) int64: at each pixel, 1 + the index of the object of ``things`` (K, H, W) float 0/1 whose
    mask eroded by ``width`` px (square window; the image border does not erode) covers it, 0 where
    none does (the last such object where eroded masks overlap).

    Objects that do not overlap (nuclei, most instance data) are eroded at once on their id map: a
    pixel is interior when every in-image pixel of its window carries its id (two max-pools over
    one map instead of once per object: the bottom-up target of a batch of four 256 px DSB images
    took 0.2 s the slow way). Overlapping objects are eroded one by one."""
    k = 2 * width + 1
    order = torch.arange(1, len(things) + 1, dtype=things.dtype, device=things.device)[:, None, None]
    if not len(things) or things.sum(dim=0).max() <= 1:
        ids = (things * order).sum(dim=0)
        return torch.where(window_max(ids, width) == -window_max(-ids, width), ids, 0).long()
    # Erosion = 1 - dilation of the complement.
    eroded = 1 - F.max_pool2d(1 - things, k, stride=1, padding=width)
    return (eroded * order).amax(dim=0).long()


def dense_target(targets: list[dict[str, torch.Tensor]], num_classes: int, boundary_width: int,
                 ignore_index: int) -> torch.Tensor:
    """(N, H, W) int64 training target of the bottom-up path from per-image objects (``masks`` (K, H, W),
    ``labels`` (K,), ``iscrowd`` (K,)): each object's interior (the mask eroded by ``boundary_width``
    px; the image border does not erode) gets its class id, its rim and every pixel two objects share
    get the boundary class ``num_classes``, crowd regions ``ignore_index``, the rest 0."""
    out = []
    for t in targets:
        masks = t["masks"].float()
        h, w = masks.shape[-2:]
        target = torch.zeros(h, w, dtype=torch.int64, device=masks.device)
        if len(masks):
            crowd = t["iscrowd"].bool()
            things = masks[~crowd]
            lookup = torch.cat([target.new_zeros(1), t["labels"][~crowd].to(target)])
            target = lookup[interior_ids(things, boundary_width)]
            covered = things.sum(dim=0)
            target[(covered > 0) & ((target == 0) | (covered > 1))] = num_classes
            if crowd.any():
                target[(masks[crowd].sum(dim=0) > 0) & (covered == 0)] = ignore_index
        out.append(target)
    return torch.stack(out)


def detection_targets(targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """torchvision's Mask R-CNN targets: crowd objects left out (it has no notion of them)."""
    keep = [~t["iscrowd"].bool() for t in targets]
    return [{"boxes": t["boxes"][m], "labels": t["labels"][m], "masks": t["masks"][m].to(torch.uint8)}
            for t, m in zip(targets, keep)]


class InstanceModule(TaskModule):
    """Instance steps: batches ``{image (N, 3, H, W) uint8, targets: [{masks, labels, boxes, iscrowd}], id}``.

    Mask R-CNN trains on its own losses (their sum; each logged as ``train/loss_<name>``); the
    bottom-up network on the configured dense loss against :func:`dense_target`. Validation
    predicts objects exactly as evaluation does and reports COCO mask AP (``val/mask_AP``, the
    instance presets' monitor)."""

    # COCO AP is computed from each rank's own images (InstanceMetrics is no torchmetrics Metric): not under DDP.
    reduces_validation_over_ranks = False

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None, class_table: ClassTable, meta: dict[str, Any]):
        super().__init__(model, loss, optimizer, scheduler, class_table, meta)
        self.detection = getattr(model, "output_kind", "logits") == "detections"
        self.val_metrics: InstanceMetrics | None = None
        # The bottom-up network's settings (boundary width, ...); a detection model has none.
        self.postprocess: dict[str, Any] = getattr(model, "postprocess", {})

    def _dense_target(self, batch: dict[str, Any]) -> torch.Tensor:
        return dense_target(batch["targets"], self.class_table.num_classes,
                            int(self.postprocess["boundary_width"]), self.class_table.ignore_index)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        n = len(batch["id"])
        if self.detection:
            losses = self.model(batch["image"], detection_targets(batch["targets"]))
            loss = sum(losses.values())
            for name, value in losses.items():
                self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=n)
        else:
            loss = self.loss(self.model(batch["image"]), self._dense_target(batch))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics = InstanceMetrics(self.class_table.object_class_ids, boundary=False)

    def _val_metrics(self) -> InstanceMetrics:
        if self.val_metrics is None:  # Lightning calls on_validation_epoch_start first
            raise RuntimeError("instance validation metrics used outside a validation epoch")
        return self.val_metrics

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from masklab.tasks.instance_predictions import predictions_from_output

        output = self.model(batch["image"])
        if not self.detection:
            self.log("val/loss", self.loss(output, self._dense_target(batch)), on_epoch=True,
                     batch_size=len(batch["id"]))
        for sample_id, target, pred in zip(batch["id"], batch["targets"], predictions_from_output(self.model, output)):
            self._val_metrics().update(sample_id, target["masks"].bool().cpu().numpy(),
                                       target["labels"].cpu().numpy(), target["iscrowd"].cpu().numpy(), pred.masks,
                                       pred.class_ids, pred.scores)

    def on_validation_epoch_end(self) -> None:
        scores = self._val_metrics().compute()
        self.val_metrics = None
        self.log("val/mask_AP", float(scores["mask_AP"]), prog_bar=True)  # the default instance monitor
        self.log_dict({f"val/{k}": float(scores[k]) for k in VAL_HEADLINES[1:] if k in scores})
