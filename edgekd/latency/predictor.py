"""The fitted latency model of one (device, runtime, threads, batch, architecture): fit, predict, serialise.

What it predicts: ``p50 = alpha * sum(layer terms) + gamma * misaligned + beta``. Each layer term comes from a
per-table regression fitted on that table's timed micro-models (:mod:`edgekd.latency.kinds` features,
non-negative least squares so that a wider layer is never predicted faster within one alignment class);
``alpha, gamma, beta`` are the whole-graph term, fitted on whole models at a few uniform widths, aligned and
not: ``beta`` holds what no layer owns (session overhead, pooling, the head's reshapes), ``alpha`` corrects the
micro-models' systematic bias (a lone op pays its own layout reorders and cache misses that a chain of ops
shares), ``gamma`` prices the reorders a chain pays around a layer whose width misses ORT's NCHWc block
(per activation element; :meth:`LayerSpec.misaligned_elems`). Why ``gamma``: fitted on aligned models only,
the model predicted every one of 19 rounded held-out MobileNetV2 variants within ±10% and none of 11 unrounded
ones (20% too fast on average, AVX2, 1 thread): the reorders are where the error was. This is
nn-Meter's kernel-sum design (MobiSys'21) with a HALP-style (NeurIPS'22) cheap query: :meth:`predict` is a
dot product per layer, ~10^4-10^5 queries per second, fit for an allocator's knapsack or greedy loop.

Why regression and not a NetAdapt lookup table (ECCV'18): a table needs every (cin, cout) pair timed (a
2-D grid per layer: thousands of micro-models for ResNet-18); a regression over 10-16 timed pairs per table
interpolates across both widths and stays monotone where the hardware is. Latency is not monotone across
alignments, so each candidate ``q`` (the SIMD block whose miss switches kernels: 1 = none, 4, 8, 16) is scored
by leave-one-out error on the micro-models themselves and the best is kept (:func:`fit_tables`; the scores are
recorded in the model's ``fit.loo_mape``). Measured on ResNet-20 at 28x28 (quick grid, loaded 2-core AVX2
machine): leave-one-out MAPE 19% without alignment terms, 12% with q=8.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekd.latency.graph import LayerSpec
from edgekd.latency.kinds import kind_of

ALIGNMENTS = (1, 4, 8, 16)
MIN_MS = 1e-4


def nnls(a: np.ndarray, b: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Non-negative least squares (Lawson-Hanson active set): ``argmin |a x - b|, x >= 0``."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(iterations):
        grad = a.T @ (b - a @ x)
        if passive.all() or grad[~passive].max(initial=-np.inf) <= 1e-12:
            break
        passive[np.argmax(np.where(passive, -np.inf, grad))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            step = np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-300))
            x = x + step * (z - x)
            passive &= x > 1e-15
    return x


@dataclass(frozen=True)
class Sample:
    """One timed micro-model: a table's layer at ``(cin, cout)`` and its p50 in ms (net of session overhead)."""

    cin: int
    cout: int
    ms: float


@dataclass(frozen=True)
class TableFit:
    """The regression of one table (layers sharing a :meth:`LayerSpec.table_key`)."""

    key: str
    layer: LayerSpec  # the unpruned layer the table describes
    coef: tuple[float, ...]
    samples: tuple[Sample, ...]

    def predict(self, layer: LayerSpec, q: int) -> float:
        feats = kind_of(layer).features(layer, q)
        return max(MIN_MS, sum(c * f for c, f in zip(self.coef, feats, strict=True)))


def _solve(layer: LayerSpec, samples: Sequence[Sample], q: int) -> tuple[float, ...]:
    """Relative-error NNLS: each row divided by its time, so a 0.1 ms layer counts as much as a 10 ms one."""
    kind = kind_of(layer)
    rows = np.array([kind.features(layer.with_widths(s.cin, s.cout), q) for s in samples], dtype=np.float64)
    times = np.array([s.ms for s in samples])
    scale = np.maximum(np.abs(rows).max(axis=0), 1e-30)
    weights = 1.0 / np.maximum(times, MIN_MS)
    x = nnls(rows / scale * weights[:, None], times * weights)
    return tuple(float(v) for v in x / scale)


def fit_table(key: str, layer: LayerSpec, samples: Sequence[Sample], q: int) -> TableFit:
    return TableFit(key, layer, _solve(layer, samples, q), tuple(samples))


