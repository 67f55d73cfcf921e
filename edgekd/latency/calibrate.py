"""Calibrate a latency model on a target: time micro-models and whole models through the probe, fit, cache.

One calibration is two probe invocations on the target (locally a subprocess, over SSH one copy and one
connection each), each carrying a tar of models (``probe.py --bundle``):

1. the *micro* bundle: every table's layer at the widths :meth:`~edgekd.latency.kinds.OpKind.grid` picks, as
   single-op ONNX models, plus an empty model whose time (session overhead per run) is subtracted from each;
2. the *whole* bundle: the unpruned model and a few uniform-width variants (they fit the whole-graph term),
   and the held-out random-width variants the calibration error is measured on (never used in fitting).

:func:`ensure_latency_model` is what a recipe asking for a latency target calls: the cached model when a
valid one exists, else a calibration.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgekd.latency.cache import CacheKey, cache_dir, device_identity, lookup, store
from edgekd.latency.graph import LayerSpec, architecture_hash, concrete_input_shape, read_layers
from edgekd.latency.kinds import QUICK_GRID, GridSize, kind_of
from edgekd.latency.predictor import LatencyModel, Sample, error_summary, fit_tables, fit_whole_graph
from edgekd.profile.measure import get_target
from edgekd.profile.target import ProbeSettings

log = logging.getLogger("edgekd")

CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class CalibrationConfig:
    """How to calibrate. ``quick``: a coarser grid, one round, fewer whole models (for tests and smoke runs).

    Attributes:
        threads: intra-op threads (>= 1: the thread count is part of the key).
        batch: the batch the model runs at.
        quick: coarser width grid, 1 round, shorter budgets.
        uniform: keep ratios of the uniform-width variants fitting the whole-graph term (torch models),
            widths rounded to multiples of 8.
        unaligned: keep ratios of unrounded uniform variants (widths off the SIMD block: what prices the
            reorders around such layers, ``gamma``).
        holdout: random-width variants measured for the held-out error (torch models; 0: none).
        seed: seeds the random variants.
        cache: the cache directory override (``profile.latency_cache``); ``$EDGEKD_LATENCY_CACHE`` wins.
        timeout_s: per probe invocation.
    """

    threads: int = 1
    batch: int = 1
    quick: bool = False
    uniform: tuple[float, ...] = (0.75, 0.5, 0.3)
    unaligned: tuple[float, ...] = (0.62, 0.41)
    holdout: int = 6
    seed: int = 0
    cache: str | None = None
    timeout_s: float = 1800.0

    @property
    def grid(self) -> GridSize:
        return QUICK_GRID if self.quick else GridSize()

    def settings(self, budget_s: float) -> ProbeSettings:
        return ProbeSettings(
            threads=self.threads,
            batch=self.batch,
            warmup=2 if self.quick else 3,
            time_budget_s=budget_s,
            min_runs=5,
            min_time_s=budget_s / 2,
            timeout_s=self.timeout_s,
            bundle=True,
            rounds=1 if self.quick else 2,
        )


@dataclass(frozen=True)
class CalibrationResult:
    """A latency model with where it is cached and what building it cost (``reused``: found in the cache)."""

    model: LatencyModel
    path: Path
    target: str
    seconds: float
    samples: int
    reused: bool = False

    def stage_entry(self) -> dict[str, Any]:
        """``report.json["stages"]["calibrate"]``: ``{target, seconds, samples, error: {within_10pct, mape}}``."""
        err = self.model.error
        return {
            "target": self.target,
            "seconds": self.seconds,
            "samples": self.samples,
            "error": {"within_10pct": err.get("within_10pct"), "mape": err.get("mape")},
        }


def target_key(target: str, arch: str, threads: int, batch: int) -> CacheKey:
    """The cache key on ``target``: asks the device (the probe's ``--baseline``) who it is."""
    base = get_target(target).baseline()
    version = (base.get("onnxruntime") or {}).get("version", "unknown")
    return CacheKey(device_identity(base.get("device", {})), version, CPU, threads, batch, arch)


def model_key(
    proto: Any, target: str, threads: int, batch: int, shape: Sequence[int] | None = None
) -> CacheKey:
    """The cache key of an ONNX model (any width of one architecture) on ``target``."""
    layers = read_layers(proto, shape, batch)
    return target_key(
        target, architecture_hash(layers, concrete_input_shape(proto, shape, batch)), threads, batch
    )


def calibrate_onnx(
    proto: Any,
    target: str,
    cfg: CalibrationConfig,
    whole: tuple[Sequence[Any], Sequence[Any]] = ((), ()),
    shape: Sequence[int] | None = None,
) -> CalibrationResult:
    """Calibrate for the architecture of ``proto`` (an ``onnx.ModelProto``) on ``target`` and cache the model.

    Args:
        proto: the unpruned model.
        target: a target name (``local``, ``ssh://...``, a ``targets.yaml`` name).
        cfg: how to calibrate.
        whole: ``(fit, holdout)`` extra whole models (pruned variants as ONNX protos); ``proto`` itself always
            fits. Without holdout models the error is ``null``.
        shape: the input shape, when the model neither fixes nor records it.

    Raises:
        InputError: an unknown target, an unresolvable input size, a model without prunable layers.
        EdgekdError: the probe failed on the device.
    """
    started = time.perf_counter()
    layers = read_layers(proto, shape, cfg.batch)
    key = target_key(
        target,
        architecture_hash(layers, concrete_input_shape(proto, shape, cfg.batch)),
        cfg.threads,
        cfg.batch,
    )
    tables, layer_tables = _tables(layers, cfg.grid)
    micro = {"null.onnx": _null_model()}
    for t, (layer, pairs) in enumerate(tables.values()):
        for cin, cout in pairs:
            micro[f"t{t}_{cin}x{cout}.onnx"] = kind_of(layer).micro(layer.with_widths(cin, cout), cfg.batch)
    log.info(
        "calibrate: %d layers, %d tables, %d micro-models on %s", len(layers), len(tables), len(micro), target
    )
    timed = _run_bundle(target, micro, cfg.settings(0.15 if cfg.quick else 0.25))
    overhead = timed.pop("null.onnx")
    samples = {}
    for t, (tkey, (layer, pairs)) in enumerate(tables.items()):
        got = [Sample(ci, co, max(timed[f"t{t}_{ci}x{co}.onnx"] - overhead, 1e-4)) for ci, co in pairs]
        samples[tkey] = (layer, got)
    fits, q, loo = fit_tables(samples)
    fit_models, holdout = [proto, *whole[0]], list(whole[1])
    named = {f"fit{i}.onnx": m for i, m in enumerate(fit_models)} | {
        f"hold{i}.onnx": m for i, m in enumerate(holdout)
    }
    measured = _run_bundle(target, named, cfg.settings(0.5 if cfg.quick else 1.0))
    draft = LatencyModel(asdict(key), tuple(layers), fits, layer_tables, q, 1.0, 0.0)
    sums, variants = {}, {}
    for name, m in named.items():
        variant = read_layers(m, shape, cfg.batch)
        if [v.signature() for v in variant] == [v.signature() for v in layers]:
            sums[name], variants[name] = draft.predict_layers(variant), variant
        else:  # the export folded something differently: not this architecture, leave it out
            log.warning("calibrate: %s does not have the model's layers; left out", name)
    fit_names = [n for n in sums if n.startswith("fit")]
    term = fit_whole_graph(
        [sums[n] for n in fit_names], [variants[n] for n in fit_names], [measured[n] for n in fit_names]
    )
    whole_graph = {"alpha": term.alpha, "beta": term.beta, "gamma": term.gamma, "block": term.block}
    hold_names = [n for n in sums if n.startswith("hold")]
    scored = LatencyModel(asdict(key), tuple(layers), fits, layer_tables, q, **whole_graph)
    predicted = [scored.predict_layers(variants[n]) for n in hold_names]
    error = error_summary(predicted, [measured[n] for n in hold_names])
    seconds = time.perf_counter() - started
    fit = {
        "samples": sum(len(s) for _, s in samples.values()),
        "whole_models": {"fit": len(fit_names), "holdout": len(hold_names)},
        "loo_mape": loo,
        "overhead_ms": overhead,
        "teacher_ms": measured.get("fit0.onnx"),  # the unpruned model's measured p50: a latency budget's base
        "seconds": seconds,
        "holdout": [
            {"measured_ms": measured[n], "predicted_ms": p}
            for n, p in zip(hold_names, predicted, strict=True)
        ],
    }
    model = replace(scored, error=error, fit=fit)
    path = store(model, key, cache_dir(cfg.cache))
    log.info("calibrate: %s in %.1f s, q=%d, held-out %s -> %s", target, seconds, q, error, path)
    return CalibrationResult(model, path, target, seconds, len(micro) + len(named))


def _tables(
    layers: Sequence[LayerSpec], grid: GridSize
) -> tuple[dict[str, tuple[LayerSpec, list]], tuple[str, ...]]:
    tables: dict[str, tuple[LayerSpec, list]] = {}
    for layer in layers:
        if layer.table_key() not in tables:
            tables[layer.table_key()] = (layer, kind_of(layer).grid(layer, grid))
    return tables, tuple(layer.table_key() for layer in layers)


def _null_model() -> Any:
    """An almost empty model: what one ``session.run`` costs with no work (subtracted from every micro)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "null", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run_bundle(target: str, models: dict[str, Any], settings: ProbeSettings) -> dict[str, float]:
    """``{name: p50 ms}`` of every model, timed on ``target`` by one ``probe.py --bundle`` invocation."""
    with tempfile.TemporaryDirectory(prefix="edgekd-calibrate-") as tmp:
        bundle = Path(tmp) / "bundle.tar"
        with tarfile.open(bundle, "w") as tar:
            for name, proto in models.items():
                blob = proto.SerializeToString()
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        answer = get_target(target).run_probe(bundle, settings)
    return {name: float(entry["p50"]) for name, entry in answer["models"].items()}


def calibrate_torch(model: Any, example: Any, target: str, cfg: CalibrationConfig) -> CalibrationResult:
    """Calibrate for a PyTorch model: export it, prune uniform and random variants, then :func:`calibrate_onnx`.

    Args:
        model: the unpruned model (left untouched).
        example: an input batch of the size the model runs at (its batch is ``cfg.batch``).
        target, cfg: as for :func:`calibrate_onnx`.
    """
    from edgekd.latency.variants import prune_widths, random_plan, to_onnx, uniform

    example = example[: cfg.batch]
    proto = to_onnx(model, example)
    ratios = cfg.uniform[:2] if cfg.quick else cfg.uniform
    unaligned = cfg.unaligned[:1] if cfg.quick else cfg.unaligned
    fit = [to_onnx(prune_widths(model, example, uniform(r)), example) for r in ratios]
    fit += [to_onnx(prune_widths(model, example, uniform(r, round_to=None)), example) for r in unaligned]
    hold = [
        to_onnx(prune_widths(model, example, random_plan(cfg.seed + i)), example) for i in range(cfg.holdout)
    ]
    return calibrate_onnx(proto, target, cfg, (fit, hold))


def ensure_latency_model(model: Any, example: Any, target: str, cfg: CalibrationConfig) -> CalibrationResult:
    """The cached latency model of ``model`` on ``target`` when a valid one exists, else a new calibration.

    What ``prune: {target: latency}`` calls before allocating widths (issue 14, item 3).
    """
    from edgekd.latency.variants import to_onnx

    proto = to_onnx(model, example[: cfg.batch])
    key = model_key(proto, target, cfg.threads, cfg.batch)
    found = lookup(key, cache_dir(cfg.cache))
    if found.model is not None and found.path is not None:
        return CalibrationResult(found.model, found.path, target, 0.0, 0, reused=True)
    return calibrate_torch(model, example, target, cfg)
