"""The optional lower-precision students a recipe asks for: ``student.int8.onnx`` and ``student.fp16.onnx``.

Why one entry point: ``compress`` and ``edgekd export`` must derive them the same way (from the FP32 file that
passed parity, against the same PyTorch student), so neither spells the INT8/FP16 settings out itself.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgekd.data.base import DataBundle
from edgekd.export.fp16 import export_fp16
from edgekd.export.quantize import export_int8
from edgekd.recipe.schema import ExportConfig
from edgekd.results import Artifact
from edgekd.tasks.base import Task

INT8_NAME = "student.int8.onnx"
FP16_NAME = "student.fp16.onnx"


def variant_paths(cfg: ExportConfig, out_dir: Path) -> list[Path]:
    """The files :func:`export_variants` writes for ``cfg``, in order (empty when none is enabled)."""
    names = ([INT8_NAME] if cfg.int8 else []) + ([FP16_NAME] if cfg.fp16 else [])
    return [Path(out_dir) / name for name in names]


def export_variants(
    fp32_path: Path,
    student: nn.Module,
    data: DataBundle,
    task: Task,
    cfg: ExportConfig,
    out_dir: Path,
    seed: int = 0,
) -> list[Artifact]:
    """Derive every enabled precision from ``fp32_path``; each is parity-gated and ORT-evaluated on its own.

    Raises:
        GateError: a variant failed parity against ``student`` (nothing is written under its name).
        EdgekdError: the quantizer or converter failed.
    """
    out_dir = Path(out_dir)
    artifacts = []
    if cfg.int8:
        artifacts.append(
            export_int8(
                fp32_path,
                student,
                data,
                task,
                out_dir / INT8_NAME,
                calibration_samples=cfg.int8.calibration_samples,
                preprocess=cfg.int8.preprocess,
                seed=seed,
                parity_samples=cfg.parity_samples,
                min_agreement=cfg.int8.min_agreement,
            )
        )
    if cfg.fp16:
        artifacts.append(
            export_fp16(
                fp32_path,
                student,
                data,
                task,
                out_dir / FP16_NAME,
                parity_samples=cfg.parity_samples,
                atol=cfg.fp16.atol,
                min_agreement=cfg.fp16.min_agreement,
            )
        )
    return artifacts
