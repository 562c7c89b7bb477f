"""Read and write masklab checkpoints without unpickling arbitrary objects.

A checkpoint holds a model's weights and masklab's plain-value metadata (model spec, classes, config, input rule,
run id), in one of two formats; which one a file is, is read from its first bytes, not from its name:

- a Lightning checkpoint (torch's zip, ``.ckpt``): what training writes in its run folder (``best-*.ckpt``,
  ``last.ckpt``), the DVC pipeline's ``model.ckpt`` and the tracked best model of runs logged before
  ``best.safetensors`` (``checkpoints/best.ckpt``). Weights: its ``state_dict`` (the LightningModule's, the
  model's under ``model.``); metadata: its ``masklab`` entry. Read with ``torch.load(weights_only=True)``.
- a safetensors checkpoint: the best model masklab tracks in MLflow (``checkpoints/best.safetensors``). Tensors:
  the model's own state_dict (no ``model.`` prefix; the keys of a registry package's weights, so the file also
  serves as ``model.weights_path``); metadata: the header's ``masklab`` entry, the metadata as JSON. It reads
  without torch (``read_safetensors_checkpoint(..., "numpy")``: registering a model needs no torch).

This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masklab.data.classes import ClassTable
from masklab.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

# Key of the plain-value metadata masklab adds to every Lightning checkpoint (and to a safetensors checkpoint's
# header). Defined here, not in training/, so loading a model never imports Lightning.
CHECKPOINT_META_KEY = "masklab"
# Where a checkpoint's user model code is looked up, as error messages name it.
PROJECT_CODE = "the project (run masklab in the project folder or set MASKLAB_ROOT)"
SAFETENSORS_SUFFIX = ".safetensors"
# The prefix of the model's entries in a Lightning state_dict (the LightningModule's ``model`` attribute).
MODEL_PREFIX = "model."


@dataclass
class LoadedModel:
    model: nn.Module
    class_table: ClassTable
    meta: dict[str, Any]


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` starts like a safetensors file: an 8-byte little-endian header length, then the JSON
    header's ``{`` (torch's zip starts with ``PK``, its legacy pickle format with 0x80)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
        size = fh.seek(0, 2)
    return len(head) == 9 and head[8:] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def read_safetensors_checkpoint(path: str | Path, framework: str = "pt", weights: bool = True
                                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(masklab metadata, the model's weights) of a safetensors checkpoint; ``framework`` "numpy" gives numpy
    arrays without importing torch (a TypeError for a dtype numpy lacks, such as bfloat16), "pt" torch tensors.
    ``weights=False``: the header alone is read, the weights come back empty."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework=framework) as f:
            header = f.metadata() or {}
            if CHECKPOINT_META_KEY not in header:
                raise UserError(f"checkpoint {path} was not written by masklab (no '{CHECKPOINT_META_KEY}' entry in "
                                "its safetensors metadata)")
            meta = json.loads(header[CHECKPOINT_META_KEY])
            return meta, {k: f.get_tensor(k) for k in f.keys()} if weights else {}
    except (SafetensorError, json.JSONDecodeError) as exc:
        raise UserError(f"checkpoint {path}: not a readable safetensors checkpoint ({exc})") from exc


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint as a dict holding masklab's metadata under ``CHECKPOINT_META_KEY``: all of a Lightning
    checkpoint; of a safetensors checkpoint only that entry (its tensors are not read)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if is_safetensors(path):
        return {CHECKPOINT_META_KEY: read_safetensors_checkpoint(path, "numpy", weights=False)[0]}
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or CHECKPOINT_META_KEY not in ckpt:
        raise UserError(f"checkpoint {path} was not written by masklab (no '{CHECKPOINT_META_KEY}' entry)")
    return ckpt


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(masklab metadata, the model's weights as torch tensors) of a checkpoint in either format."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if is_safetensors(path):
        return read_safetensors_checkpoint(path, "pt")
    ckpt = read_checkpoint_meta(path)
    return ckpt[CHECKPOINT_META_KEY], model_state_dict(ckpt)


def write_inference_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Copy the Lightning checkpoint ``source`` without optimizer and scheduler state: weights and masklab metadata.

    Enough for evaluation, prediction and registration, at about a third of the size of a checkpoint trained with
    Adam (two moments per weight); not enough to resume training. A ``target`` named ``*.safetensors`` gets a
    safetensors checkpoint (the model's weights, the metadata as JSON in the header, which safetensors caps at
    100 MB); any other name a Lightning checkpoint (torch's format).
    """
    import torch

    from masklab.files import atomic_write

    target = Path(target)
    if target.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        meta, weights = read_checkpoint(source)
        header = {CHECKPOINT_META_KEY: json.dumps(meta)}
        ready = safetensors_ready(weights)
        return atomic_write(target, lambda tmp: save_file(ready, str(tmp), metadata=header))
    ckpt = read_checkpoint_meta(source)
    for key in ("optimizer_states", "lr_schedulers"):
        ckpt.pop(key, None)
    return atomic_write(target, lambda tmp: torch.save(ckpt, tmp))


def safetensors_ready(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as safetensors can save it: contiguous, and no two tensors on one storage (tied weights, views
    of one buffer): each such tensor after the first gets a copy of its own."""
    seen: set[int] = set()
    ready = {}
    for key, tensor in state.items():
        tensor = tensor.detach().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        ready[key] = tensor.clone() if storage in seen else tensor
        if storage:  # (empty tensors may all report 0; safetensors ignores them)
            seen.add(storage)
    return ready


def model_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own weights and buffers in a loaded Lightning checkpoint (``model.`` prefix removed)."""
    return {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}


def load_checkpoint_model(path: str | Path) -> LoadedModel:
    """Model in eval mode on CPU, its class table and metadata, from a checkpoint file (either format).

    A model of the user's own code is imported from the project folder (see ``masklab.models.stored.rebuild_model``).
    """
    from masklab.models.stored import rebuild_model
    from masklab.project import project_root

    meta, weights = read_checkpoint(path)
    table = ClassTable.from_dict(meta["classes"], f"{path} (classes)")
    model = rebuild_model(meta["model"], table.num_classes, project_root(), where=PROJECT_CODE)
    model.load_state_dict(weights)
    model.eval()
    return LoadedModel(model, table, meta)