def loo_errors(layer: LayerSpec, samples: Sequence[Sample], q: int) -> list[float]:
    """Leave-one-out relative errors of the table's regression at alignment ``q``."""
    errors = []
    for i, s in enumerate(samples):
        rest = [t for j, t in enumerate(samples) if j != i]
        if len(rest) < 2:
            continue
        fit = TableFit("", layer, _solve(layer, rest, q), ())
        errors.append(abs(fit.predict(layer.with_widths(s.cin, s.cout), q) - s.ms) / s.ms)
    return errors


def fit_tables(
    tables: Mapping[str, tuple[LayerSpec, Sequence[Sample]]],
) -> tuple[dict[str, TableFit], int, dict[str, float]]:
    """Fit every table at the alignment ``q`` with the lowest pooled leave-one-out MAPE.

    Returns:
        ``(fits by table key, chosen q, {"q=1": mape, "q=4": ..., ...})``.
    """
    scores = {}
    for q in ALIGNMENTS:
        errs = [e for layer, samples in tables.values() for e in loo_errors(layer, samples, q)]
        scores[f"q={q}"] = float(np.mean(errs)) if errs else math.inf
    q = min(ALIGNMENTS, key=lambda a: scores[f"q={a}"])
    fits = {key: fit_table(key, layer, samples, q) for key, (layer, samples) in tables.items()}
    return fits, q, {k: v for k, v in scores.items() if math.isfinite(v)}


def whole_graph_term(
    predicted: Sequence[float], measured: Sequence[float], misaligned: Sequence[float] | None = None
) -> tuple[float, float, float]:
    """``(alpha, gamma, beta)`` with ``measured ~ alpha * predicted + gamma * misaligned + beta`` (relative LS).

    ``misaligned`` is each model's count of activation elements reordered around off-block layers
    (:meth:`LayerSpec.misaligned_elems`); ``gamma`` is fitted only when the models differ in it (at least four
    models), and kept >= 0. One model: ``alpha = 1``, ``beta`` the difference. ``alpha`` is kept in [0.5, 2]:
    outside it the layer terms would not describe the model, and an extrapolation must not amplify that.
    """
    p, y = np.asarray(predicted, float), np.asarray(measured, float)
    m = np.zeros_like(p) if misaligned is None else np.asarray(misaligned, float)
    if len(p) < 2 or np.ptp(p) < 1e-9:
        return 1.0, 0.0, float(np.mean(y - p))
    w = 1.0 / y
    gamma = 0.0
    if len(p) >= 4 and np.ptp(m) > 0:
        alpha, gamma, _ = np.linalg.lstsq(np.stack([p * w, m * w, w], axis=1), y * w, rcond=None)[0]
        gamma = max(float(gamma), 0.0)
    if gamma == 0.0:
        alpha, _ = np.linalg.lstsq(np.stack([p * w, w], axis=1), y * w, rcond=None)[0]
    alpha = float(np.clip(alpha, 0.5, 2.0))
    return alpha, gamma, float(np.mean(y - alpha * p - gamma * m))


@dataclass(frozen=True)
class WholeGraph:
    """The whole-graph term: ``p50 = alpha * sum(layer terms) + gamma * misaligned elements + beta``."""

    alpha: float
    gamma: float
    beta: float
    block: int  # the SIMD block whose miss costs reorders (chosen by fit error among BLOCKS)


BLOCKS = (8, 16)


def fit_whole_graph(
    layer_sums: Sequence[float], models: Sequence[Sequence[LayerSpec]], measured: Sequence[float]
) -> WholeGraph:
    """Fit the whole-graph term on whole models, at the block (8 or 16) that fits them best (8 on a tie).

    Args:
        layer_sums: each model's sum of layer terms (the tables' predictions, before this term).
        models: each model's layers (for its misaligned elements).
        measured: each model's measured p50.
    """
    best: tuple[float, WholeGraph] | None = None
    y = np.asarray(measured, float)
    for block in BLOCKS:
        m = [float(sum(layer.misaligned_elems(block) for layer in layers)) for layers in models]
        alpha, gamma, beta = whole_graph_term(layer_sums, measured, m)
        fitted = alpha * np.asarray(layer_sums, float) + gamma * np.asarray(m) + beta
        error = float(np.mean(np.abs(fitted - y) / y)) if len(y) else 0.0
        if best is None or error < best[0] - 1e-9:
            best = (error, WholeGraph(alpha, gamma, beta, block))
    assert best is not None
    return best[1]


