"""Plain, frozen result dataclasses that stages hand to each other and to the report.

Why one module: stages must not reach into each other's internals. Prune returns a :class:`PruneResult`,
export returns :class:`Artifact` records, profile returns :class:`Profile` records, and the report stage only
ever sees these (or their JSON form in ``report.json``). Field names match CONVENTIONS.md's report keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def to_dict(obj: Any) -> Any:
    """JSON-ready form of a result (dataclasses → dicts, tuples → lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class ModelSummary:
    """A model as the report states it: size, cost and PyTorch-measured metrics on the eval set."""

    params: int
    macs: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class LayerChannels:
    """Output channels (or features) of one prunable layer before and after pruning."""

    name: str
    kind: str
    before: int
    after: int


@dataclass(frozen=True)
class PruneResult:
    importance: str
    target: str  # "macs" | "params" | "channels"
    reduction_goal: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    steps: int
    layers: tuple[LayerChannels, ...]
    seconds: float

    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs_after / self.macs_before

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params_after / self.params_before


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    loss_terms: dict[str, float]
    metrics: dict[str, float]
    lr: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a training loop (teacher training or student distillation)."""

    epochs: int
    best_epoch: int
    metrics: dict[str, float]  # eval metrics of the kept (best) weights, measured in PyTorch
    history: tuple[EpochLog, ...]
    seconds: float


@dataclass(frozen=True)
class Parity:
    """PyTorch vs ONNX Runtime on the same real eval inputs."""

    max_abs_diff: float
    agreement: float
    passed: bool
    samples: int


@dataclass(frozen=True)
class LatencyStats:
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    first: float


@dataclass(frozen=True)
class Profile:
    """One measurement of one artifact on one target at one (threads, batch) setting."""

    target: str
    device: dict[str, Any]
    threads: int
    batch: int
    latency_ms: LatencyStats
    load_ms: float
    peak_rss_mb: float
    runs: int


@dataclass(frozen=True)
class Artifact:
    """One shipped file with its provenance, parity, ORT-evaluated metrics and profiles."""

    name: str
    path: str  # relative to the run directory
    format: str  # "onnx" | "pt"
    precision: str  # "fp32" | "fp16" | "int8"
    sha256: str
    size_bytes: int
    parity: Parity | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    profiles: tuple[Profile, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gate:
    name: str
    value: float
    limit: float
    passed: bool
