"""Closing the loop (issue 14, item 4): whole models measured on the target correct the latency model near them.

Why anchors: the layer regressions and the whole-graph term are fitted on micro-models and uniform-width
models; a student with non-uniform widths can sit where the fit is biased (a width class that switches ORT's
kernel, reorders the fit did not see). The prune stage already trusts one measurement: the teacher's own p50,
by which it scales the prediction. Every student the profile stage measures on the budget's target is another
such *anchor* ``(predicted, measured)``; between anchors the bias ``measured / predicted`` is interpolated
linearly in the prediction, beyond them held constant. NetAdapt (Yang et al., ECCV'18) closes the same loop by
measuring each proposal; here one measurement per compress run corrects the model for the next allocation
(``prune.latency.refine: true`` re-prunes at once).

The anchors live in the cached model's ``fit.measured`` list, so a later run on the same device, runtime,
threads and architecture starts from the corrected model; a recalibration (a stale key) starts clean.

>>> aim_for(model, budget_ms=8.0)  # doctest: +SKIP   (the raw prediction the allocator must reach)
7.6
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from edgekd.io import write_text
from edgekd.latency.graph import LayerSpec
from edgekd.latency.predictor import LatencyModel

log = logging.getLogger("edgekd")

MEASURED = "measured"  # the key of fit's anchor list
MAX_ANCHORS = 16  # the newest are kept: an old student measured under other load should fade out


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A whole model timed on the target: the model's raw prediction for it and its measured p50 (ms)."""

    predicted_ms: float
    measured_ms: float

    @property
    def bias(self) -> float:
        return self.measured_ms / self.predicted_ms


def anchors(model: LatencyModel) -> list[Anchor]:
    """The teacher (when its p50 was measured at calibration) and every recorded student, by prediction."""
    found = []
    teacher_ms = model.fit.get("teacher_ms")
    if teacher_ms:
        found.append(
            Anchor(model.predict([(layer.cin, layer.cout) for layer in model.layers]), float(teacher_ms))
        )
    found += [Anchor(float(a["predicted_ms"]), float(a["measured_ms"])) for a in model.fit.get(MEASURED, ())]
    return sorted(found, key=lambda a: a.predicted_ms)


def bias_at(model: LatencyModel, predicted_ms: float) -> float:
    """``measured / predicted`` expected at a raw prediction: interpolated between anchors, 1 without any."""
    return _interpolate(anchors(model), predicted_ms)


def _interpolate(points: Sequence[Anchor], predicted_ms: float) -> float:
    if not points:
        return 1.0
    i = bisect.bisect_left([a.predicted_ms for a in points], predicted_ms)
    if i == 0:
        return points[0].bias
    if i == len(points):
        return points[-1].bias
    lo, hi = points[i - 1], points[i]
    span = hi.predicted_ms - lo.predicted_ms
    t = (predicted_ms - lo.predicted_ms) / span if span > 0 else 1.0
    return lo.bias + t * (hi.bias - lo.bias)


def expected_ms(model: LatencyModel, predicted_ms: float) -> float:
    """What the target is expected to measure for a model whose raw prediction is ``predicted_ms``."""
    return predicted_ms * bias_at(model, predicted_ms)


def aim_for(model: LatencyModel, budget_ms: float) -> float:
    """The raw prediction whose expected measurement is ``budget_ms`` (what the allocator must reach).

    Solved by bisection on ``p * bias(p)``, which rises with the prediction wherever the bias does not fall
    faster than the prediction grows (true for any two anchors within a factor of two of each other's bias).
    The anchors are read once: each reads the whole model's prediction for the teacher.
    """
    points = anchors(model)
    biases = [a.bias for a in points] or [1.0]
    lo, hi = 0.0, 2.0 * budget_ms / max(min(biases), 1e-6)  # hi * bias(hi) >= 2 * budget_ms
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if mid * _interpolate(points, mid) > budget_ms:
            hi = mid
        else:
            lo = mid
    return lo


def record_measurement(
    cache_file: str | Path, layers: Sequence[LayerSpec], measured_ms: float
) -> LatencyModel:
    """Add a measured student to the cached model in ``cache_file`` (atomically) and return the new model.

    Args:
        cache_file: the model the student was pruned against (``stages.calibrate.cache_file``).
        layers: the student's layers as :func:`~edgekd.latency.graph.read_layers` reads its ONNX file.
        measured_ms: its p50 on the model's target and thread count.

    Raises:
        ValueError: the layers are not this model's architecture (another model's file).
    """
    path = Path(cache_file)
    model = LatencyModel.from_json(json.loads(path.read_text()))
    try:
        updated = with_measurement(model, layers, measured_ms)
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    write_text(path, json.dumps(updated.to_json(), indent=1))
    log.info(
        "latency model: updated with a measured student (predicted %.3g ms before correction, measured %.3g ms): "
        "%s",
        model.predict_layers(layers),
        measured_ms,
        path.name,
    )
    return updated


def with_measurement(model: LatencyModel, layers: Sequence[LayerSpec], measured_ms: float) -> LatencyModel:
    """``model`` with one more anchor: a model of its architecture with ``layers``, measured at ``measured_ms``.

    Raises:
        ValueError: the layers are not this model's architecture.
    """
    if [layer.signature() for layer in layers] != [layer.signature() for layer in model.layers]:
        raise ValueError("the measured model does not have this latency model's layers")
    entry = {"predicted_ms": model.predict_layers(layers), "measured_ms": float(measured_ms)}
    fit = {**model.fit, MEASURED: [*model.fit.get(MEASURED, ()), entry][-MAX_ANCHORS:]}
    return dataclasses.replace(model, fit=fit)
