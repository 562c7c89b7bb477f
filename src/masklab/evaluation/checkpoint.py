"""Rebuild a model from a masklab checkpoint without unpickling arbitrary objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from masklab.data.classes import ClassTable
from masklab.errors import UserError

# Key of the plain-value metadata masklab adds to every Lightning checkpoint. Defined here, not
# in training/, so loading a model never imports Lightning.
CHECKPOINT_META_KEY = "masklab"
# Where a checkpoint's user model code is looked up, as error messages name it.
PROJECT_CODE = "the project (run masklab in the project folder or set MASKLAB_ROOT)"


@dataclass
class LoadedModel:
    model: nn.Module
    class_table: ClassTable
    meta: dict[str, Any]


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The plain-value metadata masklab stores in a checkpoint (model spec, classes, config, run id)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if CHECKPOINT_META_KEY not in ckpt:
        raise UserError(f"checkpoint {path} was not written by masklab (no '{CHECKPOINT_META_KEY}' entry)")
    return ckpt


def write_inference_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Copy a checkpoint without optimizer and scheduler state: weights and masklab metadata only.

    Enough for evaluation, prediction and registration, at about a third of the size of a
    checkpoint trained with Adam (two moments per weight); not enough to resume training.
    """
    from masklab.files import atomic_write

    ckpt = read_checkpoint_meta(source)
    for key in ("optimizer_states", "lr_schedulers"):
        ckpt.pop(key, None)
    return atomic_write(Path(target), lambda tmp: torch.save(ckpt, tmp))


def model_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own weights and buffers in a loaded Lightning checkpoint (``model.`` prefix removed)."""
    return {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def load_checkpoint_model(path: str | Path) -> LoadedModel:
    """Model in eval mode on CPU, its class table and metadata, from a Lightning checkpoint file.

    A model of the user's own code is imported from the project folder (see ``masklab.models.stored.rebuild_model``).
    """
    from masklab.models.stored import rebuild_model
    from masklab.project import project_root

    ckpt = read_checkpoint_meta(path)
    meta = ckpt[CHECKPOINT_META_KEY]
    table = ClassTable.from_dict(meta["classes"], f"{path} (classes)")
    model = rebuild_model(meta["model"], table.num_classes, project_root(), where=PROJECT_CODE)
    model.load_state_dict(model_state_dict(ckpt))
    model.eval()
    return LoadedModel(model, table, meta)
