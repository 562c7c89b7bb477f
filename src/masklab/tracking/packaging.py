"""A masklab model package: everything inference needs, with no pickled objects.

    package/
      masklab_model.yaml   model spec (arch, encoder), classes (ids, names, colours), normalisation,
                           input rule (resize or pad/tile), dataset name and manifest hash, source run
      weights.safetensors  the network's state_dict (normalisation buffers included)
      code/                only for a model of the user's own code: the top-level module its
                           ``_target_`` names (``my_models.py`` or ``my_models/``), so the folder
                           loads in any process and directory; the spec's ``code`` entry names it
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from masklab.config import DEFAULT_TASK
from masklab.data.classes import ClassTable

# Package and load_package_dir live in inference/ (loading a model is inference's job); named here too because
# the pyfunc file stored with every version registered before v3 imports load_package_dir from this module.
from masklab.inference.package import CODE_DIR, SPEC_FILE, WEIGHTS_FILE, Package, load_package_dir  # noqa: F401

if TYPE_CHECKING:

    pass

PACKAGE_VERSION = 1
# = masklab.evaluation.checkpoint.CHECKPOINT_META_KEY, which cannot be imported without torch
# (tests/test_registry.py checks that they agree).
CHECKPOINT_META_KEY = "masklab"


def write_package(ckpt_path: str | Path, out_dir: str | Path, code_root: str | Path | None = None) -> dict[str, Any]:
    """Turn a masklab checkpoint into a package folder; returns the spec written.

    A model of the user's own code ships its top-level module, copied from ``code_root`` (default:
    the project folder) into ``<out_dir>/code/``; the spec's ``code`` entry names it
    (``{"module": "my_models", "path": "code/my_models.py"}``).
    """
    from masklab.inference.rule import rule_from_meta
    from masklab.models.spec import is_masklab_model
    from masklab.project import project_root

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The weights are copied from the checkpoint without building the model (no smp import, ~2 s);
    # loading the package builds it and loads them strictly, so a mismatch still fails loudly.
    meta, state = read_checkpoint_weights(ckpt_path)
    table = ClassTable.from_dict(meta["classes"], f"{ckpt_path} (classes)")
    config = meta.get("config") or {}
    rule = rule_from_meta(meta)
    save_weights(state, out / WEIGHTS_FILE)
    spec = {
        "format": "masklab-model",
        "version": PACKAGE_VERSION,
        "task": meta.get("task", DEFAULT_TASK),
        "model": meta["model"],
        "classes": table.to_dict(),
        # Mask R-CNN keeps mean/std in torchvision's transform (ImageNet's), not as buffers.
        "normalization": {
            "mean": [round(float(v) / 255.0, 6) for v in state["mean"].flatten()],
            "std": [round(float(v) / 255.0, 6) for v in state["std"].flatten()],
            "input": "RGB uint8 0..255; normalisation happens inside the model",
        } if "mean" in state else {"input": "RGB uint8 0..255; normalisation happens inside the model "
                                            "(torchvision's transform)"},
        "input_rule": rule.to_dict(),
        "dataset": meta.get("dataset", {}),
        "source_run_id": meta.get("mlflow_run_id"),
        "monitor": config.get("monitor"),
    }
    if not is_masklab_model(meta["model"]):
        from masklab.evaluation.checkpoint import PROJECT_CODE
        from masklab.models.user_code import copy_code_module, find_code_module

        module = find_code_module(meta["model"]["_target_"], Path(code_root or project_root()), PROJECT_CODE)
        copied = copy_code_module(module, out / CODE_DIR)
        spec["code"] = {"module": module.name, "path": copied.relative_to(out).as_posix()}
    (out / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec


def read_checkpoint_weights(ckpt_path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(masklab metadata, model weights) of a checkpoint. The weights are numpy arrays read without
    importing torch when ``tracking.checkpoint_reader`` handles the file, else torch tensors."""
    from masklab.tracking.checkpoint_reader import UnsupportedCheckpoint, model_weights, read_checkpoint

    try:
        ckpt = read_checkpoint(ckpt_path)
        if isinstance(ckpt, dict) and CHECKPOINT_META_KEY in ckpt:
            return ckpt[CHECKPOINT_META_KEY], model_weights(ckpt)
    except (UnsupportedCheckpoint, OSError):
        pass
    # torch reads what the reader does not (and says why a file is no masklab checkpoint)
    from masklab.evaluation.checkpoint import model_state_dict, read_checkpoint_meta

    ckpt = read_checkpoint_meta(ckpt_path)
    return ckpt[CHECKPOINT_META_KEY], {k: v.contiguous() for k, v in model_state_dict(ckpt).items()}


def save_weights(state: dict[str, Any], path: Path) -> None:
    """Write numpy arrays or torch tensors (all of one kind) as a safetensors file."""
    if all(isinstance(v, np.ndarray) for v in state.values()):
        from safetensors.numpy import save_file as save_arrays

        save_arrays(state, str(path))
    else:
        from safetensors.torch import save_file as save_tensors

        save_tensors(state, str(path))
