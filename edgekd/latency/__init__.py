"""Per-device latency models: what pruning can produce, timed on the target, fitted, cached, predicted.

Why: MACs are not latency. The same MACs cut ran 2.0x faster at 1 thread and 1.7x at 2 on the quickstart
student, and 1.6x *slower* on MobileNetV2 with unaligned widths (issue 14). Following NetAdapt (ECCV'18,
measured per-layer tables), nn-Meter (MobiSys'21, kernel-level predictors summed over the graph) and HALP
(NeurIPS'22, a latency table queried inside the pruning knapsack), a latency model here is fitted per
(device identity, onnxruntime, threads, batch, architecture) from single-op micro-models timed by the
standalone probe on the device itself, plus a whole-graph term fitted on whole models.

For the allocator (prune to a latency budget)::

    from edgekd.latency import CalibrationConfig, ensure_latency_model
    result = ensure_latency_model(teacher, example, "local", CalibrationConfig(threads=1))
    lat = result.model                     # LatencyModel
    lat.layers                             # LayerSpec per prunable Conv/Gemm, graph order
    lat.predict([(l.cin, l.cout) for l in lat.layers])   # p50 ms, ~10^4 queries/s
    lat.layer_ms(i, cin, cout)             # one layer's term (before alpha/beta): marginal costs

Layer: a stage-level package (it drives :mod:`edgekd.profile`'s targets and :mod:`edgekd.export`'s
exporter); :mod:`edgekd.report` reads it for ``predicted_ms``, :mod:`edgekd.prune` for latency budgets, and
its ``calibrate`` stage (:mod:`edgekd.latency.stage`) runs before pruning when the recipe asks for one.
"""

from __future__ import annotations

from edgekd.latency.cache import CACHE_ENV, CacheKey, Lookup, cache_dir, lookup
from edgekd.latency.graph import LayerSpec, architecture_hash, read_layers
from edgekd.latency.kinds import OP_KINDS, OpKind
from edgekd.latency.predictor import LatencyModel, TableFit

__all__ = [
    "CACHE_ENV",
    "OP_KINDS",
    "CacheKey",
    "CalibrationConfig",
    "CalibrationResult",
    "LatencyModel",
    "LayerSpec",
    "Lookup",
    "OpKind",
    "TableFit",
    "architecture_hash",
    "cache_dir",
    "calibrate_onnx",
    "calibrate_torch",
    "ensure_latency_model",
    "lookup",
    "read_layers",
]


def __getattr__(name: str):  # noqa: ANN202  (lazy: calibration imports the profile targets)
    if name == "STAGE":  # the calibrate stage (prune.target: latency), edgekd.run.pipeline.PIPELINE's entry
        from edgekd.latency.stage import STAGE

        return STAGE
    if name in {
        "CalibrationConfig",
        "CalibrationResult",
        "calibrate_onnx",
        "calibrate_torch",
        "ensure_latency_model",
    }:
        from edgekd.latency import calibrate

        return getattr(calibrate, name)
    raise AttributeError(name)
