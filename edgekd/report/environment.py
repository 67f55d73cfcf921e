"""What the run executed on: library versions and the host CPU.

Why it is in the report: latency and even accuracy of an ONNX artifact depend on the ONNX Runtime build, the
torch version that exported it and the CPU that ran it. A number without its environment cannot be reproduced
or compared. Versions are read from installed package metadata, so collecting them never imports torch.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# report key -> distribution name on PyPI
_PACKAGES = {
    "torch": "torch",
    "torch_pruning": "torch-pruning",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxsim": "onnxsim",
    "torchvision": "torchvision",
    "numpy": "numpy",
}


def edgekd_version() -> str:
    """``edgekd.__version__``, else the installed distribution's version, else ``"0+unknown"``."""
    import edgekd

    version = getattr(edgekd, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return metadata.version("edgekd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def environment() -> dict[str, Any]:
    """The report's ``environment`` block: the contract's keys (docs/run-directory.md) first, then extras.

    Returns:
        ``{python, torch, torch_pruning, onnx, onnxruntime, platform, cpu, cores}`` (a package that is not
        installed is ``None``) plus ``onnxsim``, ``torchvision``, ``numpy``, ``edgekd``, ``machine``,
        ``usable_cores`` (the CPU affinity of this process, which containers often restrict) and
        ``onnxruntime_build`` (GPU/other ORT wheels have a different distribution name).
    """
    versions = {key: _version(dist) for key, dist in _PACKAGES.items()}
    ort_dist = _onnxruntime_distribution()
    if versions["onnxruntime"] is None and ort_dist is not None:
        versions["onnxruntime"] = _version(ort_dist)
    cores = os.cpu_count() or 1
    return {
        "python": platform.python_version(),
        "torch": versions["torch"],
        "torch_pruning": versions["torch_pruning"],
        "onnx": versions["onnx"],
        "onnxruntime": versions["onnxruntime"],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": cores,
        "usable_cores": _usable_cores(cores),
        "machine": platform.machine(),
        "onnxsim": versions["onnxsim"],
        "torchvision": versions["torchvision"],
        "numpy": versions["numpy"],
        "edgekd": edgekd_version(),
        "onnxruntime_build": ort_dist,
        "python_implementation": platform.python_implementation(),
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name ("AMD EPYC 7B13"), falling back to what :mod:`platform` knows."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            # x86 says "model name"; many ARM kernels only give "Hardware" or "Model"
            if key.strip() in ("model name", "Hardware", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _onnxruntime_distribution() -> str | None:
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        if _version(dist) is not None:
            return dist
    return None


def _usable_cores(default: int) -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not available on macOS / Windows
        return default
