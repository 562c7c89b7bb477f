"""The Lightning Trainer of a ``trainer`` config: Lightning's arguments, plus masklab's training-speed options."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from masklab.errors import UserError

NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere (A100, RTX 30xx) and later compute bfloat16 in hardware


def build_trainer(channels_last: bool = False, callbacks: list[pl.Callback] | None = None, **kwargs: Any
                  ) -> pl.Trainer:
    """``pl.Trainer(**kwargs)`` (the ``trainer`` config's ``_target_``), after checking the precision against the
    GPU; ``channels_last``: train in the channels-last memory format (:class:`ChannelsLast`)."""
    from masklab.training.callbacks import ChannelsLast

    check_precision(str(kwargs.get("precision", "32-true")), str(kwargs.get("accelerator", "auto")))
    callbacks = [*(callbacks or []), *([ChannelsLast()] if channels_last else [])]
    return pl.Trainer(callbacks=callbacks, **kwargs)


def check_precision(precision: str, accelerator: str) -> None:
    """bf16 on a GPU without bfloat16 units (V100, T4) is emulated, slower than 16-mixed: a UserError saying so."""
    import torch

    if not precision.startswith("bf16") or accelerator not in ("gpu", "cuda", "auto") \
            or not torch.cuda.is_available():
        return
    capability = torch.cuda.get_device_capability()
    if capability < NATIVE_BF16_CAPABILITY:
        raise UserError(f"trainer.precision={precision}: the GPU {torch.cuda.get_device_name()} (compute capability "
                        f"{capability[0]}.{capability[1]}) has no bfloat16 units; expected "
                        "trainer.precision=16-mixed (or 32-true) on it")
