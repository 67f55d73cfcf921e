"""FP16 conversion of the exported FP32 student, for GPU targets (Jetson, desktop GPUs, TensorRT).

The conversion is ``onnxconverter_common.float16.convert_float_to_float16`` with ``keep_io_types=True``: all
weights and activations become FP16, but the file keeps an FP32 ``input`` and ``output`` (a Cast at each
end), so the same preprocessing code and the same ``metadata_props`` feed every artifact. Weights outside
FP16's range are clipped by the converter (to ±65504, or to ±1e-7 for tiny magnitudes); tensors clipped at
±65504 are recorded as a note.

Why it is shipped although CPUs gain nothing: ORT's CPU provider runs FP16 graphs (mostly by casting back to
FP32 internally), so the file can be checked and evaluated here, and it is half the size; the speed-up
appears on the GPU provider (CUDA/TensorRT), where FP16 tensor cores are used. Profile it on the device.

Parity defaults (vs the FP32 PyTorch student): ``max_abs_diff <= FP16_ATOL`` (0.1) and agreement >=
``FP16_MIN_AGREEMENT`` (0.99). FP16 keeps ~3 significant digits, so logits of a conv net drift by ~1e-2
(7.6e-3 measured on the Fashion-MNIST student); 0.1 leaves headroom for deeper nets, yet catches what breaks
FP16 for real: overflow to inf (never passes) and saturation that changes predictions.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.export._ship import DerivedModel, restamp_metadata, ship
from edgekd.export.parity import ParityLimits, ParityReference
from edgekd.onnxfile import check_onnx_file
from edgekd.results import Artifact

log = logging.getLogger("edgekd.export")

FP16_ATOL = 0.1
FP16_MIN_AGREEMENT = 0.99
FP16_LIMITS = ParityLimits(samples=256, atol=FP16_ATOL, min_agreement=FP16_MIN_AGREEMENT)


def export_fp16(
    fp32_path: Path, reference: ParityReference, out_path: Path, limits: ParityLimits = FP16_LIMITS
) -> Artifact:
    """Convert ``fp32_path`` to FP16 (FP32 I/O), gate it on parity, evaluate it in ORT.

    Args:
        fp32_path: The exported, parity-checked FP32 ONNX file (``student.onnx``).
        reference: The FP32 PyTorch student (parity reference), with the eval inputs for parity and metrics
            and the task (output interpretation, agreement, metrics).
        out_path: Final file, e.g. ``RUN/student.fp16.onnx``; written atomically, only if parity passes.
        limits: Eval inputs compared with the PyTorch student, the largest accepted ``max |PyTorch - ORT|``
            and the smallest accepted top-1 (or pixel) agreement (default :data:`FP16_LIMITS`).

    Returns:
        The ``fp16`` :class:`~edgekd.results.Artifact` with its own ORT metrics and parity.

    Raises:
        InputError: ``fp32_path`` is missing or not valid ONNX.
        EdgekdError: The converter fails on the model.
        GateError: Parity failed; nothing is written under ``out_path``.
    """
    from onnxconverter_common import float16

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    source = check_onnx_file(fp32_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            proto = float16.convert_float_to_float16(source, keep_io_types=True)
        except Exception as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise EdgekdError(f"{fp32_path.name}: FP16 conversion failed ({first[:300]})") from None
    # The converter warns once per tensor and bound; only the ±65504 bound changes results (the tiny-value
    # bound rounds |w| < 1e-7 up to 1e-7, which is harmless).
    clipped = sum(1 for w in caught if re.search(r"truncated to -?65504", str(w.message)))
    for w in caught[:20]:
        log.debug("float16: %s", w.message)
    restamp_metadata(proto, source, {"precision": "fp16", "io_types": "float32"})
    notes = ("FP16 weights/activations, FP32 input and output",)
    if clipped:
        notes += (f"{clipped} weight tensor(s) had values beyond FP16's ±65504, clipped",)
    artifact = ship(DerivedModel(proto, "fp16", notes), out_path, reference, limits)
    log.info(
        "%s: FP16, parity max_abs_diff %.3g agreement %.4f, %s, %d bytes",
        out_path.name,
        artifact.parity.max_abs_diff if artifact.parity else float("nan"),
        artifact.parity.agreement if artifact.parity else float("nan"),
        ", ".join(f"{k} {v:.4f}" for k, v in artifact.metrics.items()),
        artifact.size_bytes,
    )
    return artifact
