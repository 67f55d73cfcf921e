"""Ship a derived precision (INT8, FP16) of an exported FP32 model: gate it on parity, evaluate it, describe it.

Why shared: both derived artifacts follow the FP32 export's contract. The file appears under its final name
only once it has passed parity against the FP32 *PyTorch* student (not against the FP32 ONNX file, so
errors do not stack unseen), and its metrics come from running that very file in ONNX Runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgekd.errors import EdgekdError, GateError, InputError
from edgekd.export.onnx_export import check_exported
from edgekd.export.ort import OrtPredictor, create_session, evaluate_session
from edgekd.export.parity import ParityLimits, ParityReference, measure_parity
from edgekd.io import atomic_path
from edgekd.results import Artifact, Parity


@dataclass(frozen=True)
class DerivedModel:
    """A converted model as it will ship: the graph, its precision and what the report should say about it.

    Attributes:
        proto: The converted model (metadata already stamped).
        precision: ``"int8"`` or ``"fp16"`` (the report's ``precision``).
        notes: Carried into the artifact (and the report).
    """

    proto: onnx.ModelProto
    precision: str
    notes: tuple[str, ...] = ()


def restamp_metadata(model: onnx.ModelProto, source: onnx.ModelProto, extra: dict[str, str]) -> None:
    """Give ``model`` the FP32 file's ``metadata_props`` plus ``extra``, dropping tool provenance keys.

    The quantizer and converter append keys such as ``onnx.quant.pre_process``; a deployed file should say
    what to feed it (preprocessing, input shape, class names) and what it is (``precision``), nothing else.
    """
    props = {p.key: p.value for p in source.metadata_props if not p.key.startswith("onnx.")}
    props.update(extra)
    onnx.helper.set_model_props(model, props)


def ship(derived: DerivedModel, out_path: Path, reference: ParityReference, limits: ParityLimits) -> Artifact:
    """Check, write atomically, parity-gate and ORT-evaluate one derived ONNX model.

    Args:
        derived: The converted model, its precision and its notes.
        out_path: Final file (e.g. ``RUN/student.int8.onnx``).
        reference: The FP32 PyTorch student (the parity reference), the real eval inputs for parity and the
            eval split for metrics, and the task (output interpretation, agreement, metrics).
        limits: Eval inputs compared; ``atol`` (``math.inf`` gates on agreement alone) and ``min_agreement``.

    Raises:
        EdgekdError: The converted model is invalid or ORT cannot load it (a converter problem, not input).
        GateError: Parity failed; nothing is left under ``out_path``.
    """
    check_exported(derived.proto, out_path.name)
    with atomic_path(out_path) as tmp:
        onnx.save_model(derived.proto, str(tmp))
        try:
            session = create_session(tmp, label=out_path.name)
        except InputError as exc:
            raise EdgekdError(str(exc)) from None
        parity = measure_parity(reference, OrtPredictor(session), limits)
        if not math.isfinite(parity.max_abs_diff):  # inf/NaN outputs (FP16 overflow) never pass
            parity = Parity(parity.max_abs_diff, parity.agreement, False, parity.samples)
        if not parity.passed:
            limit = "" if math.isinf(limits.atol) else f" (limit {limits.atol:g})"
            raise GateError(
                f"{out_path.name}: {derived.precision.upper()} parity vs the PyTorch student failed on "
                f"{parity.samples} eval inputs: agreement {parity.agreement:.4f} (limit "
                f"{limits.min_agreement:g}), max_abs_diff {parity.max_abs_diff:.3g}{limit}; check the "
                "calibration data (same preprocessing as training?) or relax the limit; the file was not written"
            )
    metrics = evaluate_session(session, reference.data, reference.task)
    return Artifact.of_file(out_path, derived.precision, parity=parity, metrics=metrics, notes=derived.notes)
