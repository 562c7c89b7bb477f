"""``export``: a model as an ONNX or TorchScript package, with the parity proof that it predicts what the torch model
predicts, through the same input rule and tiles."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.errors import UserError


@dataclass
class Export:
    """The package folder written and its parity report."""

    folder: Path
    report: Any  # masklab.inference.exported.ParityReport
    attached: str | None = None  # for a registered version: the runs:/ URI of the export logged to it


class ParityFailed(UserError):
    """An exported file whose predictions miss the parity tolerance: nothing is written; the message has the
    numbers."""


def parity_inputs(parity_images: str | Path | None, package: Any, data_dir: str | Path, count: int) -> list[Path]:
    """Up to ``count`` image files for the parity check, spread over the folder's sorted files: ``parity_images``,
    else the val (then train) images of the dataset the model was trained on, when ``data_dir`` has it."""
    from masklab.workflows.prediction import list_inputs

    if parity_images:
        files = list_inputs(Path(parity_images))
    else:
        name = (package.spec.get("dataset") or {}).get("name")
        root = Path(data_dir) / str(name) if name else None
        if root is None or not root.is_dir():
            raise UserError(f"parity_images: the model's dataset ({name or 'not recorded'}) is not under {data_dir}; "
                            "name a folder of images to check the export on (parity_images=<folder>)")
        from masklab.data.manifest import load_dataset

        dataset = load_dataset(root)
        chosen = dataset.split("val") or dataset.split("train") or dataset.samples
        files = [dataset.root / s.image for s in chosen]
    if count < 1:
        raise UserError(f"parity_count={count}: expected a positive number of images")
    step = max(1, len(files) // count)
    return files[::step][:count]


def export(model_ref: str, fmt: str, output: str | Path, tracking_uri: str, parity_images: str | Path | None = None,
           data_dir: str | Path = "data", parity_count: int = 50, logit_tolerance: float = 1e-3,
           pixel_agreement: float = 0.9999, overwrite: bool = False, device: str = "cpu") -> Export:
    """Export the model ``model_ref`` names (``models:/...``, run id, checkpoint, package folder) as ``fmt`` ("onnx"
    or "torchscript") into the package folder ``output``, after checking on ``parity_count`` images that the
    exported file's logits are within ``logit_tolerance`` of the torch model's and its classes equal on at least
    ``pixel_agreement`` of the pixels (ParityFailed otherwise, with the numbers, and nothing written). A registered
    version (``models:/...``) gets the package logged to its run and tagged (``masklab predict model=models:/...
    engine=<fmt>`` serves it)."""
    from masklab.data.images import read_image
    from masklab.inference.engine import Predictor
    from masklab.inference.exported import FORMATS, ExportedNetwork, export_network, parity
    from masklab.inference.package import write_exported_package
    from masklab.tracking.model_ref import load_model_ref

    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output={out} is not empty; pass overwrite=true to replace it")
    package = load_model_ref(str(model_ref), tracking_uri)
    files = parity_inputs(parity_images, package, data_dir, parity_count)
    with tempfile.TemporaryDirectory(prefix="masklab-export-", dir=out.parent if out.parent.is_dir() else None) as tmp:
        network = export_network(package.model, Path(tmp) / FORMATS[fmt], fmt)
        reference = Predictor(package.model, package.input_rule, device, 1)
        candidate = Predictor(ExportedNetwork(network), package.input_rule, device, 1)
        report = parity(reference, candidate, (read_image(f) for f in files), fmt, logit_tolerance, pixel_agreement)
        if not report.passed:
            raise ParityFailed(f"export {fmt}: {report.line()}: outside the tolerance, nothing written")
        staged = write_exported_package(package, Path(tmp) / "package", fmt, network, report)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), out)
    attached = None
    if str(model_ref).startswith("models:/"):  # deployable as models:/... engine=<fmt> without the training stack
        from masklab.tracking.model_ref import registry_version
        from masklab.tracking.registry import Registry

        name, version = registry_version(str(model_ref), tracking_uri)
        attached = Registry(tracking_uri).attach_export(name, version, out, fmt, report.line())
    return Export(out, report, attached)
