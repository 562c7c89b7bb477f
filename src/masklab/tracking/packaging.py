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
from typing import Any

import numpy as np
import yaml

from masklab.config import DEFAULT_TASK
from masklab.data.classes import ClassTable

# Package and load_package_dir live in inference/ (loading a model is inference's job); named here too because
# the pyfunc file stored with every version registered before v3 imports load_package_dir from this module.
from masklab.inference.package import CODE_DIR, SPEC_FILE, WEIGHTS_FILE, Package, load_package_dir  # noqa: F401

PACKAGE_VERSION = 1


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
        # The test-time augmentation the model was evaluated (and gated) with: what `masklab predict` uses unless
        # told otherwise (tta=none deploys it without).
        "tta": str((config.get("evaluation") or {}).get("tta") or "none"),
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
    """(masklab metadata, the model's weights) of a checkpoint. A safetensors checkpoint (what masklab tracks as a
    run's best model) is read without importing torch, as numpy arrays; a Lightning ``.ckpt`` (runs tracked before,
    a run folder's checkpoints), or weights of a dtype numpy lacks (bfloat16), with torch, as contiguous tensors."""
    from masklab.evaluation.checkpoint import is_safetensors, read_checkpoint, read_safetensors_checkpoint

    if Path(ckpt_path).is_file() and is_safetensors(ckpt_path):
        try:
            return read_safetensors_checkpoint(ckpt_path, "numpy")
        except TypeError:  # numpy has no such dtype
            pass
    meta, weights = read_checkpoint(ckpt_path)  # (and a one-line error for a file that is no masklab checkpoint)
    return meta, {k: v.contiguous() for k, v in weights.items()}


def save_weights(state: dict[str, Any], path: Path) -> None:
    """Write numpy arrays or torch tensors (all of one kind) as a safetensors file."""
    if all(isinstance(v, np.ndarray) for v in state.values()):
        from safetensors.numpy import save_file as save_arrays

        save_arrays(state, str(path))
    else:
        from safetensors.torch import save_file as save_tensors

        from masklab.evaluation.checkpoint import safetensors_ready

        save_tensors(safetensors_ready(state), str(path))
