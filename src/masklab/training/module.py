"""The LightningModule base every task shares: optimizers, schedulers, checkpoint metadata."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from masklab.data.classes import ClassTable
from masklab.evaluation.checkpoint import CHECKPOINT_META_KEY


class TaskModule(pl.LightningModule):
    """What every task's LightningModule shares: the model, loss, optimizer and scheduler factories,
    and ``meta`` (plain values only: task, model spec, class table, config), stored in every
    checkpoint under ``"masklab"`` so a checkpoint alone rebuilds the model.

    A task subclasses it with ``training_step``, ``validation_step`` and its validation metrics.
    ``reduces_validation_over_ranks``: whether those metrics are those of the whole split under DDP.
    """

    reduces_validation_over_ranks = True

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

    def log_reduced(self, scores: Mapping[str, Any], prog_bar: Sequence[str] = ()) -> None:
        """Log epoch ``scores`` that are already reduced over the ranks of a distributed run (a torchmetrics
        ``compute()``): every rank holds the same values. They are logged with a max over ranks, which leaves equal
        values exactly as they are (a mean of W copies may round) and tells Lightning they need no other reduction;
        ``prog_bar``: the names also shown in the progress bar."""
        for name, value in scores.items():
            self.log(name, value, prog_bar=name in prog_bar, sync_dist=True, reduce_fx="max")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_META_KEY] = self.meta
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed training draws what the uninterrupted one would have drawn next (dropout, proposal sampling).
        if RNG_KEY in checkpoint:
            set_rng_states(checkpoint[RNG_KEY])


RNG_KEY = "masklab_rng"


def rng_states() -> dict[str, Any]:
    """The global random states of torch (CPU, and every visible CUDA device: dropout on a GPU draws from its own
    generator), numpy and Python as tensors and plain numbers: a checkpoint stays loadable with
    ``torch.load(weights_only=True)``."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = {"cuda": list(torch.cuda.get_rng_state_all())} if torch.cuda.is_available() else {}
    return {"torch": torch.get_rng_state(), **cuda,
            "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` saved. CUDA states go to the devices this process sees, as many as both
    have (a GPU checkpoint resumed on a CPU keeps only the CPU, numpy and Python states)."""
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = states["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
