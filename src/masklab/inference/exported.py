"""Exported networks: ONNX and TorchScript files of a model, run through the same Predictor as the torch model.

The exported graph is the deployable contract: ``images`` (N, H, W, 3) uint8 in, ``logits`` (N, C, H, W) float32
out, with dynamic batch, height and width, and the model's normalisation inside. What a deployment also needs
(the input rule: resize, pad or tiles; the class table) is stored beside it in the package spec
(masklab.inference.package), so onnxruntime alone can reproduce masklab's masks.

:class:`ExportedNetwork` turns such a file back into a module the Predictor drives exactly like the torch model,
which is how parity is measured (:func:`parity`) and how ``masklab predict`` runs an exported file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from masklab.errors import UserError

FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ChannelsLastUint8(nn.Module):
    """The network as deployed: (N, H, W, 3) uint8 images in (what an image decoder gives), logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.permute(0, 3, 1, 2))


def export_network(model: nn.Module, path: Path, fmt: str, example_hw: tuple[int, int] = (256, 256)) -> Path:
    """Write ``model`` (raw (N, 3, H, W) pixels in, as every masklab model) as ``fmt`` ("onnx" or "torchscript") to
    ``path``, wrapped by :class:`ChannelsLastUint8`, dynamic in batch, height and width (traced on a 256 px
    example: PAN's pyramid pooling needs its deepest features at least 2 px wide). An operator the format cannot
    express is a UserError naming it."""
    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    if getattr(model, "output_kind", "logits") != "logits":
        raise UserError(f"format={fmt}: {type(model).__name__} returns detections, not dense logits; export supports "
                        "semantic models and the bottom-up instance network (Mask R-CNN: see docs/export.md)")
    wrapped = ChannelsLastUint8(model).eval()
    example = torch.zeros(1, *example_hw, 3, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing evaluates the model's Python shape checks once; the graph itself follows any input size.
        warnings.simplefilter("ignore")
        try:
            if fmt == "onnx":
                torch.onnx.export(wrapped, (example,), str(path), dynamo=False, opset_version=OPSET,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch", 1: "height", 2: "width"},
                                                OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}})
            else:
                torch.jit.save(torch.jit.trace(wrapped, (example,), check_trace=False), str(path))
        except Exception as exc:  # the exporters name the operator in their message
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise UserError(f"format={fmt}: torch cannot export {type(model).__name__}: {first}") from None
    return path


class ExportedNetwork(nn.Module):
    """An exported file as a module the Predictor drives: (N, 3, H, W) pixels (uint8, or float holding whole
    0..255 values as padding makes them) in, (N, C, H, W) float32 logits out. ONNX runs on onnxruntime (CPU, or
    CUDA when its provider is there and the module is moved to a GPU), TorchScript on torch."""

    output_kind = "logits"

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.fmt = "onnx" if self.path.suffix == ".onnx" else "torchscript"
        self.device = torch.device("cpu")
        self._session: Any = None
        self._script: Any = None
        if not self.path.is_file():
            raise UserError(f"{self.path}: no exported model file")
        # Read now: a package downloaded from the registry into a temporary folder is gone when the model runs.
        self.content = self.path.read_bytes()

    def to(self, *args: Any, **kwargs: Any) -> ExportedNetwork:
        device = next((torch.device(a) for a in (*args, kwargs.get("device")) if isinstance(a, str | torch.device)),
                      None)
        if device is not None:
            self.device = device
            self._session = self._script = None
        return self

    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            self._session = ort.InferenceSession(self.content, providers=providers)
        return self._session

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 2, 3, 1)
        if pixels.dtype != torch.uint8:
            pixels = pixels.round().clamp(0, 255).to(torch.uint8)
        if self.fmt == "torchscript":
            if self._script is None:
                import io

                self._script = torch.jit.load(io.BytesIO(self.content), map_location=self.device).eval()
            with torch.no_grad():
                return self._script(pixels.contiguous().to(self.device)).float()
        out = self.session().run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels.cpu().numpy())})[0]
        return torch.from_numpy(out).to(self.device)


@dataclass
class ParityReport:
    """How an exported file's predictions compare with the torch model's on the same images, through the same input
    rule: the largest absolute logit difference, the share of pixels whose predicted class differs, and whether both
    are within tolerance."""

    format: str
    images: int
    sizes: list[list[int]]
    max_abs_logit_diff: float
    pixels: int
    pixels_differing: int
    logit_tolerance: float
    pixel_agreement_goal: float
    # Seconds each engine spent predicting these images (one after the other, image by image): a speed ratio on the
    # very images and sizes of the check.
    torch_seconds: float = 0.0
    exported_seconds: float = 0.0

    @property
    def pixel_agreement(self) -> float:
        return 1.0 - self.pixels_differing / max(self.pixels, 1)

    @property
    def speed(self) -> float:
        """The exported file's images per second over torch's, on the check's images."""
        return self.torch_seconds / self.exported_seconds if self.exported_seconds > 0 else float("nan")

    @property
    def passed(self) -> bool:
        return self.max_abs_logit_diff <= self.logit_tolerance and self.pixel_agreement >= self.pixel_agreement_goal

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pixel_agreement": self.pixel_agreement, "speed_vs_torch": self.speed,
                "passed": self.passed}

    def line(self) -> str:
        return (f"{self.format} parity on {self.images} images ({len({tuple(s) for s in self.sizes})} sizes): largest "
                f"logit difference {self.max_abs_logit_diff:.2e} (tolerance {self.logit_tolerance:g}), classes equal "
                f"on {100 * self.pixel_agreement:.4f} % of {self.pixels} pixels (goal "
                f"{100 * self.pixel_agreement_goal:g} %); {self.speed:.2f}x torch's speed on them")

    def write(self, path: Path) -> Path:
        from masklab.files import atomic_write

        return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(self.to_dict(), indent=1)))


def parity(reference: Any, candidate: Any, images: Iterable[np.ndarray], fmt: str, logit_tolerance: float = 1e-3,
           pixel_agreement_goal: float = 0.9999) -> ParityReport:
    """Compare two Predictors (the torch model's and the exported file's, same input rule) image by image at each
    image's own size: logits and argmax classes. One image's logits in memory at a time."""
    import time

    from masklab.metrics.labels import argmax_classes

    worst, pixels, differing, sizes, spent = 0.0, 0, 0, [], [0.0, 0.0]
    for image in images:
        started = time.perf_counter()
        a = reference.logits([image])[0].float().cpu()
        middle = time.perf_counter()
        b = candidate.logits([image])[0].float().cpu()
        spent[0] += middle - started
        spent[1] += time.perf_counter() - middle
        worst = max(worst, float((a - b).abs().max()))
        differing += int((argmax_classes(a, dim=0) != argmax_classes(b, dim=0)).sum())
        pixels += int(a.shape[-2] * a.shape[-1])
        sizes.append(list(image.shape[:2]))
    if not sizes:
        raise UserError("parity: no images to compare the exported model with (parity_images=<folder>)")
    return ParityReport(fmt, len(sizes), sizes, worst, pixels, differing, logit_tolerance, pixel_agreement_goal,
                        spent[0], spent[1])

