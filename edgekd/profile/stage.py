"""The profile stage: every exported ONNX file timed on every target of ``recipe.profile``.

The measurement itself runs in a fresh process per setting (:mod:`edgekd.profile.probe`), locally or on a
device over SSH; this stage only decides what is timed and attaches the profiles to the artifacts. After a
latency-targeted prune (``prune.target: latency``) it also closes the loop (issue 14, item 4): the shipped
student's measured p50 on the budget's target and thread count is compared with the budget, and a miss larger
than the latency model's calibrated error is said in one line and recorded (``stages.profile.latency_budget``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.errors import EdgekdError
from edgekd.profile.measure import profile_files
from edgekd.results import Artifact, BudgetCheck, ExportResult, ProfileResult, PruneResult, to_dict
from edgekd.rundir import STUDENT_ONNX

log = logging.getLogger("edgekd")

DEFAULT_ERROR = 0.10  # allowed miss when the latency model has no held-out error (an ONNX-only calibration)


def run(ctx: RunContext, upstream: Upstream) -> ProfileResult:
    """The exported artifacts, each ONNX file with its profiles (``student.pt`` is not timed)."""
    exported = upstream.get(ExportResult).artifacts
    profiles = profile_files({a.name: ctx.run.file(a.path) for a in _timed(exported)}, ctx.recipe.profile)
    artifacts = tuple(dataclasses.replace(a, profiles=tuple(profiles.get(a.name, ()))) for a in exported)
    prune = upstream.find(PruneResult)
    check = check_budget(prune, artifacts)
    if check is not None and not check.met and prune is not None and prune.latency is not None:
        check = dataclasses.replace(check, model_updated=_update_model(ctx, prune.latency.cache_file, check))
    return ProfileResult(artifacts, check)


def _update_model(ctx: RunContext, cache_file: str, check: BudgetCheck) -> bool:
    """Record the missed student's measurement in its latency model (:mod:`edgekd.latency.feedback`).

    The next allocation against that model (``prune.latency.refine``, or the next run) aims lower near this
    student. ``False`` when the file cannot take it (removed, or another architecture's layers).
    """
    from edgekd.latency.feedback import record_measurement
    from edgekd.latency.graph import read_layers
    from edgekd.onnxfile import check_onnx_file

    try:
        layers = read_layers(check_onnx_file(ctx.run.file(STUDENT_ONNX)))
        record_measurement(cache_file, layers, check.measured_ms)
    except (OSError, ValueError, EdgekdError) as exc:
        log.info("profile: the latency model was not updated (%s)", exc)
        return False
    return True


def check_budget(prune: PruneResult | None, artifacts: tuple[Artifact, ...]) -> BudgetCheck | None:
    """The student's measured p50 against its latency budget, or ``None`` (no budget, or not timed there)."""
    if prune is None or prune.latency is None:
        return None
    budget = prune.latency
    student = next((a for a in artifacts if a.name == STUDENT_ONNX or a.path == STUDENT_ONNX), None)
    timed = [
        p
        for p in (student.profiles if student is not None else ())
        if p.target == budget.target and p.threads == budget.threads
    ]
    if not timed:
        log.info(
            "profile: the latency budget's setting (%s, %d thread(s)) was not profiled; add it to "
            "profile.targets and profile.threads to check the budget",
            budget.target,
            budget.threads,
        )
        return None
    measured = timed[0].latency_ms.p50
    mape = budget.error.get("mape")
    allowed = float(mape) if mape is not None else DEFAULT_ERROR
    check = BudgetCheck(
        target=budget.target,
        threads=budget.threads,
        budget_ms=budget.budget_ms,
        predicted_ms=budget.predicted_ms,
        measured_ms=measured,
        allowed_error=allowed,
        met=measured <= budget.budget_ms * (1.0 + allowed),
    )
    if not check.met:
        log.warning(
            "profile: %s runs in %.3f ms on %s (%d thread(s)), %.0f%% over its %.3f ms latency budget, more "
            "than the latency model's %.0f%% error; the model is updated with this measurement (re-prune with "
            "prune.latency.refine: true, or a lower prune.latency.p50_ms)",
            STUDENT_ONNX,
            measured,
            budget.target,
            budget.threads,
            100 * (measured / budget.budget_ms - 1.0),
            budget.budget_ms,
            100 * allowed,
        )
    return check


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    """What is timed (a re-exported file is profiled again) and how."""
    timed = _timed(upstream.get(ExportResult).artifacts)
    return {"artifacts": {a.name: a.sha256 for a in timed}, "profile": section(ctx.recipe, "profile")}


def info(ctx: RunContext, result: ProfileResult) -> dict[str, Any]:
    """``stages.profile.latency_budget``: the budget check, when there was one."""
    return {"latency_budget": to_dict(result.budget)} if result.budget is not None else {}


def _timed(artifacts: tuple[Artifact, ...]) -> list[Artifact]:
    return [a for a in artifacts if a.format == "onnx"]


STAGE = Stage(name="profile", result=ProfileResult, run=run, inputs=inputs, info=info)
