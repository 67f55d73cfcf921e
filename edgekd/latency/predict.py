"""Predicted latency of an ONNX file from a cached latency model: ``edgekd predict`` and the report's
``predicted_ms`` beside every measured profile.

A prediction is the model's raw sum corrected by the whole models measured on the target (the teacher at
calibration, students measured since: :mod:`edgekd.latency.feedback`), the same number a latency budget is
allocated against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import InputError
from edgekd.latency.cache import CacheKey, cache_dir, device_identity, lookup
from edgekd.latency.feedback import expected_ms
from edgekd.latency.graph import architecture_hash, concrete_input_shape, read_layers
from edgekd.onnxfile import check_onnx_file


@dataclass(frozen=True)
class Prediction:
    """``edgekd predict``'s answer: the predicted p50 and the latency model it came from."""

    model: str
    target: str
    threads: int
    batch: int
    p50_ms: float
    cache_file: str
    error: dict[str, Any]
    layers: int


def predict_onnx(
    path: Path, target: str, threads: int = 1, batch: int = 1, cache: str | None = None
) -> Prediction:
    """Predict the p50 of ``path`` on ``target`` from the cached latency model of its architecture.

    Raises:
        InputError: not an ONNX file, an unknown target, or no valid latency model cached (the message says
            which stale ones were found and the ``edgekd calibrate`` command that builds one).
    """
    from edgekd.latency.calibrate import target_key

    proto = check_onnx_file(path)
    layers = read_layers(proto, None, batch)
    arch = architecture_hash(layers, concrete_input_shape(proto, None, batch))
    key = target_key(target, arch, threads, batch)
    found = lookup(key, cache_dir(cache))
    if found.model is None or found.path is None:
        stale = f" (stale, not reused: {'; '.join(found.stale)})" if found.stale else ""
        raise InputError(
            f"{path}: no latency model for this architecture on {target} at {threads} thread(s), batch {batch}"
            f"{stale}; build one with: edgekd calibrate MODEL --target {target} --threads {threads}"
        )
    p50 = expected_ms(found.model, found.model.predict_layers(layers))
    return Prediction(str(path), target, threads, batch, p50, str(found.path), found.model.error, len(layers))


def predicted_p50(path: Path, profile: Any, cache: str | None = None) -> float | None:
    """The predicted p50 of ``path`` for one measured :class:`~edgekd.results.Profile`, or ``None``.

    ``None`` when no valid latency model of that architecture is cached for the device, runtime, threads and
    batch the profile was measured at, or the file cannot be analysed (an INT8 QDQ graph has other layers).
    """
    device = profile.device or {}
    ort = device.get("onnxruntime") or {}
    try:
        proto = check_onnx_file(path)
        layers = read_layers(proto, None, profile.batch)
        arch = architecture_hash(layers, concrete_input_shape(proto, None, profile.batch))
    except InputError:
        return None
    key = CacheKey(
        device_identity(device),
        str(ort.get("version", "unknown")),
        str(ort.get("requested", "CPUExecutionProvider")),
        int(profile.threads),
        int(profile.batch),
        arch,
    )
    found = lookup(key, cache_dir(cache))
    if found.model is None or len(found.model.layers) != len(layers):
        return None
    return expected_ms(found.model, found.model.predict_layers(layers))


def attach_predictions(
    report: dict[str, Any], root: Path, artifacts: Sequence[Any], cache: str | None = None
) -> None:
    """Add ``predicted_ms: {p50}`` to each profile of ``report["artifacts"]`` that a cached model covers."""
    for entry, artifact in zip(report.get("artifacts", []), artifacts, strict=False):
        if artifact.format != "onnx":
            continue
        for profile_entry, profile in zip(entry.get("profiles", []), artifact.profiles, strict=False):
            p50 = predicted_p50(root / artifact.path, profile, cache)
            if p50 is not None:
                profile_entry["predicted_ms"] = {"p50": p50}
