"""The optional lower-precision students a recipe asks for: ``student.int8.onnx`` and ``student.fp16.onnx``.

Why one entry point: ``compress`` and ``edgekd export`` must derive them the same way (from the FP32 file that
passed parity, against the same PyTorch student), so neither spells the INT8/FP16 settings out itself. The
file names are the run directory's (:mod:`edgekd.rundir`).
"""

from __future__ import annotations

import math
from pathlib import Path

from edgekd.export.fp16 import export_fp16
from edgekd.export.parity import ParityLimits, ParityReference
from edgekd.export.quantize import Calibration, export_int8, saturating_cpu
from edgekd.recipe.schema import ExportConfig
from edgekd.results import Artifact
from edgekd.rundir import RunDir


def export_variants(
    fp32_path: Path, student: ParityReference, cfg: ExportConfig, run: RunDir, seed: int = 0
) -> list[Artifact]:
    """Derive every enabled precision from ``fp32_path``; each is parity-gated and ORT-evaluated on its own.

    Args:
        fp32_path: The exported, parity-checked FP32 student (``student.onnx``).
        student: The FP32 PyTorch student every variant is compared with, its data and task.
        cfg: The recipe's ``export`` section (``int8``, ``fp16``, ``parity_samples``).
        run: The run directory the variants are written into (``student.int8.onnx``, ``student.fp16.onnx``).
        seed: Picks the INT8 calibration images.

    Raises:
        GateError: a variant failed parity against ``student`` (nothing is written under its name).
        EdgekdError: the quantizer or converter failed.
    """
    artifacts = []
    if cfg.int8:
        reduce_range = saturating_cpu() if cfg.int8.reduce_range is None else cfg.int8.reduce_range
        calibration = Calibration(cfg.int8.calibration_samples, cfg.int8.preprocess, seed, reduce_range)
        limits = ParityLimits(cfg.parity_samples, math.inf, cfg.int8.min_agreement)
        artifacts.append(export_int8(fp32_path, student, run.int8_onnx, calibration, limits))
    if cfg.fp16:
        limits = ParityLimits(cfg.parity_samples, cfg.fp16.atol, cfg.fp16.min_agreement)
        artifacts.append(export_fp16(fp32_path, student, run.fp16_onnx, limits))
    return artifacts
