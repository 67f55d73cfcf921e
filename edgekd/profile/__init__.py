"""Profiling: latency, load time and memory of ONNX artifacts, measured by ONNX Runtime on a target device.

The measurement itself is :mod:`edgekd.profile.probe`, a standalone script (Python >= 3.8, numpy,
onnxruntime; no edgekd import) so it runs unchanged on a Raspberry Pi or Jetson. A target is a transport for
that script: add one by subclassing :class:`Target` (implement ``run_probe``) in a module registered with
``@TARGETS.register("name")`` and imported below. A target *kind* (a family of devices reached by a
``<scheme>://`` URL or a ``targets.yaml`` entry with ``kind: <name>``, like ``ssh``) subclasses
:class:`DeviceTarget` and declares ``scheme``, ``Spec`` and ``parse_url`` (see :mod:`edgekd.profile.target`).

>>> from edgekd.profile import TARGETS
>>> "local" in TARGETS
True
"""

from __future__ import annotations

from edgekd.profile.target import (
    PROBE_PATH,
    DeviceTarget,
    ProbeSettings,
    Target,
    TargetSpec,
    parse_probe_output,
)
from edgekd.registry import Registry

TARGETS: Registry[type[Target]] = Registry("target")

from edgekd.profile import local, ssh  # noqa: E402,F401  (registers)
from edgekd.profile.measure import get_target, profile_files, profile_model, to_profile  # noqa: E402
from edgekd.profile.stage import STAGE, run  # noqa: E402

__all__ = [
    "PROBE_PATH",
    "STAGE",
    "TARGETS",
    "DeviceTarget",
    "ProbeSettings",
    "Target",
    "TargetSpec",
    "get_target",
    "parse_probe_output",
    "profile_files",
    "profile_model",
    "run",
    "to_profile",
]
