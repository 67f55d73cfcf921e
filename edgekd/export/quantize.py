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
* **MinMax calibration** on ``calibration_samples`` training images (no augmentation, a seeded shuffle, so
  the ranges cover all classes and a rerun gives the same file), fed through a progress bar.

Parity is gated on agreement only (default ``INT8_MIN_AGREEMENT`` = 0.97 top-1 vs the FP32 PyTorch
student): INT8 rounding moves logits by an amount that scales with each model's logit range, so an absolute
tolerance would be meaningless for one model and too strict for the next; what matters for deployment is
how many predictions change. 0.97 passes normal INT8 noise (0.99+ measured on the Fashion-MNIST students)
and fails broken calibration (wrong preprocessing or a degenerate calibration set gives far lower
agreement). The accuracy cost itself is measured on the whole eval set and can be gated with
``gates.max_metric_drop``.

>>> art = export_int8(Path("run/student.onnx"), student, data, task, Path("run/student.int8.onnx"))  # doctest: +SKIP
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
from pathlib import Path

import numpy as np
import onnx
from torch import nn
from tqdm import tqdm

from edgekd.data.base import DataBundle
from edgekd.errors import EdgekdError
from edgekd.export._ship import restamp_metadata, ship
from edgekd.export.validate import check_onnx_file
from edgekd.results import Artifact
from edgekd.tasks.base import Task

log = logging.getLogger("edgekd.export")

INT8_MIN_AGREEMENT = 0.97
CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 32


def export_int8(
    fp32_path: Path,
    model: nn.Module,
    data: DataBundle,
    task: Task,
    out_path: Path,
    *,
    calibration_samples: int = CALIBRATION_SAMPLES,
    preprocess: bool = True,
    seed: int = 0,
    parity_samples: int = 256,
    min_agreement: float = INT8_MIN_AGREEMENT,
) -> Artifact:
    """Quantize ``fp32_path`` to static INT8 (QDQ), gate it on parity, evaluate it in ORT.

    Args:
        fp32_path: The exported, parity-checked FP32 ONNX file (``student.onnx``).
        model: The FP32 PyTorch student (parity reference).
        data: Training images for calibration; eval inputs for parity and metrics.
        task: Output interpretation, agreement and metrics.
        out_path: Final file, e.g. ``RUN/student.int8.onnx``; written atomically, only if parity passes.
        calibration_samples: Training images used to calibrate activation ranges (fewer if the split is smaller).
        preprocess: Run ``quant_pre_process`` first (see the module docstring; keep it on).
        seed: Picks the calibration images.
        parity_samples: Eval inputs compared with the PyTorch student.
        min_agreement: Smallest accepted top-1 (or pixel) agreement.

    Returns:
        The ``int8`` :class:`~edgekd.results.Artifact` with its own ORT metrics and parity.

    Raises:
        InputError: ``fp32_path`` is missing or not valid ONNX.
        EdgekdError: ORT cannot quantize the model (the message names the quantizer's complaint).
        GateError: Parity failed; nothing is written under ``out_path``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    source = check_onnx_file(fp32_path)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-int8-") as tmp:
        src, quantized = fp32_path, Path(tmp) / "int8.onnx"
        reader = CalibrationReader(
            data, source.graph.input[0].name, _fixed_batch(source), calibration_samples, seed
        )
        try:
            with _ort_logs_to_debug():
                if preprocess:
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
                )
        except Exception as exc:  # ORT raises plain Exceptions/ValueErrors with multi-line text
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise EdgekdError(f"{fp32_path.name}: INT8 quantization failed ({first[:300]})") from None
        finally:
            reader.close()
        proto = onnx.load(str(quantized))
    restamp_metadata(
        proto,
        source,
        {
            "precision": "int8",
            "quantization": "static QDQ, per-channel S8 weights, U8 activations, MinMax",
            "calibration_samples": str(reader.used),
        },
    )
    quantized_at = time.perf_counter()
    notes = (
        f"INT8 calibrated on {reader.used} training images" + ("" if preprocess else ", no pre-process"),
    )
    artifact = ship(
        proto,
        out_path,
        precision="int8",
        model=model,
        data=data,
        task=task,
        parity_samples=parity_samples,
        atol=math.inf,
        min_agreement=min_agreement,
        notes=notes,
    )
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
