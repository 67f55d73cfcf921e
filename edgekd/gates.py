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

from typing import TYPE_CHECKING

from edgekd.errors import EdgekdError, GateError
from edgekd.results import Artifact, Gate

if TYPE_CHECKING:
    from edgekd.recipe.gates import GatesConfig
    from edgekd.tasks.base import Task

TEACHER_ARTIFACT = "teacher.onnx"
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


def raise_if_failed(gates: list[Gate]) -> None:
    """GateError (exit 3) naming every failed gate, its value and limit; nothing when all passed."""
    failed = [g for g in gates if not g.passed]
    if failed:
        detail = "; ".join(f"{g.name} = {g.value:.4g} (limit {g.limit:.4g})" for g in failed)
        raise GateError(
            f"{len(failed)} of {len(gates)} deploy gate(s) failed: {detail}; the run directory and report "
            "were written, see report.md"
        )


def _latency(cfg: GatesConfig, art: Artifact) -> list[Gate]:
    gate = cfg.max_latency_ms
    assert gate is not None  # checked by the caller
    limits = {q: getattr(gate, q) for q in ("p50", "p90", "p99") if getattr(gate, q) is not None}
    profiles = [
        p
        for p in art.profiles
        if p.target == gate.target
        and (gate.threads is None or p.device.get("threads_requested", p.threads) == gate.threads)
    ]
    if not profiles:
        threads = "" if gate.threads is None else f" at threads {gate.threads}"
        raise EdgekdError(
            f"gates.max_latency_ms: {art.name} has no profile on target '{gate.target}'{threads}; add the "
            "target to profile.targets (and the thread count to profile.threads)"
        )
    return [
        Gate(
            f"max_latency_ms:{art.name}@{p.target}:threads={p.threads}:batch={p.batch}:{q}",
            getattr(p.latency_ms, q),
            limit,
            getattr(p.latency_ms, q) <= limit,
        )
        for p in profiles
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
    reference = {
        (p.target, p.threads, p.batch): p.latency_ms.p50 for p in (teacher.profiles if teacher else ())
    }
    gates = []
    for p in art.profiles:
        base = reference.get((p.target, p.threads, p.batch))
        if base is None or p.latency_ms.p50 <= 0:
            continue
        speedup = base / p.latency_ms.p50
        gates.append(
            Gate(
                f"min_speedup:{art.name}@{p.target}:threads={p.threads}:batch={p.batch}",
                speedup,
                limit,
                speedup >= limit,
            )
        )
    if not gates:
        raise EdgekdError(
            f"gates.min_speedup: no setting where both teacher.onnx and {art.name} were profiled; check "
            "profile.targets"
        )
    return gates
