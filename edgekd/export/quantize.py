"""Static INT8 quantization of the exported FP32 student with ONNX Runtime (QDQ, per-channel weights).

What runs, and why each choice:

* ``onnxruntime.quantization.shape_inference.quant_pre_process`` first (ORT's basic graph optimisations plus
  ONNX and symbolic shape inference). The quantizer only quantizes tensors whose shapes it knows, and
  without pre-processing it can leave float islands between quantized ops, each costing a
  Quantize/Dequantize pair at run time; ORT's docs recommend it, and a pruned ResNet-18 was measured at
  0.58x (slower) without it and 1.85x faster with it. ``preprocess=False`` exists for the benchmark that
  re-measures this on our own models (``benchmarks/int8.py``).
* ``quantize_static`` in **QDQ** format (ORT's recommended representation since 1.11: the CPU EP fuses
  DQ→op→Q into its integer kernels, and other runtimes such as TensorRT read the same file);
  **per-channel S8 weights** (pruned layers have very different per-filter ranges; one scale per tensor
  would crush the small filters) and **U8 activations** (ORT's guidance for x86 with or without VNNI; on
  ARM S8 activations are also fast, but U8S8 is the portable choice and is what this CPU was measured on).
* **7-bit weights on x86 CPUs without VNNI** (``reduce_range``, ``export.int8.reduce_range: null`` = auto): ORT's
  U8S8 kernels on AVX2/AVX-512 without VNNI saturate the 16-bit intermediate sums (ORT's quantization docs).
  Measured on an AVX2 EPYC with the CLI test's student: top-1 agreement with the FP32 student 0.953 with 8-bit
  weights, 0.992 with 7-bit, accuracy 0.789 vs 0.812 (FP32 0.813). On ARM and VNNI CPUs 8-bit weights stay.
* **MinMax calibration** on ``calibration_samples`` training images (no augmentation, a seeded shuffle, so
  the ranges cover all classes and a rerun gives the same file), fed through a progress bar.

Parity is gated on agreement only (``INT8_LIMITS``: ``atol=inf``, ``INT8_MIN_AGREEMENT`` = 0.97 top-1 vs the
FP32 PyTorch student): INT8 rounding moves logits by an amount that scales with each model's logit range, so an absolute
tolerance would be meaningless for one model and too strict for the next; what matters for deployment is
how many predictions change. 0.97 passes normal INT8 noise (0.99+ measured on the Fashion-MNIST students)
and fails broken calibration (wrong preprocessing or a degenerate calibration set gives far lower
agreement). The accuracy cost itself is measured on the whole eval set and can be gated with
``gates.max_metric_drop``.

>>> reference = ParityReference(student, data, task)  # doctest: +SKIP
>>> art = export_int8(Path("run/student.onnx"), reference, Path("run/student.int8.onnx"))  # doctest: +SKIP
>>> art.precision, art.parity.agreement  # doctest: +SKIP
('int8', 0.996)
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from edgekd.data.base import DataBundle
from edgekd.errors import EdgekdError
from edgekd.export._ship import DerivedModel, restamp_metadata, ship
from edgekd.export.parity import ParityLimits, ParityReference
from edgekd.onnxfile import check_onnx_file
from edgekd.results import Artifact

log = logging.getLogger("edgekd.export")

INT8_MIN_AGREEMENT = 0.97
CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 32
INT8_LIMITS = ParityLimits(samples=256, atol=math.inf, min_agreement=INT8_MIN_AGREEMENT)


@dataclass(frozen=True)
class Calibration:
    """How activation ranges are calibrated.

    Attributes:
        samples: Training images used (fewer if the split is smaller).
        preprocess: Run ``quant_pre_process`` first (see the module docstring; keep it on).
        seed: Picks the calibration images, so a rerun gives the same file.
        reduce_range: Quantize weights to 7 bits (see the module docstring; :func:`saturating_cpu` decides
            the default).
    """

    samples: int = CALIBRATION_SAMPLES
    preprocess: bool = True
    seed: int = 0
    reduce_range: bool = False


def saturating_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this machine is an x86 CPU without VNNI, where ORT's U8S8 INT8 kernels can saturate.

    Linux says through ``/proc/cpuinfo``'s flags; elsewhere an x86 machine is assumed to lack VNNI (7-bit
    weights cost little accuracy; saturation costs a lot).
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = next(
            (
                ln.split(":", 1)[1].split()
                for ln in cpuinfo.read_text().splitlines()
                if ln.startswith("flags")
            ),
            [],
        )
    except OSError:
        return True
    return not {"avx512_vnni", "avx_vnni"} & set(flags)


def export_int8(
    fp32_path: Path,
    reference: ParityReference,
    out_path: Path,
    calibration: Calibration = Calibration(),
    limits: ParityLimits = INT8_LIMITS,
) -> Artifact:
    """Quantize ``fp32_path`` to static INT8 (QDQ), gate it on parity, evaluate it in ORT.

    Args:
        fp32_path: The exported, parity-checked FP32 ONNX file (``student.onnx``).
        reference: The FP32 PyTorch student (parity reference), with its data (training images for
            calibration, eval inputs for parity and metrics) and task (output interpretation, agreement).
        out_path: Final file, e.g. ``RUN/student.int8.onnx``; written atomically, only if parity passes.
        calibration: Calibration images (count, seed) and whether to pre-process.
        limits: Eval inputs compared with the PyTorch student and the limits that pass (default
            :data:`INT8_LIMITS`: agreement only, as the module docstring explains).

    Returns:
        The ``int8`` :class:`~edgekd.results.Artifact` with its own ORT metrics and parity.

    Raises:
        InputError: ``fp32_path`` is missing or not valid ONNX.
        EdgekdError: ORT cannot quantize the model (the message names the quantizer's complaint).
        GateError: Parity failed; nothing is written under ``out_path``.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    source = check_onnx_file(fp32_path)
    started = time.perf_counter()
    reader = CalibrationReader(
        reference.data,
        source.graph.input[0].name,
        _fixed_batch(source),
        calibration.samples,
        calibration.seed,
    )
    try:
        proto = _quantize_static(fp32_path, reader, calibration)
    finally:
        reader.close()
    weights = " (7-bit, reduce_range)" if calibration.reduce_range else ""
    restamp_metadata(
        proto,
        source,
        {
            "precision": "int8",
            "quantization": f"static QDQ, per-channel S8 weights{weights}, U8 activations, MinMax",
            "calibration_samples": str(reader.used),
        },
    )
    quantized_at = time.perf_counter()
    notes = (
        f"INT8 calibrated on {reader.used} training images"
        + ("" if calibration.preprocess else ", no pre-process")
        + (", 7-bit weights (reduce_range: x86 without VNNI)" if calibration.reduce_range else ""),
    )
    artifact = ship(DerivedModel(proto, "int8", notes), out_path, reference, limits)
    log.info(
        "%s: INT8 in %.1fs (calibration %d images), parity agreement %.4f, %s, %d bytes",
        out_path.name,
        quantized_at - started,
        reader.used,
        artifact.parity.agreement if artifact.parity else float("nan"),
        ", ".join(f"{k} {v:.4f}" for k, v in artifact.metrics.items()),
        artifact.size_bytes,
    )
    return artifact


def _quantize_static(fp32_path: Path, reader: CalibrationReader, calibration: Calibration) -> onnx.ModelProto:
    """ORT's static QDQ quantization with the settings the module docstring explains, in memory.

    Raises:
        EdgekdError: ORT cannot quantize the model (its first message line, shortened).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgekd-int8-") as tmp:
        src, quantized = fp32_path, Path(tmp) / "int8.onnx"
        try:
            with _ort_logs_to_debug():
                if calibration.preprocess:
                    src = Path(tmp) / "pre.onnx"
                    quant_pre_process(str(fp32_path), str(src))
                quantize_static(
                    str(src),
                    str(quantized),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    reduce_range=calibration.reduce_range,
                )
        except Exception as exc:  # ORT raises plain Exceptions/ValueErrors with multi-line text
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise EdgekdError(f"{fp32_path.name}: INT8 quantization failed ({first[:300]})") from None
        return onnx.load(str(quantized))


class CalibrationReader:
    """ORT ``CalibrationDataReader``: ``samples`` normalised training images in batches, with a progress bar.

    ORT's ``CalibrationDataReader`` recognises any class with ``get_next`` (its ``__subclasshook__``), and
    MinMax calibration only calls ``get_next`` until it returns ``None``; so importing this module does not
    import ORT.
    """

    def __init__(
        self, data: DataBundle, input_name: str, fixed_batch: int | None, samples: int, seed: int
    ) -> None:
        self.batch = fixed_batch or CALIBRATION_BATCH
        self.fixed = fixed_batch is not None
        self.total = min(samples, len(data.train))
        if fixed_batch:  # a fixed-batch model takes exactly its batch size: whole batches, at least one
            self.total = max(fixed_batch, self.total - self.total % fixed_batch)
        self.used = 0
        self._data, self._seed, self._input = data, seed, input_name
        self._batches: Iterator[np.ndarray] | None = None
        self._bar = tqdm(total=self.total, desc="INT8 calibration", unit="img", leave=False, disable=None)

    def _iterate(self) -> Iterator[np.ndarray]:
        loader = self._data.train_loader(self.batch, augment=False, seed=self._seed, shuffle=True)
        remaining = self.total
        for images, _ in loader:
            if remaining <= 0 or (self.fixed and len(images) < self.batch):
                return
            chunk = images[:remaining].numpy().astype(np.float32, copy=False)
            remaining -= len(chunk)
            yield chunk

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._iterate()
        chunk = next(self._batches, None)
        if chunk is None:
            return None
        self.used += len(chunk)
        self._bar.update(len(chunk))
        return {self._input: chunk}

    def close(self) -> None:
        self._bar.close()


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    """The model's fixed batch size, or None when axis 0 of its input is symbolic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


@contextlib.contextmanager
def _ort_logs_to_debug() -> Iterator[None]:
    """Move ORT's quantizer advice (``logging.warning`` on the root logger) from the console to edgekd.log.

    A filter on the root *logger* sees only records logged on root itself, so edgekd's own records (which
    reach root's handlers by propagation) pass untouched. The temporary NullHandler stops the module-level
    ``logging.warning`` from calling ``basicConfig`` and leaving a console handler behind.
    """
    root = logging.getLogger()
    captured: list[logging.LogRecord] = []

    def capture(record: logging.LogRecord) -> bool:
        captured.append(record)
        return False

    guard = logging.NullHandler()
    root.addHandler(guard)
    root.addFilter(capture)
    try:
        yield
    finally:
        root.removeFilter(capture)
        root.removeHandler(guard)
        for record in captured:
            log.debug("onnxruntime.quantization: %s", record.getMessage())
