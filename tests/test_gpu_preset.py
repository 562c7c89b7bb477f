"""trainer=gpu: bf16-mixed and channels-last. The memory format is checked on CPU: the model's weights and the
batches the step sees are channels-last, and the loss is the contiguous one up to float rounding."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from masklab.config import compose
from masklab.data.classes import ClassInfo, ClassTable
from masklab.errors import UserError
from masklab.tasks import task_for
from masklab.training.callbacks import ChannelsLast
from masklab.training.trainer import build_trainer, check_precision

from conftest import in_project

CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "shape", (230, 25, 75)),
                      ClassInfo(2, "other", (60, 180, 75))))
CL = torch.channels_last


def test_gpu_preset_is_bf16_and_channels_last(project, monkeypatch):
    in_project(monkeypatch, project)
    gpu = compose("train", ["trainer=gpu"]).trainer
    assert (gpu.accelerator, gpu.precision, gpu.channels_last) == ("gpu", "bf16-mixed", True)
    assert gpu._target_ == "masklab.training.trainer.build_trainer"
    assert compose("train", ["trainer=gpu", "trainer.precision=16-mixed"]).trainer.precision == "16-mixed"
    cpu = compose("train", []).trainer
    assert (cpu.precision, cpu.channels_last) == ("32-true", False)


def test_bf16_refused_on_a_gpu_without_bfloat16_units(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    with pytest.raises(UserError, match=r"trainer.precision=bf16-mixed: the GPU Tesla V100 .*16-mixed"):
        check_precision("bf16-mixed", "gpu")
    check_precision("16-mixed", "gpu")  # fp16 is fine there
    check_precision("bf16-mixed", "cpu")  # CPU autocast does bf16


class Probe(pl.Callback):
    """Records, at each training step, the loss and whether the batch and the first conv's weight are channels-last."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, bool, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        conv = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Conv2d))
        self.seen.append((float(outputs["loss"]), batch["image"].is_contiguous(memory_format=CL),
                          conv.weight.is_contiguous(memory_format=CL)))


def first_steps(channels_last: bool, project) -> list[tuple[float, bool, bool]]:
    """Two training steps of a UNet-resnet18 on the same seeded batches, through masklab's Trainer builder."""
    cfg = compose("train", ["model.encoder=resnet18"])
    task = task_for(cfg)
    torch.manual_seed(0)
    module = task.lightning_module(task.build_model(cfg.model, CLASSES), task.build_loss(cfg.loss, CLASSES),
                                   partial(torch.optim.SGD, lr=0.01), None, CLASSES, {})
    g = torch.Generator().manual_seed(1)
    # 64 px, 4 images: at 32 px x 2 the encoder's last BatchNorm normalises over 2 values (1 x 1 maps), which
    # turns summation-order differences of 1e-7 into a 1 % different second step; here they stay ~1e-6
    batches = [{"image": torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=g),
                "mask": torch.randint(0, 3, (4, 64, 64), generator=g), "id": list("abcd")} for _ in range(2)]
    probe = Probe()
    trainer = build_trainer(channels_last=channels_last, callbacks=[probe], accelerator="cpu", devices=1,
                            max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=str(project))
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return probe.seen


def test_channels_last_reaches_model_and_batches_and_keeps_the_loss(project, monkeypatch):
    in_project(monkeypatch, project)
    contiguous = first_steps(False, project)
    nhwc = first_steps(True, project)
    assert [s[1:] for s in contiguous] == [(False, False)] * 2
    assert [s[1:] for s in nhwc] == [(True, True)] * 2
    # step 2 follows an optimizer step on channels-last gradients: the same numbers up to summation order
    for (a, _, _), (b, _, _) in zip(contiguous, nhwc, strict=True):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)


def test_channels_last_leaves_other_batches_alone():
    cb = ChannelsLast()
    masks = torch.zeros(2, 8, 8, dtype=torch.long)
    batch = {"image": [torch.zeros(3, 8, 8)], "mask": masks}  # instance batches: a list of images
    cb.on_train_batch_start(None, None, batch, 0)
    assert isinstance(batch["image"], list) and batch["mask"] is masks
