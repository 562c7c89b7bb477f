"""The Lightning Trainer of a ``trainer`` config: Lightning's arguments, plus masklab's training-speed options."""

from __future__ import annotations

import re
from datetime import timedelta
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
    if kwargs.get("max_time") is not None:
        kwargs["max_time"] = timedelta(seconds=parse_duration(kwargs["max_time"], "trainer.max_time"))
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


_UNITS = {"d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1}


def parse_duration(value: Any, key: str) -> float:
    """Seconds of a duration written as seconds (``90``), with units (``"20m"``, ``"1h30m"``, ``"45s"``, ``"2d"``),
    as Lightning's ``"DD:HH:MM:SS"`` or as Lightning's dict (``{minutes: 20}``); a UserError naming ``key``
    otherwise (also for zero or less)."""
    seconds: float | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif hasattr(value, "items"):
        try:
            seconds = timedelta(**{str(k): float(v) for k, v in value.items()}).total_seconds()
        except (TypeError, ValueError):
            seconds = None
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(r"\d+:\d+:\d+:\d+", text):
            d, h, m, s = (int(p) for p in text.split(":"))
            seconds = float(((d * 24 + h) * 60 + m) * 60 + s)
        elif re.fullmatch(r"(\d+(\.\d+)?(d|h|min|m|s))+", text):
            seconds = sum(float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(d|h|min|m|s)", text))
    if seconds is None or not seconds > 0:
        raise UserError(f"{key}={value!r}: expected a positive duration such as 20m, 1h30m, 45s, 00:01:30:00 "
                        "(DD:HH:MM:SS) or a number of seconds")
    return seconds
