"""The export stage: every file a run ships, each parity-gated against PyTorch and evaluated in ONNX Runtime.

The stage entry is :func:`run` (:mod:`.stage`, declared as :data:`STAGE`; :func:`export_student` is its
student half, for ``edgekd export student.pt``). Each FP32 file (``teacher.onnx``, ``student.onnx``) is one
:func:`export_onnx` call (:mod:`.fp32`): export, simplify, metadata, checker, the parity gate on real eval
inputs, then ORT metrics on the whole eval set; the file only appears under its final name once parity has
passed. The INT8/FP16 students are derived from ``student.onnx`` by :func:`export_variants` under the same
contract.
"""

from __future__ import annotations

from edgekd.export.fp32 import export_onnx
from edgekd.export.ort import OrtPredictor, create_session, evaluate_onnx, evaluate_session, session_options
from edgekd.export.parity import ParityLimits, ParityReference
from edgekd.export.stage import STAGE, export_student, run
from edgekd.export.variants import export_variants
from edgekd.onnxfile import check_onnx_file

__all__ = [
    "STAGE",
    "OrtPredictor",
    "ParityLimits",
    "ParityReference",
    "check_onnx_file",
    "create_session",
    "evaluate_onnx",
    "evaluate_session",
    "export_onnx",
    "export_student",
    "export_variants",
    "run",
    "session_options",
]
