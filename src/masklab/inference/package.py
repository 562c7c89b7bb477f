"""A loaded masklab model package (model, class table, input rule, spec) and how a package folder is read.

The folder (written by ``masklab.tracking.packaging.write_package``)::

    package/
      masklab_model.yaml   model spec, classes, normalisation, input rule, dataset, source run, task
      weights.safetensors  the network's state_dict (normalisation buffers included)
      code/                only for a model of the user's own code: its top-level module
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
    model = rebuild_model(spec["model"], table.num_classes, path / CODE_DIR, where=f"package {path}")
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    model.eval()
    return Package(model, table, InputRule.from_dict(spec["input_rule"]), spec)
