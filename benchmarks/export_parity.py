"""Export parity and speed per architecture: each smp architecture masklab offers, random weights (nothing can be
downloaded), exported as ONNX and TorchScript, compared with the torch model through the same input rule (pad to 32,
tiles of 512 px with 64 px overlap) on images of mixed sizes, then onnxruntime's and torch.jit's throughput against
torch's on CPU, as ratios in one run.

    python benchmarks/export_parity.py [--archs Unet FPN ...] [--images kvasir_seg dsb2018] [--count 50]
                                       [--speed-size 512] [--out FILE.json]

Images: ``--images`` picks real ones from ../shared/datasets (Kvasir-SEG's JPEGs and DSB 2018's PNGs, mixed sizes),
else random pixels. Run it on an idle machine: the speed ratios are measured one engine after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scratch import REPO

ARCHS = ["Unet", "FPN", "DeepLabV3Plus", "Segformer", "UnetPlusPlus", "Linknet", "PAN", "UPerNet"]


def real_images(names: list[str], count: int) -> list[np.ndarray]:
    from masklab.data.images import read_image

    shared = Path(os.environ.get("MASKLAB_SHARED", REPO.parent / "shared")) / "datasets"
    files: list[Path] = []
    if "kvasir_seg" in names:
        files += sorted((shared / "kvasir_seg" / "images").glob("*.jpg"))[: count // len(names)]
    if "dsb2018" in names:
        files += sorted((shared / "dsb2018_nuclei_256").glob("stage1_train/*/images/*.png"))[: count // len(names)]
    return [read_image(f) for f in files]


def main() -> None:
    from masklab.inference.engine import Predictor
    from masklab.inference.exported import ExportedNetwork, export_network, parity
    from masklab.inference.rule import InputRule
    from masklab.models import build_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=ARCHS)
    p.add_argument("--images", nargs="*", default=["kvasir_seg", "dsb2018"])
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--speed-size", type=int, default=512)
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "bench-export" / "export_parity.json")
    a = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = real_images(a.images, a.count) if a.images else [
        rng.integers(0, 255, (int(h), int(w), 3), dtype=np.uint8) for h, w in rng.integers(64, 700, (a.count, 2))]
    rule = InputRule("pad", multiple=32, tile=512, overlap=64)
    speed_images = [rng.integers(0, 255, (a.speed_size, a.speed_size, 3), dtype=np.uint8) for _ in range(8)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs:
            model = build_model(2, arch=arch, encoder="resnet18").eval()
            torch_pred = Predictor(model, rule, "cpu", 1)
            started = time.perf_counter()
            torch_pred.logits(speed_images)
            torch_s = time.perf_counter() - started
            for fmt in ("onnx", "torchscript"):
                row = {"arch": arch, "format": fmt}
                try:
                    started = time.perf_counter()
                    path = export_network(model, Path(tmp) / f"{arch}.{fmt}", fmt)
                    row["export_s"] = time.perf_counter() - started
                    candidate = Predictor(ExportedNetwork(path), rule, "cpu", 1)
                    report = parity(torch_pred, candidate, images, fmt)
                    started = time.perf_counter()
                    candidate.logits(speed_images)
                    row.update(report.to_dict(), speed_vs_torch=torch_s / (time.perf_counter() - started))
                    print(f"{arch:14s} {fmt:11s} {report.line()}; {row['speed_vs_torch']:.2f}x torch's images/s at "
                          f"{a.speed_size} px", flush=True)
                except Exception as exc:  # noqa: BLE001 - a format that cannot express an operator is a row
                    row["error"] = str(exc).splitlines()[0]
                    print(f"{arch:14s} {fmt:11s} failed (export or the torch model itself): {row['error']}", flush=True)
                rows.append(row)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"images": len(images), "rows": rows}, indent=1, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
