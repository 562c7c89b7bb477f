"""Training on several processes: BatchNorm statistics over the batches of all ranks, on any device.

torch's ``SyncBatchNorm`` (what ``Trainer(sync_batchnorm=True)`` installs) runs on GPUs only; DDP refuses it on
CPU. :class:`SyncBatchNorm` is a Lightning ``LayerSync`` plugin that gives every BatchNorm layer of the model the
statistics of the whole step (all ranks' images), reduced with the process group's own backend (gloo on CPU).
"""

from __future__ import annotations

import functools

import torch
from pytorch_lightning.plugins import LayerSync
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class AllRanksSum(torch.autograd.Function):
    """The sum of a tensor over all ranks; its gradient is the sum of the ranks' gradients (each rank's output
    depends on every rank's input)."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return AllRanksSum.apply(grad)


def several_ranks() -> bool:
    """Whether a process group of more than one rank is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def leave_process_group() -> None:
    """End this process's part in the process group of a distributed training, if any. Rank zero evaluates after
    training, alone: a torchmetrics metric would otherwise try to reduce over ranks that have left."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm:
    """Mixed into a BatchNorm class: in training, the mean and (biased) variance normalising the batch, and the running
    statistics, are those of all ranks' batches together, as one process holding the whole step would compute them.

    Torch's CPU arithmetic as near as Python gets: two-pass statistics in float64, rounded to x's type, then
    ``x * alpha + beta``: outputs within one unit in the last place of torch's BatchNorm (about half bit-identical).
    How near matters: a ReLU after a BatchNorm turns a last-place difference at a value near 0 into a whole gradient
    element. Through a UNet-resnet18 the gradients were 2e-5 off torch's (torch float32 against float64: 2.5e-5);
    written ``(x - mean) / std * weight + bias``, 0.5%. The price: a float64 copy of each BatchNorm input during
    the step (on GPUs torch's fused SyncBatchNorm is the better choice). Evaluation uses the running statistics, as
    any BatchNorm does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: _BatchNorm = self  # type: ignore[assignment]
        if not (bn.training and several_ranks()):
            return super().forward(x)  # type: ignore[misc]
        dims = [0, *range(2, x.dim())]
        shape = (1, -1, *([1] * (x.dim() - 2)))
        wide = x.double()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=wide.dtype, device=x.device)
        totals = AllRanksSum.apply(torch.cat([wide.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        var = AllRanksSum.apply(((wide - mean.view(shape)) ** 2).sum(dims)) / n
        if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp(min=1)
                bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
                bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
        # torch's own arithmetic: statistics rounded to x's type, then x * alpha + beta.
        alpha = torch.rsqrt(var + bn.eps).to(x.dtype)
        mean = mean.to(x.dtype)
        if bn.affine:
            alpha = alpha * bn.weight
            return x * alpha.view(shape) + (bn.bias - mean * alpha).view(shape)
        return x * alpha.view(shape) - (mean * alpha).view(shape)


@functools.cache
def global_class(cls: type) -> type:
    """``cls`` (a BatchNorm class) with :class:`GlobalBatchNorm`'s forward."""
    return type(f"Global{cls.__name__}", (GlobalBatchNorm, cls), {"__module__": __name__})


class SyncBatchNorm(LayerSync):
    """Lightning plugin (``Trainer(plugins=[SyncBatchNorm()])``): every BatchNorm layer of the model normalises with
    the statistics of all ranks during training (:class:`GlobalBatchNorm`), on CPU as on GPU.

    The layers keep their parameters, buffers and state-dict keys: only their class changes, to a subclass of the
    original, and back after training (``revert``), so checkpoints load into the plain model.
    """

    def apply(self, model: nn.Module) -> nn.Module:
        for layer in model.modules():
            if isinstance(layer, _BatchNorm) and not isinstance(layer, GlobalBatchNorm | nn.SyncBatchNorm):
                layer.__class__ = global_class(type(layer))
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for layer in model.modules():
            if isinstance(layer, GlobalBatchNorm):
                layer.__class__ = type(layer).__bases__[1]
        return model
