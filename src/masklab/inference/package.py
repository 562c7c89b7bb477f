"""A loaded masklab model package (model, class table, input rule, spec) and how a package folder is read.

The folder (written by ``masklab.tracking.packaging.write_package``)::

    package/
      masklab_model.yaml   model spec, classes, normalisation, input rule, dataset, source run, task
      weights.safetensors  the network's state_dict (normalisation buffers included)
      code/                only for a model of the user's own code: its top-level module

An exported package (``masklab export``, masklab.inference.exported) holds ``model.onnx`` or ``model.ts`` and
``parity.json`` instead of the weights; its spec's ``export`` entry names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from masklab.data.classes import ClassTable
from masklab.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from masklab.inference.exported import ParityReport
    from masklab.inference.rule import InputRule

SPEC_FILE = "masklab_model.yaml"
WEIGHTS_FILE = "weights.safetensors"
CODE_DIR = "code"


@dataclass
class Package:
    """A model ready for inference: the network (eval mode), its classes, its input rule and the stored spec."""

    model: nn.Module
    class_table: ClassTable
    input_rule: InputRule
    spec: dict[str, Any]


def load_package_dir(path: str | Path) -> Package:
    """Rebuild the model of a package folder (safetensors weights, YAML spec: nothing is unpickled).

    A model of the user's own code is imported from the package's ``code/`` folder only.
    """
    from safetensors.torch import load_file

    from masklab.inference.rule import InputRule
    from masklab.models.stored import rebuild_model

    path = Path(path)
    spec_path = path / SPEC_FILE
    if not spec_path.is_file():
        raise UserError(f"{path}: not a masklab model package (no {SPEC_FILE})")
    spec = yaml.safe_load(spec_path.read_text())
    table = ClassTable.from_dict(spec["classes"], str(spec_path))
    if spec.get("export"):  # an exported file (onnxruntime or torch.jit), not weights to rebuild a network with
        from masklab.inference.exported import ExportedNetwork

        return Package(ExportedNetwork(path / spec["export"]["file"]), table,
                       InputRule.from_dict(spec["input_rule"]), spec)
    model = rebuild_model(spec["model"], table.num_classes, path / CODE_DIR, where=f"package {path}")
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    model.eval()
    return Package(model, table, InputRule.from_dict(spec["input_rule"]), spec)


def write_exported_package(package: Package, folder: Path, fmt: str, network_file: Path, report: ParityReport
                           ) -> Path:
    """A package folder that onnxruntime (or torch.jit) alone can serve: the exported file, ``masklab_model.yaml``
    (the package's spec with its classes and input rule, and an ``export`` entry naming the file and the parity
    figures) and ``parity.json``. ``network_file`` is moved into ``folder``."""
    import shutil

    import torch

    from masklab.files import atomic_write
    from masklab.inference.exported import FORMATS, INPUT_NAME, OPSET, OUTPUT_NAME

    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(str(network_file), folder / FORMATS[fmt])
    spec = {**package.spec, "classes": package.class_table.to_dict(), "input_rule": package.input_rule.to_dict(),
            "export": {"format": fmt, "file": FORMATS[fmt], "input": f"{INPUT_NAME}: (N, H, W, 3) uint8 RGB",
                       "output": f"{OUTPUT_NAME}: (N, C, H, W) float32", "opset": OPSET if fmt == "onnx" else None,
                       "torch": torch.__version__.split("+")[0], "parity": report.to_dict()}}
    report.write(folder / "parity.json")
    atomic_write(folder / SPEC_FILE, lambda tmp: tmp.write_text(yaml.safe_dump(spec, sort_keys=False)))
    return folder
