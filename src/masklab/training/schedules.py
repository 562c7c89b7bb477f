"""Learning-rate schedules whose length can be set while training runs (a wall-clock budget sets it).

torch's schedulers fix their length when built (``CosineAnnealingLR(T_max=...)``, ``OneCycleLR(total_steps=...)``)
and compute the next rate from the previous one, so a length changed halfway gives a curve that belongs to neither
length. :class:`ProgressSchedule` computes each epoch's rate from the share of training done, ``epoch / horizon``,
so :class:`masklab.training.callbacks.TimeBudget` can set the horizon from the measured epoch time and the rate
still anneals to its end within the budget.
"""

from __future__ import annotations

import math

import torch

from masklab.errors import UserError

SHAPES = ("cosine", "linear", "constant")


class ProgressSchedule(torch.optim.lr_scheduler.LRScheduler):
    """The rate at epoch ``e`` is ``base_lr * factor(e / horizon)``, stepped once per epoch.

    ``factor``: a linear warm-up from ``start_factor`` to 1 over the first ``warmup`` share of the horizon, then
    ``shape`` down to ``end_factor`` at the horizon: ``cosine`` (half a cosine; with no warm-up and ``end_factor=0``
    the curve of ``CosineAnnealingLR(T_max=horizon)``), ``linear`` or ``constant``. One-cycle (Smith & Topin) is
    ``cosine`` with ``warmup=0.3, start_factor=0.04, end_factor=4e-6``, torch's ``OneCycleLR`` defaults.
    ``horizon``: the run's length in epochs; None until known (a time budget without ``max_epochs``): the
    rate stays at ``factor(0)`` until :meth:`set_horizon` is called. The share done never decreases, so a horizon
    that grows holds the rate rather than raising it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, horizon: int | None, shape: str = "cosine",
                 warmup: float = 0.0, start_factor: float = 1.0, end_factor: float = 0.0, last_epoch: int = -1):
        if shape not in SHAPES:
            raise UserError(f"scheduler.shape={shape!r}: expected one of {', '.join(SHAPES)}")
        if not 0.0 <= warmup < 1.0:
            raise UserError(f"scheduler.warmup={warmup!r}: expected a share of the run in [0, 1)")
        if horizon is not None and int(horizon) < 1:
            raise UserError(f"scheduler.horizon={horizon!r}: expected a positive number of epochs or null")
        self.horizon = int(horizon) if horizon is not None else None
        self.shape, self.warmup = shape, float(warmup)
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.progress = 0.0
        super().__init__(optimizer, last_epoch)

    def set_horizon(self, epochs: int) -> None:
        """The run's length in epochs from now on; the rate of the current epoch is not changed."""
        self.horizon = max(1, int(epochs))

    def factor(self, progress: float) -> float:
        """The multiplier of the base rate at ``progress`` in [0, 1] (clipped)."""
        t = min(max(progress, 0.0), 1.0)
        if t < self.warmup:
            return self.start_factor + (1.0 - self.start_factor) * t / self.warmup
        rest = (t - self.warmup) / (1.0 - self.warmup)
        decay = {"cosine": 0.5 * (1.0 + math.cos(math.pi * rest)), "linear": 1.0 - rest, "constant": 1.0}[self.shape]
        return self.end_factor + (1.0 - self.end_factor) * decay

    def get_lr(self) -> list[float]:  # type: ignore[override]
        # Progress never goes back: when a longer horizon is set (later epochs ran faster than the first), the rate
        # holds until the run catches up instead of rising again.
        if self.horizon:
            self.progress = max(self.progress, self.last_epoch / self.horizon)
        return [base * self.factor(self.progress) for base in self.base_lrs]
