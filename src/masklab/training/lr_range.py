"""The learning-rate range test (Smith 2017) behind ``optimizer.lr=auto``, on Lightning's tuner.

A short training with the learning rate growing exponentially from ``min_lr`` to ``max_lr``, one step each,
records the (smoothed) loss per rate; the suggested rate is where that loss falls fastest (Lightning's
``suggestion()``). The model's weights are restored afterwards, so training starts from the same initial weights.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.errors import UserError


@dataclass(frozen=True)
class LearningRateRange:
    """The rates tried, the smoothed training loss at each, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float

    def write(self, folder: Path) -> list[Path]:
        """``lr_find.csv`` (lr, loss) and ``lr_find.png`` (the curve, the suggestion marked) in ``folder``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from masklab.files import atomic_write

        folder.mkdir(parents=True, exist_ok=True)

        def table(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["lr", "loss"])
                writer.writerows(zip(self.lrs, self.losses))

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(self.lrs, self.losses)
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggested {self.suggestion:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)",
               title="Learning-rate range test")
        ax.legend()
        fig.tight_layout()
        paths = [atomic_write(folder / "lr_find.csv", table),
                 atomic_write(folder / "lr_find.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100))]
        plt.close(fig)
        return paths


def lr_range_test(module: Any, datamodule: Any, steps: int, min_lr: float, max_lr: float, accelerator: str = "cpu",
                  precision: str = "32-true", deterministic: bool | str = True) -> LearningRateRange:
    """Run the range test on ``module`` (its optimizer's rate is replaced during the test) and ``datamodule``,
    ``steps`` training steps on one device; ``module``'s weights are as before afterwards."""
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    if not (0 < min_lr < max_lr) or steps < 5:
        raise UserError(f"lr_finder: expected 0 < min_lr < max_lr and steps >= 5, got min_lr={min_lr}, "
                        f"max_lr={max_lr}, steps={steps}")
    with tempfile.TemporaryDirectory(prefix="masklab-lr-find-") as tmp:
        trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, deterministic=deterministic,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp, num_sanity_val_steps=0)
        finder = Tuner(trainer).lr_find(module, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr,
                                        num_training=steps, update_attr=False)
    # Lightning skips the first 10 of its default 100 points (the loss is still settling); as much in proportion.
    suggestion = finder.suggestion(skip_begin=max(1, steps // 10), skip_end=1) if finder is not None else None
    if finder is None or suggestion is None:
        raise UserError(f"optimizer.lr=auto: the range test ({steps} steps from {min_lr:g} to {max_lr:g}) found no "
                        "rate where the loss falls; set optimizer.lr to a number, or give lr_finder.steps more steps")
    return LearningRateRange([float(v) for v in finder.results["lr"]], [float(v) for v in finder.results["loss"]],
                             float(suggestion))
