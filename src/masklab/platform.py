"""The platform a number was computed on: CPU model, library versions, threads, determinism flags.

Bitwise-equal results hold on one platform with fixed threads, not across CPU models; every run
and pipeline metric carries this fingerprint so a difference can be named instead of guessed.
"""

from __future__ import annotations

import functools
import platform as _platform
from importlib import metadata
from pathlib import Path


def masklab_version() -> str:
    """The installed masklab's version string ("unknown" when not installed as a package)."""
    try:
        return metadata.version("masklab")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return _platform.processor() or _platform.machine()


@functools.cache
def cpu_id() -> str:
    """Vendor, family, model and stepping from /proc/cpuinfo ("unknown" elsewhere).

    Virtual machines often name every CPU of a vendor alike ("AMD EPYC"); these numbers still tell
    two generations apart, and with them their kernels' float results.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return "unknown"
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    parts = [fields.get("vendor_id", "")] + [f"{label} {fields[key]}" for key, label in
                                             (("cpu family", "family"), ("model", "model"), ("stepping", "stepping"))
                                             if key in fields]
    return " ".join(p for p in parts if p) or "unknown"


def platform_fingerprint() -> dict[str, str]:
    """Plain strings: cpu (model name, vendor/family/model/stepping, the SIMD level torch's kernels
    use), machine, python, torch, cuda, cudnn, gpu, threads, deterministic flags, masklab version.
    Importing torch is the caller's cost (every caller already has it)."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        # AVX2, AVX512, ...: which vectorised kernels run, so which summation order.
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "machine": _platform.machine(),
        "python": _platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda or "none"),
        "cudnn": str(cudnn or "none"),
        "gpu": gpu,
        "threads": str(torch.get_num_threads()),
        "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
        "cudnn_deterministic": str(torch.backends.cudnn.deterministic),
        "masklab": masklab_version(),
    }


def differences(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{key: (ours, theirs)} for every fingerprint entry that differs (missing entries count as "?")."""
    keys = sorted(set(ours) | set(theirs))
    return {k: (ours.get(k, "?"), theirs.get(k, "?")) for k in keys if ours.get(k, "?") != theirs.get(k, "?")}
