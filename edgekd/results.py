"""Plain, frozen result dataclasses that stages hand to each other and to the report.

Why one module: stages must not reach into each other's internals. Prune returns a :class:`PruneResult`,
export returns :class:`Artifact` records, profile returns :class:`Profile` records, and the report stage only
ever sees these (or their JSON form in ``report.json``). Field names match docs/run-directory.md's report keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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
    """A model as the report states it: size, cost and PyTorch-measured metrics.

    ``metrics`` are on the eval (test) split, measured once; ``val_metrics`` on the validation split, the one
    training selected on (empty without ``data.val``).
    """

    params: int
    macs: int
    metrics: dict[str, float]
    val_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerChannels:
    """Output channels (or features) of one prunable layer before and after pruning."""

    name: str
    kind: str
    before: int
    after: int


@dataclass(frozen=True)
class LatencyBudget:
    """What a latency-targeted prune (``prune.target: latency``) aimed at and what the latency model predicts.

    ``budget_ms`` is the p50 the student was pruned to (``(1 - reduction) * teacher_ms``, or ``p50_ms``);
    ``teacher_ms`` the teacher's p50 it is a fraction of (measured during calibration, else predicted);
    ``predicted_ms`` / ``teacher_predicted_ms`` are the latency model's predictions; ``error`` its held-out
    calibration error ``{within_10pct, mape, n}``; ``cache_key`` / ``cache_file`` which model it was.
    """

    target: str
    threads: int
    budget_ms: float
    predicted_ms: float
    teacher_ms: float
    teacher_predicted_ms: float
    error: dict[str, Any]
    cache_key: str
    cache_file: str


@dataclass(frozen=True)
class PruneResult:
    importance: str
    target: str  # "macs" | "params" | "channels" | "latency"
    reduction_goal: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    steps: int
    layers: tuple[LayerChannels, ...]
    seconds: float
    round_to: int | None = None  # the rounding actually used (prune may lower the recipe's to meet the goal)
    allocation: str = "uniform"  # "uniform" (one channel ratio, searched) | "cost" (edgekd.prune.allocate)
    importance_kept: float | None = (
        None  # cost allocation: share of the groups' importance the kept channels hold
    )
    latency: LatencyBudget | None = None  # prune.target: latency

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

    @classmethod
    def of_file(cls, path: Path, precision: str = "fp32", name: str | None = None, **fields: Any) -> Artifact:
        """The record of a file just written: format from its suffix, sha256 and size read from disk."""
        from edgekd.io import sha256_file

        path = Path(path)
        return cls(
            name=name or path.name,
            path=path.name,  # shipped files sit at the run directory's top level
            format=path.suffix.lstrip("."),
            precision=precision,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            **fields,
        )

    def speedups_over(self, reference: Artifact | None) -> list[tuple[Profile, float, float]]:
        """``(profile, reference p50, speed-up)`` for each of this file's profiles that ``reference`` was
        also profiled at (same target, threads and batch): the one pairing the report and the gates use."""
        base = {
            (p.target, p.threads, p.batch): p.latency_ms.p50
            for p in (reference.profiles if reference else ())
        }
        pairs = []
        for p in self.profiles:
            ref = base.get((p.target, p.threads, p.batch))
            if ref is not None and p.latency_ms.p50 > 0:
                pairs.append((p, ref, ref / p.latency_ms.p50))
        return pairs


@dataclass(frozen=True)
class Gate:
    name: str
    value: float
    limit: float
    passed: bool


# ── Stage results: what each stage's ``run(ctx, upstream)`` returns (see :mod:`edgekd.context`) ──


@dataclass(frozen=True)
class TeacherResult:
    """The teacher stage: the unpruned model as the report states it (PyTorch metrics on the eval set)."""

    summary: ModelSummary


@dataclass(frozen=True)
class DataFreeRecord:
    """``stages.distill.data_free``: distillation read no training image; what synthesis made and cost."""

    method: str
    synthetic_samples: int
    seconds: float


@dataclass(frozen=True)
class SparsifyResult:
    """The sparsify stage: group-sparse training of the teacher's copy (``prune.sparsity``).

    ``norms_before``/``norms_after``: the L2 norm of every prunable channel's coupled group, before and after:
    what the sparse phase changed, and what ``group_l2`` importance then ranks channels by.
    ``penalised_share``: with ``prune.sparsity.target: pruned``, the share of channel groups the penalty worked
    on (those the planned cut removes); ``None`` with ``target: all`` (every group).
    """

    train: TrainResult
    reg: float
    norms_before: tuple[float, ...]
    norms_after: tuple[float, ...]
    penalised_share: float | None = None


@dataclass(frozen=True)
class DistillResult:
    """The distill stage: the training run and the distilled student as the report states it."""

    train: TrainResult
    student: ModelSummary
    data_free: DataFreeRecord | None = None  # set when distill.data_free replaced the training split


@dataclass(frozen=True)
class ExportResult:
    """The export stage: every shipped file (teacher and student ONNX, INT8/FP16 variants, ``student.pt``)."""

    artifacts: tuple[Artifact, ...]


@dataclass(frozen=True)
class BudgetCheck:
    """The shipped student's measured p50 against the latency budget it was pruned to (issue 14, item 4).

    ``met`` when ``measured_ms <= budget_ms * (1 + allowed_error)``, ``allowed_error`` being the latency model's
    calibrated MAPE: a miss within it is the model's known error, a miss beyond it is news. After a miss the
    measurement is recorded in the latency model (``model_updated``, :mod:`edgekd.latency.feedback`).
    """

    target: str
    threads: int
    budget_ms: float
    predicted_ms: float
    measured_ms: float
    allowed_error: float
    met: bool
    model_updated: bool = False


@dataclass(frozen=True)
class ProfileResult:
    """The profile stage: the exported artifacts, each with its measured profiles."""

    artifacts: tuple[Artifact, ...]
    budget: BudgetCheck | None = (
        None  # prune.target: latency, when the budget's target and threads were timed
    )


@dataclass(frozen=True)
class CalibrateResult:
    """The calibrate stage (``prune.target: latency``): the target's latency model the prune stage uses.

    ``cached``: a valid model was found in the cache and nothing was timed (``samples`` 0).
    """

    target: str
    threads: int
    samples: int
    error: dict[str, Any]
    cache_file: str
    cache_key: str
    cached: bool
    seconds: float


@dataclass(frozen=True)
class ReportResult:
    """The report stage: the report as written to ``report.json`` and the deploy gates it records."""

    report: dict[str, Any]
    gates: tuple[Gate, ...]


def from_dict(cls: type[T], data: Any) -> T:
    """Rebuild a result dataclass from its :func:`to_dict` form (e.g. ``state/*.json`` on ``--resume``).

    Why generic: the field type hints already say how to rebuild nested results (``tuple[EpochLog, ...]``,
    ``Parity | None``), so every result round-trips without a hand-written reader that could drift from the
    dataclass. ``from_dict(cls, to_dict(obj)) == obj`` for every result here.

    Raises:
        ValueError: ``data`` does not fit ``cls`` (a missing or unknown field, a list where a result belongs);
            state files are written by edgekd, so a mismatch means a corrupt or foreign file.

    >>> from_dict(Gate, {"name": "parity", "value": 1e-5, "limit": 1e-3, "passed": True}).passed
    True
    """
    return _rebuild(cls, data, cls.__name__)


def _rebuild(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _rebuild(inner, value, where)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object for {hint.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(hint)
        names = {f.name for f in dataclasses.fields(hint)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} for {hint.__name__}")
        kwargs = {k: _rebuild(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return hint(**kwargs)
        except TypeError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(_rebuild(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON writes 3.0 as 3.0, but a hand-edited file may say 3
    return value