def error_summary(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """``{within_10pct, mape, n}`` of predictions against measurements (fractions)."""
    if not measured:
        return {"within_10pct": None, "mape": None, "n": 0}
    rel = [abs(p - m) / m for p, m in zip(predicted, measured, strict=True)]
    return {
        "within_10pct": sum(r <= 0.10 for r in rel) / len(rel),
        "mape": float(np.mean(rel)),
        "n": len(rel),
    }


@dataclass(frozen=True)
class LatencyModel:
    """A fitted latency model; :meth:`predict` is what an allocator queries.

    Attributes:
        key: the cache key's fields (:class:`~edgekd.latency.cache.CacheKey` as a dict).
        layers: the unpruned model's layers, in graph order (a student's layers match them by index).
        tables: fitted table per table key; ``layer_tables[i]`` is layer ``i``'s.
        q: the alignment whose miss the regressions model (chosen by leave-one-out error).
        alpha, beta, gamma, block: the whole-graph term (:class:`WholeGraph`).
        error: held-out error on whole pruned models not used in fitting: ``{within_10pct, mape, n}``.
        fit: how it was fitted (samples, seconds, leave-one-out MAPE per ``q``, the whole models timed).
    """

    key: dict[str, Any]
    layers: tuple[LayerSpec, ...]
    tables: dict[str, TableFit]
    layer_tables: tuple[str, ...]
    q: int
    alpha: float
    beta: float
    error: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    gamma: float = 0.0
    block: int = 8

    def layer_ms(self, index: int, cin: int, cout: int) -> float:
        """Predicted ms of layer ``index`` at ``(cin, cout)`` (before the whole-graph term)."""
        layer = self.layers[index].with_widths(cin, cout)
        return self.tables[self.layer_tables[index]].predict(layer, self.q)

    def layer_cost(self, index: int, cin: int, cout: int) -> float:
        """Layer ``index``'s share of the predicted p50 at ``(cin, cout)``: its term scaled by ``alpha``, plus
        the reorders a width off the block costs around it. ``predict`` is the sum of these plus ``beta``."""
        layer = self.layers[index].with_widths(cin, cout)
        term = self.tables[self.layer_tables[index]].predict(layer, self.q)
        return self.alpha * term + self.gamma * layer.misaligned_elems(self.block)

    def predict(self, widths: Sequence[tuple[int, int]]) -> float:
        """Predicted p50 (ms) with layer ``i`` at ``widths[i] = (cin, cout)``: the allocator's query.

        >>> model.predict([(l.cin, l.cout) for l in model.layers])  # doctest: +SKIP
        1.84
        """
        if len(widths) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} (cin, cout) pairs, got {len(widths)}")
        total = sum(self.layer_cost(i, cin, cout) for i, (cin, cout) in enumerate(widths))
        return max(MIN_MS, total + self.beta)

    def predict_layers(self, layers: Sequence[LayerSpec]) -> float:
        """Predicted p50 of a model whose layers are ``layers`` (a student of this architecture)."""
        return self.predict([(layer.cin, layer.cout) for layer in layers])

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "layers": [asdict(layer) for layer in self.layers],
            "tables": {
                k: {"layer": asdict(t.layer), "coef": list(t.coef), "samples": [asdict(s) for s in t.samples]}
                for k, t in self.tables.items()
            },
            "layer_tables": list(self.layer_tables),
            "q": self.q,
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "block": self.block,
            "error": self.error,
            "fit": self.fit,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyModel:
        tables = {
            k: TableFit(k, _layer(t["layer"]), tuple(t["coef"]), tuple(Sample(**s) for s in t["samples"]))
            for k, t in data["tables"].items()
        }
        return cls(
            key=dict(data["key"]),
            layers=tuple(_layer(d) for d in data["layers"]),
            tables=tables,
            layer_tables=tuple(data["layer_tables"]),
            q=int(data["q"]),
            alpha=float(data["alpha"]),
            beta=float(data["beta"]),
            error=dict(data.get("error", {})),
            fit=dict(data.get("fit", {})),
            gamma=float(data.get("gamma", 0.0)),
            block=int(data.get("block", 8)),
        )


def _layer(d: Mapping[str, Any]) -> LayerSpec:
    return LayerSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
