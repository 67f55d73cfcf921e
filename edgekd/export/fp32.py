"""One shipped FP32 file: PyTorch model → checked, simplified, parity-gated ONNX file and its ORT metrics.

Export (:mod:`.onnx_export`), simplify (:mod:`.simplify`), stamp metadata, ``onnx.checker``, the parity gate
against PyTorch on real eval inputs (:mod:`.parity`), then the whole eval set through ONNX Runtime
(:mod:`.ort`). The file only appears under its final name once parity has passed, so a failed gate never
leaves an artifact a user could deploy by mistake.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import onnx

from edgekd.errors import EdgekdError, GateError, InputError
from edgekd.export.onnx_export import build_metadata, check_exported, stamp_metadata, torch_to_onnx
from edgekd.export.ort import OrtPredictor, create_session, evaluate_session
from edgekd.export.parity import ParityLimits, ParityReference, measure_parity, parity_failure
from edgekd.export.simplify import simplify_model
from edgekd.io import atomic_path
from edgekd.recipe.schema import ExportConfig
from edgekd.results import Artifact

log = logging.getLogger("edgekd.export")

SIMPLIFY_CHECK_SAMPLES = 4  # onnxsim's own check; the parity gate below is the thorough one


def export_onnx(
    source: ParityReference,
    cfg: ExportConfig,
    out_path: Path,
    name: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Artifact:
    """Export ``source.model`` to ``out_path`` as FP32 ONNX, gate it on parity and evaluate the file in ORT.

    Args:
        source: The PyTorch model (teacher or student; left in its original training mode), the real eval
            inputs for tracing, parity and evaluation (with preprocessing and class names for the metadata),
            and the task (output interpretation, metrics and agreement).
        cfg: The recipe's ``export`` section.
        out_path: Final file path (e.g. ``RUN/student.onnx``); written atomically.
        name: Artifact name in the report (default: the file name, e.g. ``"student.onnx"``).
        metadata: Extra ``metadata_props`` (e.g. ``{"role": "student"}``).

    Returns:
        The :class:`~edgekd.results.Artifact`; ``path`` is ``out_path.name`` (relative to the run directory).

    Raises:
        EdgekdError: The model cannot be exported (the message names the operator) or the result is invalid.
        GateError: Parity failed; nothing is left under ``out_path``.
    """
    model, data, task = source.model, source.data, source.task
    out_path = Path(out_path)
    notes: list[str] = []
    started = time.perf_counter()
    batch = 2 if cfg.dynamic_batch and len(data.eval) >= 2 else 1  # batch 1 traces may special-case size 1
    example = data.example_input(batch)
    proto = torch_to_onnx(model, example, cfg.opset, cfg.dynamic_batch, dynamic_spatial=task.dense_output)
    exported = time.perf_counter()
    if cfg.simplify:
        sample = data.example_input(SIMPLIFY_CHECK_SAMPLES if cfg.dynamic_batch else 1).numpy()
        proto, note = simplify_model(proto, sample, atol=cfg.parity_atol)
        if note:
            log.warning("%s: %s", out_path.name, note)
            notes.append(note)
    stamp_metadata(proto, build_metadata(data, task, cfg.dynamic_batch, metadata))
    check_exported(proto, out_path.name)
    simplified = time.perf_counter()

    with atomic_path(out_path) as tmp:
        onnx.save_model(proto, str(tmp))
        try:
            session = create_session(tmp, label=out_path.name)
        except InputError as exc:  # our own export, not user input: a runtime failure (exit 1)
            raise EdgekdError(str(exc)) from None
        limits = ParityLimits.of_export(cfg)
        parity = measure_parity(source, OrtPredictor(session), limits)
        if not parity.passed:
            raise GateError(parity_failure(out_path.name, parity, limits))
    checked = time.perf_counter()
    metrics = evaluate_session(session, data, task)
    timings = (exported - started, simplified - exported, checked - simplified, time.perf_counter() - checked)
    log.debug("%s: export %.2fs, simplify+check %.2fs, parity %.2fs, ORT eval %.2fs", out_path.name, *timings)
    return Artifact.of_file(out_path, name=name, parity=parity, metrics=metrics, notes=tuple(notes))
