"""Deploy gates: the recipe's ``gates:`` section judged against the finished run's artifacts.

Why gates are evaluated after everything is written: a CI job that gates a release needs the report that
explains the failure, so ``compress`` writes all artifacts and reports first and only then exits with code 3
(:class:`~edgekd.errors.GateError`) when a gate failed. Each gate becomes one ``report.json`` ``gates[]``
entry ``{name, value, limit, passed}``; a gate over several profiles (thread counts, targets) yields one
entry per profile, so the report says exactly which setting missed.

Recipe::

    gates:
      artifact: student.int8.onnx          # the file being shipped (default student.onnx)
      max_latency_ms: {target: pi5, p90: 20}  # every profiled thread count, unless threads: N is given
      max_metric_drop: {accuracy: 0.01}    # teacher.onnx minus the artifact, both run in ONNX Runtime
      max_size_mb: 2                       # MiB (2^20 bytes)
      min_speedup: 2.0                     # teacher p50 / artifact p50, on every profiled target/threads
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from edgekd.errors import EdgekdError, GateError, InputError
from edgekd.results import Artifact, Gate, Profile
from edgekd.rundir import TEACHER_ONNX

if TYPE_CHECKING:
    from edgekd.recipe.gates import GatesConfig, LatencyGate
    from edgekd.recipe.schema import ExportConfig
    from edgekd.tasks.base import Task

TEACHER_ARTIFACT = TEACHER_ONNX
PARITY_PREFIXES = ("parity:", "parity_agreement:")  # names of parity_gates() entries (and nothing else's)
INT8_MIN_AGREEMENT = 0.97  # edgekd.export.quantize's default (not imported: this module stays torch-free)
MIB = 1024 * 1024


def evaluate_gates(cfg: GatesConfig, artifacts: list[Artifact], task: Task) -> list[Gate]:
    """One :class:`Gate` per configured check and profile; empty when the recipe sets no gates.

    Raises:
        EdgekdError: the gated artifact, a metric or a profile the gate needs was not produced (the recipe
            loader rejects most such recipes up front; this catches the rest, e.g. a stage that was skipped).
    """
    if not cfg.configured:
        return []
    by_name = {a.name: a for a in artifacts}
    art = by_name.get(cfg.artifact)
    if art is None:
        raise EdgekdError(
            f"gates.artifact: {cfg.artifact} was not produced (produced: {', '.join(by_name)}); enable it "
            "(export.int8 / export.fp16) or gate another file"
        )
    teacher = by_name.get(TEACHER_ARTIFACT)
    gates: list[Gate] = []
    if cfg.max_latency_ms is not None:
        gates += _latency(cfg, art)
    for metric, limit in cfg.max_metric_drop.items():
        gates.append(_metric_drop(art, teacher, metric, limit, task.higher_is_better))
    if cfg.max_size_mb is not None:
        size = art.size_bytes / MIB
        gates.append(
            Gate(f"max_size_mb:{art.name}", round(size, 4), cfg.max_size_mb, size <= cfg.max_size_mb)
        )
    if cfg.min_speedup is not None:
        gates += _speedup(art, teacher, cfg.min_speedup)
    return gates


def parity_gates(artifacts: list[Artifact], cfg: ExportConfig) -> list[Gate]:
    """One parity gate per ONNX artifact (all passed: a failed parity stops the export stage).

    Recorded anyway so ``gates[]`` lists every check the shipped files went through, as entries of kind
    ``parity`` that the reports show apart from the recipe's deploy gates. FP32 and FP16 files are
    gated on ``max |PyTorch - ORT|`` (``parity:<file>``); INT8 files on prediction agreement
    (``parity_agreement:<file>``), because quantization moves logits by an amount no absolute limit fits.
    """
    gates = []
    for a in artifacts:
        if a.parity is None:
            continue
        if a.precision == "int8":
            limit = cfg.int8.min_agreement if cfg.int8 else INT8_MIN_AGREEMENT
            gates.append(Gate(f"parity_agreement:{a.name}", a.parity.agreement, limit, a.parity.passed))
        else:
            atol = cfg.fp16.atol if a.precision == "fp16" and cfg.fp16 else cfg.parity_atol
            gates.append(Gate(f"parity:{a.name}", a.parity.max_abs_diff, atol, a.parity.passed))
    return gates


def raise_if_failed(gates: list[Gate], report: str | None = None) -> None:
    """GateError (exit 3) naming every failed gate, its value and limit; nothing when all passed.

    Args:
        gates: the evaluated gates.
        report: the report that explains the failure, when one was written (``compress``: ``report.md``);
            ``None`` (``edgekd profile --max-ms``) points nowhere, since a pointer to a file that does not
            exist sends the user looking for it.
    """
    failed = [g for g in gates if not g.passed]
    if failed:
        detail = "; ".join(f"{g.name} = {g.value:.4g} (limit {g.limit:.4g})" for g in failed)
        where = f"; the run directory and report were written, see {report}" if report else ""
        raise GateError(f"{len(failed)} of {len(gates)} deploy gate(s) failed: {detail}{where}")


def _latency(cfg: GatesConfig, art: Artifact) -> list[Gate]:
    assert cfg.max_latency_ms is not None  # checked by the caller
    return latency_gates(art.name, art.profiles, cfg.max_latency_ms)


def parse_latency_limits(specs: Iterable[str], targets: Iterable[str]) -> list[LatencyGate]:
    """``("p90=20", "p99=35")`` → one :class:`LatencyGate` per target (``edgekd profile --max-ms``).

    Raises:
        InputError: a spec that is not ``p50|p90|p99=<milliseconds > 0>``.
    """
    from edgekd.recipe.gates import LatencyGate

    limits: dict[str, float] = {}
    for spec in specs:
        quantile, _, value = spec.partition("=")
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if quantile.strip() not in ("p50", "p90", "p99") or not ms > 0:
            raise InputError(f"--max-ms {spec!r}: expected p50|p90|p99=MILLISECONDS, e.g. p90=20")
        limits[quantile.strip()] = ms
    return [LatencyGate(target=t, **limits) for t in targets] if limits else []


def latency_gates(name: str, profiles: Iterable[Profile], gate: LatencyGate) -> list[Gate]:
    """One gate per matching profile and limited percentile (``edgekd profile --max-p90`` uses it too).

    Raises:
        EdgekdError: no profile of ``name`` on the gate's target (and thread count).
    """
    limits = {q: getattr(gate, q) for q in ("p50", "p90", "p99") if getattr(gate, q) is not None}
    matching = [
        p
        for p in profiles
        if p.target == gate.target
        and (gate.threads is None or p.device.get("threads_requested", p.threads) == gate.threads)
    ]
    if not matching:
        threads = "" if gate.threads is None else f" at threads {gate.threads}"
        raise EdgekdError(
            f"gates.max_latency_ms: {name} has no profile on target '{gate.target}'{threads}; add the "
            "target to profile.targets (and the thread count to profile.threads)"
        )
    return [
        Gate(
            f"max_latency_ms:{name}@{p.target}:threads={p.threads}:batch={p.batch}:{q}",
            getattr(p.latency_ms, q),
            limit,
            getattr(p.latency_ms, q) <= limit,
        )
        for p in matching
        for q, limit in limits.items()
    ]


def _metric_drop(
    art: Artifact, teacher: Artifact | None, metric: str, limit: float, higher_is_better: bool
) -> Gate:
    if teacher is None or metric not in teacher.metrics or metric not in art.metrics:
        measured = ", ".join(art.metrics) or "none"
        raise EdgekdError(
            f"gates.max_metric_drop: '{metric}' is not measured in ONNX Runtime for both teacher.onnx and "
            f"{art.name} (measured: {measured})"
        )
    drop = teacher.metrics[metric] - art.metrics[metric]
    if not higher_is_better:  # e.g. mae: a larger error is the drop
        drop = -drop
    return Gate(f"max_metric_drop:{art.name}:{metric}", drop, limit, drop <= limit)


def _speedup(art: Artifact, teacher: Artifact | None, limit: float) -> list[Gate]:
    gates = [
        Gate(
            f"min_speedup:{art.name}@{p.target}:threads={p.threads}:batch={p.batch}",
            speedup,
            limit,
            speedup >= limit,
        )
        for p, _, speedup in art.speedups_over(teacher)
    ]
    if not gates:
        raise EdgekdError(
            f"gates.min_speedup: no setting where both teacher.onnx and {art.name} were profiled; check "
            "profile.targets"
        )
    return gates
