"""masklab's ThroughputMonitor against Lightning's on the same steps.

Why masklab keeps its own: Lightning's ``ThroughputMonitor`` gives the same figure only when its window is the
epoch less the warm-up batches and it is read at the epoch's last step; it logs every step over a window that
crosses epoch boundaries, and under DDP it multiplies one rank's count by the world size where masklab sums what
each rank measured. ``train/images_per_s`` is one number per epoch, which the curves, sweeps and benchmarks read.
"""

from __future__ import annotations

import csv

import pytest
import torch

BATCHES, BATCH, WARMUP = 12, 4, 2


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_the_epoch_rate_is_lightnings_window_over_the_same_steps(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ThroughputMonitor as LightningMonitor
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from masklab.training.callbacks import ThroughputMonitor

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Net()

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["mask"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    items = [{"image": torch.rand(3, 32, 32), "mask": torch.randint(0, 2, (32, 32))} for _ in range(BATCHES * BATCH)]
    ours = ThroughputMonitor(warmup_steps=WARMUP)
    # The clock starts at the end of batch WARMUP: a window of BATCHES - WARMUP + 1 step ends covers the same span.
    theirs = LightningMonitor(batch_size_fn=lambda b: len(b["image"]), window_size=BATCHES - WARMUP + 1)
    trainer = pl.Trainer(max_epochs=2, logger=CSVLogger(tmp_path), callbacks=[ours, theirs], log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(Module(), DataLoader(items, batch_size=BATCH))
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    lightning = {int(r["step"]): float(r["train/device/samples_per_sec"]) for r in rows
                 if r.get("train/device/samples_per_sec")}
    assert len(ours.history) == 2
    for epoch, rate in enumerate(ours.history):
        assert lightning[BATCHES * (epoch + 1) - 1] == pytest.approx(rate, rel=1e-2)
