"""Which precision to ship, per device: the fastest student file whose metric stays within tolerance (issue 14).

Why measured and not a default: INT8 lost to FP32 on the 8-channel quickstart student (quantize/dequantize
overhead on layers too narrow for the integer kernels) and ran 4x faster on a pruned ResNet-18; FP16 pays only
where the hardware has half-precision arithmetic (a Jetson, recent ARM cores) and is emulated elsewhere. So for
every (target, threads, batch) the student files were timed at, the recommendation is the lowest p50 among the
FP32 student and the INT8 / FP16 files whose primary metric (ONNX Runtime, eval split) is at most
``export.precision_tolerance`` (relative) worse than the FP32 student's. FP32 is always eligible: it is the
reference.

report.json ``precision``: one entry per setting, ``null`` without ``export.int8`` / ``export.fp16``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgekd.results import Artifact
from edgekd.rundir import SHIPPABLE, STUDENT_ONNX


@dataclass(frozen=True)
class MetricRule:
    """The metric a precision may cost, its direction, and the largest relative loss accepted."""

    name: str
    higher_is_better: bool
    tolerance: float

    def loss(self, reference: float, value: float) -> float:
        """Relative loss of ``value`` against ``reference`` (positive = worse)."""
        worse = reference - value if self.higher_is_better else value - reference
        return worse / abs(reference) if reference else worse


def recommend_precision(artifacts: Sequence[Artifact], rule: MetricRule) -> list[dict[str, Any]] | None:
    """``[{target, threads, batch, artifact, precision, p50_ms, speedup_over_fp32, candidates}]``, or ``None``.

    ``None`` when only the FP32 student was shipped. ``candidates`` lists every student file timed at that
    setting with its p50, relative metric loss and whether it was eligible (``reason`` when not).
    """
    students = [a for a in artifacts if a.name in SHIPPABLE and a.format == "onnx"]
    reference = next((a for a in students if a.name == STUDENT_ONNX), None)
    if reference is None or len(students) < 2:
        return None
    settings = sorted({(p.target, p.threads, p.batch) for a in students for p in a.profiles}, key=str)
    rows = []
    for target, threads, batch in settings:
        timed = [(a, _p50(a, target, threads, batch)) for a in students]
        candidates = [_candidate(a, p50, reference, rule) for a, p50 in timed if p50 is not None]
        eligible = [c for c in candidates if c["eligible"]]
        if not eligible:
            continue
        best = min(eligible, key=lambda c: c["p50_ms"])
        fp32 = next((c for c in candidates if c["artifact"] == STUDENT_ONNX), None)
        rows.append(
            {
                "target": target,
                "threads": threads,
                "batch": batch,
                "artifact": best["artifact"],
                "precision": best["precision"],
                "p50_ms": best["p50_ms"],
                "speedup_over_fp32": fp32["p50_ms"] / best["p50_ms"] if fp32 else None,
                "metric": rule.name,
                "tolerance": rule.tolerance,
                "candidates": candidates,
            }
        )
    return rows


def _p50(artifact: Artifact, target: str, threads: int, batch: int) -> float | None:
    found = [p for p in artifact.profiles if (p.target, p.threads, p.batch) == (target, threads, batch)]
    return found[0].latency_ms.p50 if found else None


def _candidate(artifact: Artifact, p50: float, reference: Artifact, rule: MetricRule) -> dict[str, Any]:
    entry: dict[str, Any] = {"artifact": artifact.name, "precision": artifact.precision, "p50_ms": p50}
    if artifact is reference:
        return {**entry, "metric_loss": 0.0, "eligible": True, "reason": None}
    value, base = artifact.metrics.get(rule.name), reference.metrics.get(rule.name)
    if value is None or base is None:
        return {**entry, "metric_loss": None, "eligible": False, "reason": f"{rule.name} not measured"}
    loss = rule.loss(base, value)
    within = loss <= rule.tolerance
    reason = (
        None
        if within
        else f"{rule.name} {100 * loss:.2f}% worse than FP32 (tolerance {100 * rule.tolerance:g}%)"
    )
    return {**entry, "metric_loss": loss, "eligible": within, "reason": reason}
